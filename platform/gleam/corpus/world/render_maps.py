"""Top-down views of a place: the satellite orthophoto and the cartographic street map, both north-up."""

from __future__ import annotations

import numpy as np

from gleam.corpus.world.camera import SATELLITE_CAMERA, develop
from gleam.corpus.world.layers import BUILDING, MAJOR, ROAD, Layers
from gleam.corpus.world.shading import Light, top_irradiance


def render_satellite(layers: Layers, tile_px: int, light: Light, rng: np.random.Generator) -> np.ndarray:
    """North-up orthophoto of the central tile_px square: albedo x hill-shading x cast shadows."""
    m = (layers.size - tile_px) // 2
    crop = (slice(m, m + tile_px), slice(m, m + tile_px))
    img = layers.top[crop] * top_irradiance(layers, light)[crop]
    haze = np.float32(rng.uniform(0, 0.1))
    img = img * (1 - haze) + haze * np.asarray(light.haze, np.float32)
    return develop(img, rng, SATELLITE_CAMERA)


# --- street map --------------------------------------------------------------------------------------------

# Fill colours per label (bare, grass, road, major, sidewalk, building, tree, water, parking, paved), then
# road casing, major-road casing, building outline; three map styles.
MAP_STYLES = [
    [(234, 228, 214), (205, 235, 176), (255, 255, 255), (252, 214, 164), (242, 239, 233), (217, 208, 201),
     (205, 235, 176), (170, 211, 223), (238, 238, 238), (221, 221, 232), (190, 185, 180), (222, 160, 100),
     (196, 182, 171)],
    [(245, 242, 236), (197, 232, 197), (255, 255, 255), (255, 235, 161), (241, 243, 244), (232, 234, 237),
     (197, 232, 197), (156, 192, 249), (236, 236, 236), (232, 232, 232), (214, 216, 220), (240, 200, 110),
     (214, 216, 220)],
    [(38, 42, 50), (42, 66, 52), (92, 98, 112), (150, 118, 70), (46, 50, 58), (62, 68, 80), (42, 66, 52),
     (23, 38, 64), (52, 56, 64), (56, 60, 70), (70, 75, 85), (110, 90, 60), (80, 86, 98)],
]  # fmt: skip


def _edge(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour outside it."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def render_streetmap(
    layers: Layers, cx: float, cy: float, size: int, extent_m: float, rng: np.random.Generator
) -> np.ndarray:
    """A flat cartographic map, north-up, in one of three styles, with a random zoom of +-15 %."""
    style = np.array(MAP_STYLES[int(rng.integers(len(MAP_STYLES)))], dtype=np.uint8)
    span = extent_m * float(rng.uniform(0.85, 1.15))
    offs = (np.arange(size) + 0.5 - size / 2) * (span / size)
    gx, gy = np.meshgrid(cx + offs, cy - offs)
    idx, _ = layers.index(gx, gy)
    ground = layers.ground.ravel()[idx]
    img = style[ground]
    road = (ground == ROAD) | (ground == MAJOR)
    casing = _edge(~road)
    img[casing & _edge(~(ground == MAJOR))] = style[11]
    img[casing & ~_edge(~(ground == MAJOR))] = style[10]
    img[_edge(ground == BUILDING)] = style[12]
    return img
