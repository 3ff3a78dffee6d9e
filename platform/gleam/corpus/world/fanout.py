"""Render the tiles and photos of a world and write their images: in chunks on Ray when it runs, else here.

A chunk rebuilds the map from the config (it is a pure function of the seed), so a Ray task ships a
config and a few tiles and photos, never a raster; the bytes are the same either way. Work comes in
units (a place's tile and photos, or one grid tile) so that views sharing a crop are rendered together.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gleam import storage
from gleam.corpus.schema import Modality
from gleam.corpus.world.camera import encode
from gleam.corpus.world.city import CityMap
from gleam.corpus.world.config import WorldConfig
from gleam.corpus.world.gallery import Tile
from gleam.corpus.world.layers import Layers
from gleam.corpus.world.layout import extension, relative_uri
from gleam.corpus.world.shots import Shot
from gleam.corpus.world.sites import world_side
from gleam.corpus.world.views import crop_at, render_shot, render_tile


@dataclass
class Unit:
    """Tiles and photos rendered together (a place: its tile and its photos, which share its crop)."""

    tiles: list[Tile] = field(default_factory=list)
    shots: list[Shot] = field(default_factory=list)


def _write(config: WorldConfig, root: str, modality: Modality, name: str, img: np.ndarray) -> str:
    fmt = extension(modality)
    uri = relative_uri(modality, name)
    storage.write_bytes(
        storage.join(root, uri), encode(img, "png" if fmt == "png" else "jpeg", config.jpeg_quality)
    )
    return uri


def render_chunk(
    config: WorldConfig, units: list[Unit], clearings: np.ndarray, root: str
) -> list[dict[str, Any]]:
    """Render and write the files of some units; returns the pose of each photo, keyed by `query_uri`."""
    city = CityMap(config.seed, world_side(config))
    city.keep_clear(clearings)
    last: tuple[tuple[float, float], Layers] | None = None

    def crop(x: float, y: float) -> Layers:
        nonlocal last
        if last is None or last[0] != (x, y):
            last = ((x, y), crop_at(config, city, x, y))
        return last[1]

    records = []
    for unit in units:
        for tile in unit.tiles:
            _write(
                config,
                root,
                Modality.SATELLITE,
                tile.tile_id,
                render_tile(config, crop(tile.x, tile.y), tile),
            )
        for shot in unit.shots:
            img, pose = render_shot(config, crop(shot.x, shot.y), shot)
            records.append({"query_uri": _write(config, root, shot.modality, shot.name, img), **pose})
    return records


def render_all(
    config: WorldConfig, units: list[Unit], clearings: np.ndarray, root: str
) -> list[dict[str, Any]]:
    """One Ray task per chunk of units when Ray is already running; otherwise in this process."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return render_chunk(config, units, clearings, root)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    size = min(64, max(4, math.ceil(len(units) / (4 * cpus))))
    task = ray.remote(num_cpus=1)(render_chunk)
    futures = [task.remote(config, units[i : i + size], clearings, root) for i in range(0, len(units), size)]
    return [record for chunk in ray.get(futures) for record in chunk]
