"""The satellite gallery of a world: one tile centred on each place (`sites`), or a raster-style grid.

A grid gallery cuts north-up tiles on a regular grid (`grid_stride_m` apart, each `tile_metres` wide, so
they overlap when the stride is smaller) over the area the places and their cameras occupy, plus half a
tile. The grid is anchored at the world centre: tile centres lie at whole multiples of the stride. Ids
run `g00001, g00002, ...` row by row from the north-west corner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gleam.corpus.schema import Modality
from gleam.corpus.world.config import WorldConfig
from gleam.corpus.world.shots import Shot
from gleam.corpus.world.sites import Site, to_latlon
from gleam.corpus.world.streams import GRID, MODALITY_CODES, view_key


@dataclass(frozen=True)
class Tile:
    """A satellite tile: its id (file stem and location id), centre, and the key of its random stream."""

    tile_id: str
    x: float
    y: float
    lat: float
    lon: float
    stream: tuple[int, ...]


@dataclass(frozen=True)
class Grid:
    """A regular grid of tile centres: column 0 the westmost, row 0 the northmost."""

    west: float  # x of column 0
    north: float  # y of row 0
    stride: float
    cols: int
    rows: int

    def nearest(self, x: float, y: float) -> int:
        """Index (row-major) of the tile whose centre is nearest (x, y)."""
        col = min(max(round((x - self.west) / self.stride), 0), self.cols - 1)
        row = min(max(round((self.north - y) / self.stride), 0), self.rows - 1)
        return row * self.cols + col

    def centre(self, index: int) -> tuple[float, float]:
        row, col = divmod(index, self.cols)
        return self.west + col * self.stride, self.north - row * self.stride


def grid_id(index: int) -> str:
    return f"g{index + 1:05d}"


def site_tile(config: WorldConfig, site: Site) -> Tile:
    """A place's own tile; its stream is the place's satellite stream of the first worlds."""
    key = view_key(config.seed, site.index, MODALITY_CODES[Modality.SATELLITE])
    return Tile(site.location_id, site.x, site.y, site.lat, site.lon, key)


def make_grid(config: WorldConfig, points: np.ndarray) -> Grid:
    """The grid covering `points` (x, y metres) plus half a tile, anchored at multiples of the stride."""
    stride, margin = config.stride_m, config.tile_metres / 2
    lo, hi = points.min(axis=0) - margin, points.max(axis=0) + margin
    west, east = math.floor(lo[0] / stride), math.ceil(hi[0] / stride)
    south, north = math.floor(lo[1] / stride), math.ceil(hi[1] / stride)
    return Grid(west * stride, north * stride, stride, east - west + 1, north - south + 1)


def grid_tiles(config: WorldConfig, grid: Grid) -> list[Tile]:
    tiles = []
    for index in range(grid.cols * grid.rows):
        x, y = grid.centre(index)
        lat, lon = to_latlon(x, y, config.origin_lat, config.origin_lon)
        tiles.append(Tile(grid_id(index), x, y, lat, lon, (config.seed, GRID, index)))
    return tiles


def build_gallery(config: WorldConfig, sites: list[Site], shots: list[Shot]) -> tuple[list[Tile], list[Tile]]:
    """(every tile of the gallery, the positive tile of each shot in order).

    sites: a shot's positive is its place's tile. grid: the grid tile whose centre is nearest the camera
    (inside that tile, since the stride is at most a tile); an outlier is listed with its set's tile, the
    one nearest its place."""
    if config.gallery == "sites":
        tiles = [site_tile(config, s) for s in sites]
        by_place = {s.index: t for s, t in zip(sites, tiles, strict=True)}
        return tiles, [by_place[shot.place.index] for shot in shots]
    points = np.array([(s.x, s.y) for s in sites] + [(shot.x, shot.y) for shot in shots])
    grid = make_grid(config, points)
    tiles = grid_tiles(config, grid)
    positives = [
        tiles[grid.nearest(shot.place.x, shot.place.y) if shot.outlier else grid.nearest(shot.x, shot.y)]
        for shot in shots
    ]
    return tiles, positives
