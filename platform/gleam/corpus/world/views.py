"""Every view of one place, rendered from a map crop with its own random streams.

Each (world, place, view, photo) has its own generator, so a place renders to the same bytes alone or in
a run of thousands, in any order and in any process. A satellite tile is rendered from the crop centred
on the tile, a query photo from the crop centred on its camera: a photo taken off a tile's centre looks
like one taken at a place standing there.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from gleam.corpus.schema import Modality
from gleam.corpus.world.camera import DRONE_CAMERA, PHOTO_CAMERA, STREET_CAMERA, develop
from gleam.corpus.world.city import CityMap
from gleam.corpus.world.config import WorldConfig
from gleam.corpus.world.gallery import Tile, site_tile
from gleam.corpus.world.layers import Layers
from gleam.corpus.world.render_drone import render_drone
from gleam.corpus.world.render_maps import render_satellite, render_streetmap
from gleam.corpus.world.render_street import render_ground, render_panorama
from gleam.corpus.world.shading import random_light, satellite_light
from gleam.corpus.world.shots import Shot, photo_name, set_id
from gleam.corpus.world.sites import Site
from gleam.corpus.world.streams import CAPTURE, MODALITY_CODES, generator


def _satellite_sun(seed: int) -> tuple[float, float]:
    rng = np.random.default_rng([seed, 0x5A7])
    return float(rng.uniform(120, 220)), float(rng.uniform(45, 65))


def crop_at(config: WorldConfig, city: CityMap, x: float, y: float) -> Layers:
    """The map crop a view at (x, y) is rendered from: 1.5 tiles wide, centred there."""
    res = config.tile_metres / config.tile_size
    return city.crop(x, y, config.tile_size + 2 * (config.tile_size // 4), res)


def site_layers(config: WorldConfig, city: CityMap, site: Site) -> Layers:
    """The map crop every view of the place is rendered from: 1.5 tiles wide, centred on the place."""
    return crop_at(config, city, site.x, site.y)


def render_tile(config: WorldConfig, layers: Layers, tile: Tile) -> np.ndarray:
    """The north-up satellite tile centred on `layers` (the crop around the tile's centre)."""
    rng = generator(tile.stream)
    light = satellite_light(rng, *_satellite_sun(config.seed))
    return render_satellite(layers, config.tile_size, light, rng)


def render_shot(config: WorldConfig, layers: Layers, shot: Shot) -> tuple[np.ndarray, dict[str, float]]:
    """One query photo from the crop around its camera, and its random pose."""
    modality, q, x, y = shot.modality, config.query_size, shot.x, shot.y
    rng = generator(shot.key(MODALITY_CODES[modality]))
    pose: dict[str, float] = {}
    if modality is Modality.DRONE:
        img, drone_pose = render_drone(layers, x, y, q, config.tile_metres, random_light(rng), rng)
        pose.update(drone_pose)
        return develop(img, rng, DRONE_CAMERA), pose
    if modality is Modality.STREETMAP:
        return render_streetmap(layers, x, y, q, config.tile_metres, rng), pose
    # Panorama and ground photo are one capture: same light and clouds, different cameras.
    capture = generator(shot.key(CAPTURE))
    light, sky_seed = random_light(capture), int(capture.integers(1 << 31))
    if modality is Modality.PANORAMA:
        return develop(render_panorama(layers, x, y, q, light, sky_seed), rng, STREET_CAMERA), pose
    heading = float(rng.uniform(0, 360))
    pose["ground_heading_deg"] = heading
    return develop(render_ground(layers, x, y, q, heading, light, sky_seed), rng, PHOTO_CAMERA), pose


def render_site(
    config: WorldConfig, city: CityMap, site: Site, modalities: Iterable[Modality]
) -> tuple[dict[Modality, np.ndarray], dict[str, float]]:
    """The satellite tile and the first photo of each requested modality of a place, taken at the place
    itself (no offset), plus the random pose of each view."""
    layers = site_layers(config, city, site)
    images = {Modality.SATELLITE: render_tile(config, layers, site_tile(config, site))}
    pose: dict[str, float] = {"x_m": site.x, "y_m": site.y}
    for modality in modalities:
        shot = Shot(
            config.seed, site, modality, 0, photo_name(config, site, 0), set_id(config, site, modality),
            site.x, site.y, site,
        )  # fmt: skip
        images[modality], view_pose = render_shot(config, layers, shot)
        pose.update(view_pose)
    return images, pose
