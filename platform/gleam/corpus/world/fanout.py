"""Render the places of a world and write their images: in chunks on Ray when it is running, else here.

A chunk rebuilds the map from the config (it is a pure function of the seed), so a Ray task ships a
config and a few places, never a raster; the bytes are the same either way.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from gleam import storage
from gleam.corpus.world.camera import encode
from gleam.corpus.world.city import CityMap
from gleam.corpus.world.config import WorldConfig
from gleam.corpus.world.layout import extension, relative_uri
from gleam.corpus.world.sites import Site, world_side
from gleam.corpus.world.views import render_site


def render_chunk(
    config: WorldConfig, sites: list[Site], clearings: np.ndarray, root: str
) -> list[dict[str, Any]]:
    """Render and write the files of some places; returns their pose records."""
    city = CityMap(config.seed, world_side(config))
    city.keep_clear(clearings)
    records = []
    for site in sites:
        modalities = list(config.modalities) if site.queries else []
        images, pose = render_site(config, city, site, modalities)
        for modality, img in images.items():
            fmt = extension(modality)
            data = encode(img, "png" if fmt == "png" else "jpeg", config.jpeg_quality)
            storage.write_bytes(storage.join(root, relative_uri(modality, site.location_id)), data)
        records.append({"location_id": site.location_id, **{k: round(v, 4) for k, v in pose.items()}})
    return records


def render_all(config: WorldConfig, sites: list[Site], root: str) -> list[dict[str, Any]]:
    """One Ray task per chunk of places when Ray is already running; otherwise in this process."""
    clearings = np.array([(s.x, s.y) for s in sites])
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return render_chunk(config, sites, clearings, root)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    size = min(64, max(4, math.ceil(len(sites) / (4 * cpus))))
    task = ray.remote(num_cpus=1)(render_chunk)
    futures = [task.remote(config, sites[i : i + size], clearings, root) for i in range(0, len(sites), size)]
    return [record for chunk in ray.get(futures) for record in chunk]
