"""What a map crop gets on top of the bare surface: trees on a jittered lattice and world-anchored texture.

Both are functions of world position (hashes and value noise), so overlapping crops of two places plant
the same trees and show the same grass patches.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gleam.corpus.world.layers import BARE, GRASS, PAVED, SIDEWALK, TREE, Fields, Layers
from gleam.corpus.world.noise import grid_noise, hash3, remix, unit
from gleam.corpus.world.styles import GARDEN_TREE_P, GROUND_RGB, STREET_TREE_P, TEXTURE

TREE_SPACING_M = 7.0


def plant_trees(
    layers: Layers, seed: int, surface: Callable[[np.ndarray, np.ndarray], Fields], clearings: np.ndarray
) -> None:
    """Trees on a jittered lattice, planted where the surface at the trunk allows one."""
    res, n = layers.res, layers.label.shape[0]
    x1, y1 = layers.x0 + n * res, layers.y0 - n * res
    ix = np.arange(math.floor((layers.x0 - 6) / TREE_SPACING_M), math.floor((x1 + 6) / TREE_SPACING_M) + 1)
    iy = np.arange(math.floor((y1 - 6) / TREE_SPACING_M), math.floor((layers.y0 + 6) / TREE_SPACING_M) + 1)
    gi, gj = (g.ravel() for g in np.meshgrid(ix, iy))
    h = hash3(seed, gi, gj, 77)
    tx = (gi + 0.15 + 0.7 * unit(h, 0)) * TREE_SPACING_M
    ty = (gj + 0.15 + 0.7 * unit(h, 1)) * TREE_SPACING_M
    at = surface(tx, ty)
    p = np.zeros(tx.size, dtype=np.float32)
    p[at.label == GRASS] = 0.45
    p[at.label == PAVED] = 0.08
    p[at.label == BARE] = 0.1
    side = at.label == SIDEWALK
    p[side] = STREET_TREE_P[at.style[side]]
    garden = at.label == GRASS
    p[garden] = np.maximum(p[garden], GARDEN_TREE_P[at.style[garden]])
    keep = np.flatnonzero(unit(h, 2) < p)
    radius = 1.8 + 2.6 * unit(remix(h[keep], 9), 0)
    clear = clearings
    clear = clear[
        (np.abs(clear[:, 0] - (layers.x0 + x1) / 2) < (x1 - layers.x0) / 2 + 10)
        & (np.abs(clear[:, 1] - (layers.y0 + y1) / 2) < (layers.y0 - y1) / 2 + 10)
    ]
    if len(clear):
        gap = np.hypot(tx[keep][:, None] - clear[:, 0], ty[keep][:, None] - clear[:, 1]).min(axis=1)
        keep = keep[gap > radius + 1.5]
    h2 = remix(h[keep], 9)
    radius = 1.8 + 2.6 * unit(h2, 0)
    crown = 5.0 + 9.0 * unit(h2, 1)
    tint = np.stack([0.8 + 0.3 * unit(h2, 2), 0.85 + 0.3 * unit(h2, 3), 0.8 + 0.2 * unit(h2, 2)], axis=1)
    for x, y, r, top, t in zip(tx[keep], ty[keep], radius, crown, tint, strict=True):
        layers.stamp_tree(float(x), float(y), float(r), float(top), GROUND_RGB[TREE] * t)


def texture(layers: Layers, seed: int, xs: np.ndarray, ys: np.ndarray) -> None:
    """World-anchored value noise per surface kind (grass patches, worn asphalt, leaves)."""
    fine = grid_noise(seed + 1, xs, ys, 0.8)
    mid = grid_noise(seed + 2, xs, ys, 5.0)
    large = grid_noise(seed + 3, xs, ys, 28.0)
    for albedo, label in ((layers.top, layers.label), (layers.ground_top, layers.ground)):
        a = TEXTURE[label]
        albedo *= (1 + a[..., 0] * fine + a[..., 1] * mid + a[..., 2] * large)[..., None]
        grass = label == GRASS  # dry patches: large-scale yellowing
        albedo[grass] += (large[grass] * 0.06)[:, None] * np.array([1.0, 0.6, -0.2], dtype=np.float32)
        np.clip(albedo, 0, 1, out=albedo)
