"""Every view of one place, rendered from one map crop with its own random streams.

Each (world, place, view) has its own generator, so a place renders to the same bytes alone or in a
run of thousands, in any order and in any process.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from gleam.corpus.schema import Modality
from gleam.corpus.world.camera import DRONE_CAMERA, PHOTO_CAMERA, STREET_CAMERA, develop
from gleam.corpus.world.city import CityMap
from gleam.corpus.world.config import WorldConfig
from gleam.corpus.world.layers import Layers
from gleam.corpus.world.render_drone import render_drone
from gleam.corpus.world.render_maps import render_satellite, render_streetmap
from gleam.corpus.world.render_street import render_ground, render_panorama
from gleam.corpus.world.shading import random_light, satellite_light
from gleam.corpus.world.sites import Site

MODALITY_CODES = {m: i for i, m in enumerate(Modality)}


def _rng(config: WorldConfig, site: Site, stream: int) -> np.random.Generator:
    """One generator per (world, place, stream): results do not depend on order or parallelism."""
    return np.random.default_rng([config.seed, site.index, stream])


def _satellite_sun(seed: int) -> tuple[float, float]:
    rng = np.random.default_rng([seed, 0x5A7])
    return float(rng.uniform(120, 220)), float(rng.uniform(45, 65))


def site_layers(config: WorldConfig, city: CityMap, site: Site) -> Layers:
    """The map crop every view of the place is rendered from: 1.5 tiles wide, centred on the place."""
    res = config.tile_metres / config.tile_size
    return city.crop(site.x, site.y, config.tile_size + 2 * (config.tile_size // 4), res)


def render_site(
    config: WorldConfig, city: CityMap, site: Site, modalities: Iterable[Modality]
) -> tuple[dict[Modality, np.ndarray], dict[str, float]]:
    """Every requested view of one place as uint8 arrays, plus the random pose of each view."""
    layers = site_layers(config, city, site)
    images: dict[Modality, np.ndarray] = {}
    pose: dict[str, float] = {"x_m": site.x, "y_m": site.y}
    q, x, y = config.query_size, site.x, site.y
    for modality in [Modality.SATELLITE, *modalities]:
        rng = _rng(config, site, MODALITY_CODES[modality])
        if modality is Modality.SATELLITE:
            light = satellite_light(rng, *_satellite_sun(config.seed))
            images[modality] = render_satellite(layers, config.tile_size, light, rng)
        elif modality is Modality.DRONE:
            light = random_light(rng)
            img, drone_pose = render_drone(layers, x, y, q, config.tile_metres, light, rng)
            images[modality] = develop(img, rng, DRONE_CAMERA)
            pose.update(drone_pose)
        elif modality is Modality.STREETMAP:
            images[modality] = render_streetmap(layers, x, y, q, config.tile_metres, rng)
        else:
            # Panorama and ground photo are one capture: same light and clouds, different cameras.
            capture = _rng(config, site, 100)
            light, sky_seed = random_light(capture), int(capture.integers(1 << 31))
            if modality is Modality.PANORAMA:
                img = render_panorama(layers, x, y, q, light, sky_seed)
                images[modality] = develop(img, rng, STREET_CAMERA)
            else:
                heading = float(rng.uniform(0, 360))
                img = render_ground(layers, x, y, q, heading, light, sky_seed)
                images[modality] = develop(img, rng, PHOTO_CAMERA)
                pose["ground_heading_deg"] = heading
    return images, pose
