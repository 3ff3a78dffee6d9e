"""The synthetic city's map: districts (Voronoi cells, each a jittered, rotated street grid), blocks, rivers.

The map is a pure function of (seed, position): `CityMap.evaluate(x, y)` returns the label, height and
colours of any set of points in metres, so a crop around one location is computed on its own, in any
process, in any order, and always agrees with its neighbours. There is no global raster to hold in
memory or ship to Ray workers; the map of a place is `CityMap.crop(...)`. x is east, y north, metres
from the world centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gleam.corpus.world.buildings import Blocks, Lot, building_colours, building_height, footprint, lots
from gleam.corpus.world.dressing import plant_trees, texture
from gleam.corpus.world.layers import (
    BUILDING,
    GRASS,
    MAJOR,
    PARKING,
    PAVED,
    ROAD,
    SIDEWALK,
    WATER,
    Fields,
    Layers,
)
from gleam.corpus.world.noise import hash3, unit
from gleam.corpus.world.styles import (
    BLOCK_P,
    GROUND_RGB,
    MAJOR_P,
    MINOR_WIDTH,
    OPEN_LOT,
    PITCH,
    SIDEWALK_W,
    STYLE_WEIGHTS,
)

DISTRICT_SPACING_M = 320.0
RIVER_BANK_M = 6.0


@dataclass
class _Axis:
    """Road lines bracketing a coordinate in one axis of a district grid."""

    index: np.ndarray  # int64 index of the line below
    lo: np.ndarray
    hi: np.ndarray
    w_lo: np.ndarray
    w_hi: np.ndarray
    major_lo: np.ndarray
    major_hi: np.ndarray


class CityMap:
    """Districts (Voronoi cells, each a jittered, rotated street grid), blocks, lots, rivers."""

    def __init__(self, seed: int, side_m: float) -> None:
        self.seed = int(seed)
        self.side = float(side_m)
        rng = np.random.default_rng([self.seed, 0xC17])
        n = math.ceil(side_m / DISTRICT_SPACING_M) + 4
        grid = (np.arange(n) - n / 2 + 0.5) * DISTRICT_SPACING_M
        gx, gy = np.meshgrid(grid, grid)
        jitter = rng.uniform(-0.35, 0.35, size=(2, gx.size)) * DISTRICT_SPACING_M
        self.seeds = np.stack([gx.ravel() + jitter[0], gy.ravel() + jitter[1]], axis=1)
        k = len(self.seeds)
        self.style = rng.choice(4, size=k, p=STYLE_WEIGHTS).astype(np.uint8)
        axis_aligned = rng.random(k) < 0.3
        self.theta = np.where(axis_aligned, 0.0, rng.uniform(-np.pi / 4, np.pi / 4, k))
        lo, hi = PITCH[self.style, 0], PITCH[self.style, 1]
        self.pitch = rng.uniform(lo[:, None], hi[:, None], size=(k, 2))
        self.minor = rng.uniform(MINOR_WIDTH[self.style, 0], MINOR_WIDTH[self.style, 1])
        self.rivers = [self._river(rng) for _ in range(max(1, round(side_m / 1500)))]
        self.clearings = np.zeros((0, 2))

    def keep_clear(self, points: np.ndarray) -> None:
        """No tree crown over these points: street-level cameras stand in the open, as a mapping car."""
        self.clearings = np.asarray(points, dtype=np.float64).reshape(-1, 2)

    def _river(self, rng: np.random.Generator) -> dict[str, float]:
        return {
            "phi": rng.uniform(0, np.pi),
            "offset": rng.uniform(-0.3, 0.3) * self.side,
            "a1": rng.uniform(30, 80),
            "l1": rng.uniform(150, 300),
            "p1": rng.uniform(0, 2 * np.pi),
            "a2": rng.uniform(8, 20),
            "l2": rng.uniform(50, 90),
            "p2": rng.uniform(0, 2 * np.pi),
            "width": rng.uniform(18, 34),
        }

    # -- evaluation --------------------------------------------------------------------------------------

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Fields:
        """The surface at points (x, y) in metres; arrays of any (equal) shape."""
        shape = np.shape(x)
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        step = 200_000  # bounds the (districts x points) distance matrix
        parts = [self._evaluate_flat(x[i : i + step], y[i : i + step]) for i in range(0, x.size, step)]
        joined = {
            name: np.concatenate([getattr(p, name) for p in parts]) for name in Fields.__dataclass_fields__
        }
        return Fields(**{k: v.reshape(shape + v.shape[1:]) for k, v in joined.items()})

    def _nearest_districts(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(nearest seed, second seed, distance to their bisector) for every point."""
        margin = 2.0 * DISTRICT_SPACING_M
        near = np.flatnonzero(
            (self.seeds[:, 0] > x.min() - margin)
            & (self.seeds[:, 0] < x.max() + margin)
            & (self.seeds[:, 1] > y.min() - margin)
            & (self.seeds[:, 1] < y.max() + margin)
        )
        sx, sy = self.seeds[near, 0][:, None], self.seeds[near, 1][:, None]
        d2 = (x[None] - sx) ** 2 + (y[None] - sy) ** 2
        cols = np.arange(x.size)
        i1 = np.argmin(d2, axis=0)
        d1 = d2[i1, cols]
        d2[i1, cols] = np.inf
        i2 = np.argmin(d2, axis=0)
        g1, g2 = near[i1], near[i2]
        sep = np.hypot(*(self.seeds[g2] - self.seeds[g1]).T)
        return g1, g2, (d2[i2, cols] - d1) / (2.0 * sep)

    def _axis(
        self, key: np.ndarray, q: np.ndarray, pitch: np.ndarray, minor: np.ndarray, p_major: Any
    ) -> _Axis:
        """Road lines at (k + jitter) * pitch; jitter < 1/4 so the neighbours of round(q) bracket q."""
        k0 = np.rint(q / pitch).astype(np.int64)
        pos, width, major = [], [], []
        for dk in (-1, 0, 1):
            h = hash3(self.seed, key, k0 + dk, 11)
            pos.append((k0 + dk + (unit(h, 0) - 0.5) * 0.44) * pitch)
            is_major = unit(h, 1) < p_major
            major.append(is_major)
            width.append(np.where(is_major, 14.0 + 6.0 * unit(h, 2), minor * (0.85 + 0.3 * unit(h, 2))))
        upper = q >= pos[1]
        pick = lambda a: (np.where(upper, a[1], a[0]), np.where(upper, a[2], a[1]))  # noqa: E731
        lo, hi = pick(pos)
        w_lo, w_hi = pick(width)
        m_lo, m_hi = pick(major)
        return _Axis(np.where(upper, k0, k0 - 1), lo, hi, w_lo, w_hi, m_lo, m_hi)

    def _evaluate_flat(self, x: np.ndarray, y: np.ndarray) -> Fields:
        n = x.size
        g1, g2, border = self._nearest_districts(x, y)
        style = self.style[g1]
        theta = self.theta[g1]
        ct, st = np.cos(theta), np.sin(theta)
        dx, dy = x - self.seeds[g1, 0], y - self.seeds[g1, 1]
        u, v = ct * dx + st * dy, -st * dx + ct * dy
        ax_u = self._axis(g1 * 4, u, self.pitch[g1, 0], self.minor[g1], MAJOR_P[style])
        ax_v = self._axis(g1 * 4 + 1, v, self.pitch[g1, 1], self.minor[g1], MAJOR_P[style])
        sw = SIDEWALK_W[style]

        road_u, side_u, maj_u = self._road_band(g1 * 4 + 2, u, ax_u, ax_v.index, sw)
        road_v, side_v, maj_v = self._road_band(g1 * 4 + 3, v, ax_v, ax_u.index, sw)

        # The block between the bracketing lines, inside its sidewalks.
        a0 = ax_u.lo + ax_u.w_lo / 2 + sw
        b0 = ax_v.lo + ax_v.w_lo / 2 + sw
        blocks = Blocks(
            a=u - a0,
            b=v - b0,
            size_a=ax_u.hi - ax_u.w_hi / 2 - sw - a0,
            size_b=ax_v.hi - ax_v.w_hi / 2 - sw - b0,
            hash=hash3(self.seed, g1 * 4, ax_u.index, ax_v.index * 7919 + 3),
            style=style,
            district=g1,
            x=x,
            y=y,
        )
        label = np.full(n, PAVED, dtype=np.uint8)
        height = np.zeros(n, dtype=np.float32)
        top = np.empty((n, 3), dtype=np.float32)
        wall = np.empty((n, 3), dtype=np.float32)

        kind = (unit(blocks.hash, 0)[:, None] >= BLOCK_P[style][:, :-1]).sum(axis=1)
        usable = (blocks.size_a > 6) & (blocks.size_b > 6)
        built = (kind == 0) & usable
        label[built] = OPEN_LOT[style[built]]
        self._buildings(label, height, top, wall, blocks, built)
        self._open_blocks(label, blocks, kind, usable)

        # Arterial roads along district borders; their width varies per pair of districts.
        w_art = self._arterial_width(g1, g2)
        road_art = border < w_art / 2
        side_art = border < w_art / 2 + sw
        label[side_u | side_v | side_art] = SIDEWALK
        label[road_u | road_v] = ROAD
        label[(road_u & maj_u) | (road_v & maj_v) | road_art] = MAJOR
        height[label != BUILDING] = 0.0

        self._rivers(x, y, label, height)
        base = label != BUILDING
        top[base] = GROUND_RGB[label[base]]
        wall[base] = top[base] * 0.8
        self._markings(top, label, u, v, ax_u, ax_v)
        phase = (u + v).astype(np.float32)
        return Fields(label, height, top, wall, phase, style)

    def _road_band(
        self, key: np.ndarray, q: np.ndarray, ax: _Axis, cross_index: np.ndarray, sw: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Road and sidewalk masks of the nearer line; some minor segments are dropped (superblocks)."""
        near_lo = (q - ax.lo) < (ax.hi - q)
        dist = np.where(near_lo, q - ax.lo, ax.hi - q)
        width = np.where(near_lo, ax.w_lo, ax.w_hi)
        major = np.where(near_lo, ax.major_lo, ax.major_hi)
        line = np.where(near_lo, ax.index, ax.index + 1)
        dropped = (unit(hash3(self.seed, key, line, cross_index), 0) < 0.12) & ~major
        road = (dist < width / 2) & ~dropped
        return road, (dist < width / 2 + sw) & ~dropped, major

    def _buildings(
        self,
        label: np.ndarray,
        height: np.ndarray,
        top: np.ndarray,
        wall: np.ndarray,
        blocks: Blocks,
        built: np.ndarray,
    ) -> None:
        """Lots in a grid inside each block; one building per lot (rectangle, L-shape or courtyard)."""
        inside_block = (
            (blocks.a >= 0) & (blocks.b >= 0) & (blocks.a < blocks.size_a) & (blocks.b < blocks.size_b)
        )
        idx = np.flatnonzero(built & inside_block)
        if idx.size == 0:
            return
        points = blocks.take(idx)
        lot = lots(self.seed, points)
        inside = footprint(lot) & self._clear_of_edges(points, lot)
        keep = idx[inside]
        roof_rgb, wall_rgb = building_colours(lot)
        label[keep] = BUILDING
        height[keep] = building_height(lot)[inside]
        top[keep] = roof_rgb[inside]
        wall[keep] = wall_rgb[inside]

    def _open_blocks(self, label: np.ndarray, blocks: Blocks, kind: np.ndarray, usable: np.ndarray) -> None:
        """Parks (paths, ponds), lakes, parking lots and plazas."""
        hb = blocks.hash
        fa, fb = blocks.a / np.maximum(blocks.size_a, 1e-3), blocks.b / np.maximum(blocks.size_b, 1e-3)
        span = np.minimum(blocks.size_a, blocks.size_b)
        ex, ey = (fa - 0.5) * 2, (fb - 0.5) * 2
        park = (kind == 1) & usable
        label[park] = GRASS
        paths = unit(hb, 3)
        path = ((np.abs(fa - fb) * span < 1.5) & (paths < 0.7)) | (
            (np.abs(fa + fb - 1) * span < 1.5) & (paths < 0.3)
        )
        label[park & path] = PAVED
        pond = park & (unit(hb, 2) < 0.35) & ((ex / 0.55) ** 2 + (ey / 0.45) ** 2 < 1)
        label[pond] = WATER
        lake = (kind == 2) & usable
        wobble = 0.8 + 0.08 * np.sin(np.arctan2(ey, ex) * 3 + unit(hb, 2) * 6)
        label[lake] = np.where(ex[lake] ** 2 + ey[lake] ** 2 < wobble[lake] ** 2, WATER, GRASS)
        label[(kind == 3) & usable] = PARKING
        label[(kind == 4) & usable] = PAVED

    def _clear_of_edges(self, points: Blocks, lot: Lot) -> np.ndarray:
        """A building cut by an arterial road or a river bank keeps its larger part (the road clips it
        into a trapezoid, as along a real avenue); one whose centre lies beyond the cut would leave a
        sliver and is left out. Checked once per lot, at the centre of its footprint."""
        _, first, inverse = np.unique(lot.h1, return_index=True, return_inverse=True)
        theta = self.theta[points.district[first]]
        du, dv = (0.5 - lot.fa[first]) * lot.dim_a[first], (0.5 - lot.fb[first]) * lot.dim_b[first]
        cx = points.x[first] + np.cos(theta) * du - np.sin(theta) * dv
        cy = points.y[first] + np.sin(theta) * du + np.cos(theta) * dv
        g1, g2, border = self._nearest_districts(cx, cy)
        margin = self._arterial_width(g1, g2) / 2 + SIDEWALK_W[points.style[first]] + 2.0
        clear = (g1 == points.district[first]) & (border > margin)
        clear &= self._river_edge(cx, cy) > RIVER_BANK_M + 2.0
        return clear[inverse.ravel()]

    def _arterial_width(self, g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
        """Width of the arterial road on the border of two districts (12-22 m, per pair)."""
        return 12.0 + 10.0 * unit(hash3(self.seed, np.minimum(g1, g2), np.maximum(g1, g2), 5), 0)

    def _river_edge(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Distance (m) from the nearest river's water edge; negative in the water."""
        edge = np.full(np.shape(x), np.inf)
        for r in self.rivers:
            c, s = math.cos(r["phi"]), math.sin(r["phi"])
            along, across = x * c + y * s, -x * s + y * c - r["offset"]
            t1, t2 = along / r["l1"] + r["p1"], along / r["l2"] + r["p2"]
            centre = r["a1"] * np.sin(t1) + r["a2"] * np.sin(t2)
            slope = r["a1"] / r["l1"] * np.cos(t1) + r["a2"] / r["l2"] * np.cos(t2)
            dist = np.abs(across - centre) / np.sqrt(1 + slope * slope)
            edge = np.minimum(edge, dist - r["width"] / 2)
        return edge

    def _rivers(self, x: np.ndarray, y: np.ndarray, label: np.ndarray, height: np.ndarray) -> None:
        """Meandering rivers cross the city; major roads bridge them, other features stop at the bank."""
        edge = self._river_edge(x, y)
        bank = (edge < RIVER_BANK_M) & (label != MAJOR) & (label != ROAD)
        label[bank] = GRASS
        water = (edge < 0) & (label != MAJOR)
        label[water] = WATER
        height[bank | water] = 0.0

    def _markings(
        self, top: np.ndarray, label: np.ndarray, u: np.ndarray, v: np.ndarray, ax_u: _Axis, ax_v: _Axis
    ) -> None:
        """Dashed centre lines on major grid roads and stripes in parking lots."""
        centre_u = np.minimum(np.abs(u - ax_u.lo), np.abs(u - ax_u.hi)) < 0.25
        centre_v = np.minimum(np.abs(v - ax_v.lo), np.abs(v - ax_v.hi)) < 0.25
        dash_u, dash_v = (v % 6.0) < 3.0, (u % 6.0) < 3.0
        lines = (label == MAJOR) & ((centre_u & dash_u) | (centre_v & dash_v))
        stripes = (label == PARKING) & ((u % 2.6) < 0.25) & ((v % 11.0) > 1.0) & ((v % 11.0) < 5.5)
        top[lines] = (0.85, 0.85, 0.78)
        top[stripes] = (0.8, 0.8, 0.8)

    def labels(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.evaluate(x, y).label

    # -- crops ---------------------------------------------------------------------------------------------

    def crop(self, cx: float, cy: float, size_px: int, res: float) -> Layers:
        """The north-up map of a square of `size_px` pixels of `res` metres centred on (cx, cy)."""
        half = size_px * res / 2
        x0, y0 = cx - half, cy + half
        xs = x0 + (np.arange(size_px) + 0.5) * res
        ys = y0 - (np.arange(size_px) + 0.5) * res
        gx, gy = np.meshgrid(xs, ys)
        f = self.evaluate(gx, gy)
        ground = f.label.copy()
        layers = Layers(x0, y0, res, f.label, ground, f.height, f.top, f.wall, f.phase)
        plant_trees(layers, self.seed, self.evaluate, self.clearings)
        texture(layers, self.seed, xs, ys)
        return layers
