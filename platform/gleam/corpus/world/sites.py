"""The places of a world: where the mapping car stopped (on roads, spread apart) and where that is on Earth.

The world's side follows from how many places it holds, so a config fixes both the map and its places.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gleam.corpus.world.city import CityMap
from gleam.corpus.world.config import WorldConfig
from gleam.corpus.world.layers import MAJOR, ROAD

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class Site:
    """A place with a satellite tile; `queries` False for a distractor tile."""

    index: int
    location_id: str
    x: float
    y: float
    lat: float
    lon: float
    queries: bool


def location_id(index: int) -> str:
    return f"w{index + 1:05d}"


def to_latlon(x: float, y: float, origin_lat: float, origin_lon: float) -> tuple[float, float]:
    """Metres east/north of the origin -> WGS84 degrees (equirectangular; fine over a few km)."""
    lat = origin_lat + math.degrees(y / EARTH_RADIUS_M)
    lon = origin_lon + math.degrees(x / (EARTH_RADIUS_M * math.cos(math.radians(origin_lat))))
    return lat, lon


def min_spacing(config: WorldConfig) -> float:
    """Tiles of two places overlap by at most a quarter of their side."""
    return 0.75 * config.tile_metres


def world_side(config: WorldConfig) -> float:
    """Side of the square world: room for every place at the minimum spacing, plus a border."""
    total = config.locations + config.distractors
    return max(4.0, math.sqrt(total * 2.5)) * min_spacing(config) + 2 * config.tile_metres


def sample_sites(config: WorldConfig, city: CityMap) -> list[Site]:
    """Points on roads (where a mapping car drives), spread with a minimum spacing, in seed order."""
    total = config.locations + config.distractors
    spacing = min_spacing(config)
    half = city.side / 2 - config.tile_metres
    rng = np.random.default_rng([config.seed, 0x517E])
    cells: dict[tuple[int, int], list[tuple[float, float]]] = {}
    points: list[tuple[float, float]] = []
    for _ in range(500):
        cand = rng.uniform(-half, half, size=(2048, 2))
        street = np.isin(city.labels(cand[:, 0], cand[:, 1]), (ROAD, MAJOR))
        for x, y in cand[street]:
            cell = (int(x // spacing), int(y // spacing))
            near = (
                p
                for dx in (-1, 0, 1)
                for dy in (-1, 0, 1)
                for p in cells.get((cell[0] + dx, cell[1] + dy), ())
            )
            if any((px - x) ** 2 + (py - y) ** 2 < spacing * spacing for px, py in near):
                continue
            cells.setdefault(cell, []).append((float(x), float(y)))
            points.append((float(x), float(y)))
            if len(points) == total:
                return [_site(config, i, x, y) for i, (x, y) in enumerate(points)]
    raise RuntimeError(
        f"could not place {total} locations in a {city.side:.0f} m world (placed {len(points)})"
    )


def _site(config: WorldConfig, index: int, x: float, y: float) -> Site:
    lat, lon = to_latlon(x, y, config.origin_lat, config.origin_lon)
    return Site(index, location_id(index), x, y, lat, lon, index < config.locations)


def build_city(config: WorldConfig, sites: list[Site] | None = None) -> CityMap:
    """The world's map; with its sites known, their camera positions are kept clear of trees."""
    city = CityMap(config.seed, world_side(config))
    if sites is not None:
        city.keep_clear(np.array([(s.x, s.y) for s in sites]))
    return city
