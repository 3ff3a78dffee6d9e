"""The surface of the world: at any points (`Fields`) and around a place (`Layers`, the map crop).

`Layers` is what a place is rendered from: label, height and colours of a north-up square. Every view
of a location is computed from the same `Layers`, so the views agree geometrically. Crop row 0 is the
northern edge; world x is east, y north, in metres.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

# Surface labels of the map (uint8).
BARE, GRASS, ROAD, MAJOR, SIDEWALK, BUILDING, TREE, WATER, PARKING, PAVED = range(10)
CROWN_BASE = 0.4  # tree crowns start at this fraction of the tree's height


@dataclass
class Fields:
    """Per-point surface of the world (any shape), before trees and textures."""

    label: np.ndarray  # uint8 label
    height: np.ndarray  # float32 metres above ground
    top: np.ndarray  # float32 (..., 3) albedo seen from above (roof colour on buildings)
    wall: np.ndarray  # float32 (..., 3) facade colour (meaningful on buildings)
    phase: np.ndarray  # float32 coordinate along walls (u + v in the district frame): window rhythm
    style: np.ndarray  # uint8 district style


@dataclass
class Layers:
    """A north-up square crop of the world: `res` metres per pixel, (x0, y0) its north-west corner."""

    x0: float
    y0: float
    res: float
    label: np.ndarray  # (n, n) uint8 top-most surface
    ground: np.ndarray  # (n, n) uint8 surface under the trees (for maps)
    height: np.ndarray  # (n, n) float32 metres
    top: np.ndarray  # (n, n, 3) float32 albedo seen from above
    wall: np.ndarray  # (n, n, 3) float32 albedo of the vertical faces
    phase: np.ndarray  # (n, n) float32 coordinate along walls
    solid: np.ndarray | None = None  # (n, n) heights without tree crowns but with trunks (street views)
    ground_top: np.ndarray | None = None  # (n, n, 3) albedo under the tree crowns
    _cache: dict[object, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.solid is None:
            self.solid = self.height.copy()
        if self.ground_top is None:
            self.ground_top = self.top.copy()

    @property
    def size(self) -> int:
        return int(self.label.shape[0])

    def cached(self, key: Hashable, make: Callable[[], np.ndarray]) -> np.ndarray:
        """A layer derived from this crop, computed once (views of a place share gradients and lighting);
        planting a tree drops them all."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat pixel index of world points and whether they fall inside the crop."""
        n = self.size
        col = np.floor((x - self.x0) / self.res).astype(np.int64)
        row = np.floor((self.y0 - y) / self.res).astype(np.int64)
        inside = (col >= 0) & (col < n) & (row >= 0) & (row < n)
        return np.where(inside, row * n + col, 0), inside

    def gradient(self) -> tuple[np.ndarray, np.ndarray]:
        """(dh/dx east, dh/dy north), clipped so walls read as steep slopes, not infinities."""

        def make() -> np.ndarray:
            g_row, g_col = np.gradient(self.height, self.res)
            return np.stack([np.clip(g_col, -4, 4), np.clip(-g_row, -4, 4)])

        gx, gy = self.cached("grad", make)
        return gx, gy

    def wall_gradient(self) -> tuple[np.ndarray, np.ndarray]:
        """The gradient of a 5x5-smoothed height: wall normals without pixel staircases."""

        def make() -> np.ndarray:
            h = self.height
            for axis in (0, 1):
                p = np.pad(h, [(2, 2) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
                h = sum(np.take(p, range(i, i + self.size), axis=axis) for i in range(5)) / 5
            g_row, g_col = np.gradient(h, self.res)
            return np.stack([g_col, -g_row])

        gx, gy = self.cached("wall_grad", make)
        return gx, gy

    def bilinear(self, values: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear sample of an (n, n, c) layer at world points (clamped at the border)."""
        n = self.size
        fc = np.clip((x - self.x0) / self.res - 0.5, 0, n - 1.001)
        fr = np.clip((self.y0 - y) / self.res - 0.5, 0, n - 1.001)
        c0, r0 = fc.astype(np.int64), fr.astype(np.int64)
        tc, tr = (fc - c0).astype(np.float32)[..., None], (fr - r0).astype(np.float32)[..., None]
        flat = values.reshape(n * n, -1)
        i = r0 * n + c0
        top = flat[i] * (1 - tc) + flat[i + 1] * tc
        bottom = flat[i + n] * (1 - tc) + flat[i + n + 1] * tc
        return top * (1 - tr) + bottom * tr

    def stamp_tree(self, x: float, y: float, radius: float, crown: float, rgb: np.ndarray) -> None:
        """A dome-shaped crown (wins wherever it is higher than what is there) on a one-pixel trunk."""
        n, res = self.size, self.res
        c0 = max(0, math.floor((x - radius - self.x0) / res))
        c1 = min(n, math.ceil((x + radius - self.x0) / res) + 1)
        r0 = max(0, math.floor((self.y0 - y - radius) / res))
        r1 = min(n, math.ceil((self.y0 - y + radius) / res) + 1)
        if c0 >= c1 or r0 >= r1:
            return
        px = self.x0 + (np.arange(c0, c1) + 0.5) * res - x
        py = self.y0 - (np.arange(r0, r1) + 0.5) * res - y
        d2 = (px[None, :] ** 2 + py[:, None] ** 2) / (radius * radius)
        h = (crown * (0.65 + 0.35 * np.sqrt(np.clip(1 - d2, 0, 1)))).astype(np.float32)
        self._cache.clear()  # derived layers (gradients, lighting) no longer hold
        win = (slice(r0, r1), slice(c0, c1))
        above = (d2 < 1) & (h > self.height[win])
        self.height[win][above] = h[above]
        self.label[win][above] = TREE
        self.top[win][above] = rgb
        self.wall[win][above] = rgb * 0.8
        row, col = math.floor((self.y0 - y) / res), math.floor((x - self.x0) / res)
        if 0 <= row < n and 0 <= col < n and self.label[row, col] == TREE:
            self.solid[row, col] = max(float(self.solid[row, col]), CROWN_BASE * crown)
