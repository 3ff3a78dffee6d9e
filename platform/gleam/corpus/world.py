"""A procedural synthetic city rendered consistently in every modality, written as a raw corpus.

The world is a pure function of (seed, position): `CityMap.evaluate(x, y)` returns the label, height
and colours of any set of points in metres, so a crop around one location is computed on its own,
in any process, in any order, and always agrees with its neighbours. There is no global raster to
hold in memory or ship to Ray workers; the "height/label map" of a place is `CityMap.crop(...)`.

Conventions (docs/world.md): x east, y north, metres, origin at the world centre; crops are north-up
(row 0 is the northern edge); azimuths are degrees clockwise from north. Renderers live in
`world_render.py`; this module holds the map, the locations and the corpus writer.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from gleam import storage
from gleam.config import WorldConfig, config_hash
from gleam.corpus import world_render as wr
from gleam.corpus.schema import Modality
from gleam.corpus.world_render import (  # labels and hashing are shared with the renderers
    BARE,
    BUILDING,
    GRASS,
    MAJOR,
    PARKING,
    PAVED,
    ROAD,
    SIDEWALK,
    TREE,
    WATER,
    hash3,
    remix,
    unit,
)
from gleam.errors import RefusedError

RENDERER_VERSION = "1"
MANIFEST_COLUMNS = ["query_uri", "modality", "tile_uri", "location_id", "lat", "lon", "split"]
EARTH_RADIUS_M = 6_371_008.8
DISTRICT_SPACING_M = 320.0
TREE_SPACING_M = 7.0
RIVER_BANK_M = 6.0


# District styles and their parameters, one row per style: downtown, residential, industrial, green.
DOWNTOWN, RESIDENTIAL, INDUSTRIAL, GREEN = range(4)
STYLE_WEIGHTS = np.array([0.25, 0.4, 0.15, 0.2])
PITCH = np.array([[60, 100], [55, 90], [80, 140], [70, 120]], dtype=np.float64)  # block spacing (m)
MINOR_WIDTH = np.array([[8, 12], [6, 9], [8, 12], [5, 8]], dtype=np.float64)
MAJOR_P = np.array([0.25, 0.15, 0.2, 0.1])
SIDEWALK_W = np.array([3.0, 2.0, 1.5, 1.5])
# Block types: buildings, park, water, parking, plaza (cumulative thresholds per style).
BLOCK_P = np.cumsum(
    [[0.78, 0.08, 0.02, 0.06, 0.06], [0.84, 0.1, 0.03, 0.02, 0.01], [0.75, 0.03, 0.02, 0.15, 0.05],
     [0.45, 0.4, 0.1, 0.03, 0.02]],
    axis=1,
)  # fmt: skip
LOT_W = np.array([[22, 40], [12, 20], [35, 70], [15, 25]], dtype=np.float64)
SETBACK = np.array([[0, 1.5], [2, 5], [3, 8], [3, 7]], dtype=np.float64)
HEIGHT = np.array([[12, 60], [5, 10], [6, 14], [4, 8]], dtype=np.float64)
GABLE_P = np.array([0.0, 0.75, 0.1, 0.7])
L_SHAPE_P = np.array([0.3, 0.35, 0.2, 0.3])
COURTYARD_P = np.array([0.35, 0.0, 0.0, 0.0])
OPEN_LOT = np.array([PAVED, GRASS, BARE, GRASS], dtype=np.uint8)
STREET_TREE_P = np.array([0.25, 0.45, 0.05, 0.5])
GARDEN_TREE_P = np.array([0.05, 0.3, 0.03, 0.35])

ROOFS = np.array(
    [[176, 86, 62], [128, 52, 44], [112, 86, 70], [78, 84, 96], [66, 66, 70], [128, 128, 126],
     [186, 184, 178], [222, 222, 214], [196, 176, 140], [96, 140, 120], [92, 118, 150], [44, 44, 48],
     [150, 96, 60], [210, 190, 150]],
    dtype=np.float32,
) / 255  # fmt: skip
STYLE_ROOFS = np.array(
    [[4, 5, 6, 7, 11, 3, 8, 9], [0, 1, 2, 3, 4, 0, 12, 5], [5, 6, 7, 10, 11, 12, 4, 6],
     [0, 1, 2, 3, 9, 4, 0, 12]]
)  # fmt: skip
PLASTERS = np.array(
    [[230, 226, 214], [228, 210, 170], [205, 160, 95], [214, 150, 130], [190, 190, 188], [150, 72, 56],
     [90, 120, 150], [100, 76, 60], [180, 200, 170]],
    dtype=np.float32,
) / 255  # fmt: skip
GROUND_RGB = np.array(
    [[136, 118, 92], [92, 128, 64], [84, 84, 88], [72, 72, 76], [160, 156, 150], [128, 128, 128],
     [54, 86, 46], [46, 78, 96], [110, 110, 112], [176, 168, 152]],
    dtype=np.float32,
) / 255  # fmt: skip

# Texture amplitude per label at scales 0.8 m, 5 m and 28 m.
TEXTURE = np.array(
    [[0.10, 0.10, 0.10], [0.08, 0.10, 0.18], [0.04, 0.05, 0.08], [0.04, 0.05, 0.08], [0.05, 0.05, 0.04],
     [0.05, 0.05, 0.04], [0.30, 0.10, 0.06], [0.03, 0.04, 0.10], [0.04, 0.04, 0.05], [0.06, 0.06, 0.05]],
    dtype=np.float32,
)  # fmt: skip


# --- the city map ------------------------------------------------------------------------------------------


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
class _Axis:
    """Road lines bracketing a coordinate in one axis of a district grid."""

    index: np.ndarray  # int64 index of the line below
    lo: np.ndarray
    hi: np.ndarray
    w_lo: np.ndarray
    w_hi: np.ndarray
    major_lo: np.ndarray
    major_hi: np.ndarray


@dataclass
class _Blocks:
    """Per point: position (a, b) inside its block, the block's size and hash, the point's district."""

    a: np.ndarray
    b: np.ndarray
    size_a: np.ndarray
    size_b: np.ndarray
    hash: np.ndarray
    style: np.ndarray
    district: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def take(self, idx: np.ndarray) -> _Blocks:
        return _Blocks(*(getattr(self, f)[idx] for f in _Blocks.__dataclass_fields__))


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
        blocks = _Blocks(
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
        blocks: _Blocks,
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
        lot = self._lots(points)
        inside = _footprint(lot) & self._clear_of_edges(points, lot)
        keep = idx[inside]
        roof_rgb, wall_rgb = _building_colours(lot)
        label[keep] = BUILDING
        height[keep] = _building_height(lot)[inside]
        top[keep] = roof_rgb[inside]
        wall[keep] = wall_rgb[inside]

    def _lots(self, p: _Blocks) -> _Lot:
        """Split each block into 1-2 rows of lots of the district's lot width; set back each building."""
        s = p.style
        lot_w = LOT_W[s, 0] + (LOT_W[s, 1] - LOT_W[s, 0]) * unit(p.hash, 1)
        nu = np.maximum(1, np.floor(p.size_a / lot_w))
        nv = np.where(p.size_b >= 1.7 * lot_w, 2.0, 1.0)
        la_size, lb_size = p.size_a / nu, p.size_b / nv
        iu = np.clip(np.floor(p.a / la_size), 0, nu - 1)
        iv = np.clip(np.floor(p.b / lb_size), 0, nv - 1)
        la, lb = p.a - iu * la_size, p.b - iv * lb_size
        h1 = hash3(self.seed, p.hash.astype(np.int64) & 0x7FFFFFFF, iu.astype(np.int64), iv.astype(np.int64))
        sb_lo, sb_rng = SETBACK[s, 0], SETBACK[s, 1] - SETBACK[s, 0]
        m = [
            np.minimum(sb_lo + sb_rng * unit(h1, i), 0.25 * (la_size if i < 2 else lb_size)) for i in range(4)
        ]
        dim_a, dim_b = np.maximum(la_size - m[0] - m[1], 1e-3), np.maximum(lb_size - m[2] - m[3], 1e-3)
        return _Lot(s, (la - m[0]) / dim_a, (lb - m[2]) / dim_b, dim_a, dim_b, h1, remix(h1, 1), remix(h1, 2))

    def _open_blocks(self, label: np.ndarray, blocks: _Blocks, kind: np.ndarray, usable: np.ndarray) -> None:
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

    def _clear_of_edges(self, points: _Blocks, lot: _Lot) -> np.ndarray:
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

    def crop(self, cx: float, cy: float, size_px: int, res: float) -> wr.Layers:
        """The north-up map of a square of `size_px` pixels of `res` metres centred on (cx, cy)."""
        half = size_px * res / 2
        x0, y0 = cx - half, cy + half
        xs = x0 + (np.arange(size_px) + 0.5) * res
        ys = y0 - (np.arange(size_px) + 0.5) * res
        gx, gy = np.meshgrid(xs, ys)
        f = self.evaluate(gx, gy)
        ground = f.label.copy()
        layers = wr.Layers(x0, y0, res, f.label, ground, f.height, f.top, f.wall, f.phase)
        self._plant_trees(layers)
        self._texture(layers, xs, ys)
        return layers

    def _plant_trees(self, layers: wr.Layers) -> None:
        """Trees on a jittered lattice, planted where the surface at the trunk allows one."""
        res, n = layers.res, layers.label.shape[0]
        x1, y1 = layers.x0 + n * res, layers.y0 - n * res
        ix = np.arange(
            math.floor((layers.x0 - 6) / TREE_SPACING_M), math.floor((x1 + 6) / TREE_SPACING_M) + 1
        )
        iy = np.arange(
            math.floor((y1 - 6) / TREE_SPACING_M), math.floor((layers.y0 + 6) / TREE_SPACING_M) + 1
        )
        gi, gj = (g.ravel() for g in np.meshgrid(ix, iy))
        h = hash3(self.seed, gi, gj, 77)
        tx = (gi + 0.15 + 0.7 * unit(h, 0)) * TREE_SPACING_M
        ty = (gj + 0.15 + 0.7 * unit(h, 1)) * TREE_SPACING_M
        at = self.evaluate(tx, ty)
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
        clear = self.clearings
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

    def _texture(self, layers: wr.Layers, xs: np.ndarray, ys: np.ndarray) -> None:
        """World-anchored value noise per surface kind (grass patches, worn asphalt, leaves)."""
        fine = wr.grid_noise(self.seed + 1, xs, ys, 0.8)
        mid = wr.grid_noise(self.seed + 2, xs, ys, 5.0)
        large = wr.grid_noise(self.seed + 3, xs, ys, 28.0)
        for albedo, label in ((layers.top, layers.label), (layers.ground_top, layers.ground)):
            a = TEXTURE[label]
            albedo *= (1 + a[..., 0] * fine + a[..., 1] * mid + a[..., 2] * large)[..., None]
            grass = label == GRASS  # dry patches: large-scale yellowing
            albedo[grass] += (large[grass] * 0.06)[:, None] * np.array([1.0, 0.6, -0.2], dtype=np.float32)
            np.clip(albedo, 0, 1, out=albedo)


@dataclass
class _Lot:
    """Per building point: (fa, fb) position in the footprint rectangle in [0, 1), its size, hashes."""

    style: np.ndarray
    fa: np.ndarray
    fb: np.ndarray
    dim_a: np.ndarray
    dim_b: np.ndarray
    h1: np.ndarray
    h2: np.ndarray
    h3: np.ndarray


def _footprint(lot: _Lot) -> np.ndarray:
    """Rectangle, less a corner quadrant (L-shape) or, on big downtown lots, an inner courtyard."""
    fa, fb, s = lot.fa, lot.fb, lot.style
    inside = (fa >= 0) & (fa < 1) & (fb >= 0) & (fb < 1)
    corner = (unit(lot.h3, 0) * 4).astype(np.int64)
    ca = np.where(corner % 2 == 0, fa, 1 - fa)
    cb = np.where(corner // 2 == 0, fb, 1 - fb)
    cut = (
        (unit(lot.h2, 3) < L_SHAPE_P[s])
        & (ca > 0.4 + 0.25 * unit(lot.h3, 1))
        & (cb > 0.4 + 0.25 * unit(lot.h3, 2))
    )
    ring = 9.0
    edge = np.minimum(np.minimum(fa, 1 - fa) * lot.dim_a, np.minimum(fb, 1 - fb) * lot.dim_b)
    court = (unit(lot.h3, 3) < COURTYARD_P[s]) & (lot.dim_a > 30) & (lot.dim_b > 30) & (edge > ring)
    return inside & ~cut & ~court


def _building_height(lot: _Lot) -> np.ndarray:
    """Eaves from the district's range (downtown skewed tall), gabled roofs, rooftop plant rooms."""
    s, h4 = lot.style, remix(lot.h1, 3)
    hu = unit(lot.h2, 0)
    eave = HEIGHT[s, 0] + (HEIGHT[s, 1] - HEIGHT[s, 0]) * np.where(s == DOWNTOWN, hu * hu, hu)
    gable = unit(h4, 0) < GABLE_P[s]
    slope = 0.55 + 0.25 * unit(h4, 1)
    fa, fb = lot.fa, lot.fb
    across = np.where(
        lot.dim_a < lot.dim_b, np.minimum(fa, 1 - fa) * lot.dim_a, np.minimum(fb, 1 - fb) * lot.dim_b
    )
    box = (s == DOWNTOWN) & (unit(h4, 2) < 0.5) & (np.abs(fa - 0.45) < 0.15) & (np.abs(fb - 0.5) < 0.15)
    return (eave + np.where(gable, slope * across, 0.0) + np.where(box, 3.5, 0.0)).astype(np.float32)


def _building_colours(lot: _Lot) -> tuple[np.ndarray, np.ndarray]:
    """Roof from the district's palette with a per-building tint; facade = 30 % roof + 70 % plaster."""
    h5 = remix(lot.h1, 4)
    palette = STYLE_ROOFS[lot.style, (unit(lot.h2, 1) * STYLE_ROOFS.shape[1]).astype(np.int64)]
    tint = (np.stack([unit(h5, i) for i in range(3)], axis=1) - 0.5) * 0.09
    roof = np.clip(ROOFS[palette] + tint + (unit(h5, 3)[:, None] - 0.5) * 0.08, 0, 1)
    plaster = PLASTERS[(unit(lot.h2, 2) * len(PLASTERS)).astype(np.int64)]
    return roof, 0.3 * roof + 0.7 * plaster


# --- locations ---------------------------------------------------------------------------------------------


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


# --- rendering one location --------------------------------------------------------------------------------

MODALITY_CODES = {m: i for i, m in enumerate(Modality)}
EXTENSIONS = {Modality.STREETMAP: "png"}


def relative_uri(modality: Modality, site_id: str) -> str:
    return f"{modality.value}/{site_id}.{EXTENSIONS.get(modality, 'jpg')}"


def _rng(config: WorldConfig, site: Site, stream: int) -> np.random.Generator:
    """One generator per (world, place, stream): results do not depend on order or parallelism."""
    return np.random.default_rng([config.seed, site.index, stream])


def _satellite_sun(seed: int) -> tuple[float, float]:
    rng = np.random.default_rng([seed, 0x5A7])
    return float(rng.uniform(120, 220)), float(rng.uniform(45, 65))


def site_layers(config: WorldConfig, city: CityMap, site: Site) -> wr.Layers:
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
            light = wr.satellite_light(rng, *_satellite_sun(config.seed))
            images[modality] = wr.render_satellite(layers, config.tile_size, light, rng)
        elif modality is Modality.DRONE:
            light = wr.random_light(rng)
            img, drone_pose = wr.render_drone(layers, x, y, q, config.tile_metres, light, rng)
            images[modality] = wr.develop(img, rng, wr.DRONE_CAMERA)
            pose.update(drone_pose)
        elif modality is Modality.STREETMAP:
            images[modality] = wr.render_streetmap(layers, x, y, q, config.tile_metres, rng)
        else:
            # Panorama and ground photo are one capture: same light and clouds, different cameras.
            capture = _rng(config, site, 100)
            light, sky_seed = wr.random_light(capture), int(capture.integers(1 << 31))
            if modality is Modality.PANORAMA:
                img = wr.render_panorama(layers, x, y, q, light, sky_seed)
                images[modality] = wr.develop(img, rng, wr.STREET_CAMERA)
            else:
                heading = float(rng.uniform(0, 360))
                img = wr.render_ground(layers, x, y, q, heading, light, sky_seed)
                images[modality] = wr.develop(img, rng, wr.PHOTO_CAMERA)
                pose["ground_heading_deg"] = heading
    return images, pose


def build_city(config: WorldConfig, sites: list[Site] | None = None) -> CityMap:
    """The world's map; with its sites known, their camera positions are kept clear of trees."""
    city = CityMap(config.seed, world_side(config))
    if sites is not None:
        city.keep_clear(np.array([(s.x, s.y) for s in sites]))
    return city


def _render_chunk(
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
            fmt = EXTENSIONS.get(modality, "jpg")
            data = wr.encode(img, "png" if fmt == "png" else "jpeg", config.jpeg_quality)
            storage.write_bytes(storage.join(root, relative_uri(modality, site.location_id)), data)
        records.append({"location_id": site.location_id, **{k: round(v, 4) for k, v in pose.items()}})
    return records


def _render_all(config: WorldConfig, sites: list[Site], root: str) -> list[dict[str, Any]]:
    """One Ray task per chunk of places when Ray is already running; otherwise in this process."""
    clearings = np.array([(s.x, s.y) for s in sites])
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return _render_chunk(config, sites, clearings, root)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    size = min(64, max(4, math.ceil(len(sites) / (4 * cpus))))
    task = ray.remote(num_cpus=1)(_render_chunk)
    futures = [task.remote(config, sites[i : i + size], clearings, root) for i in range(0, len(sites), size)]
    return [record for chunk in ray.get(futures) for record in chunk]


# --- the corpus --------------------------------------------------------------------------------------------


class WorldExistsError(RefusedError, RuntimeError):
    """The output already holds a complete world made from another config."""


@dataclass(frozen=True)
class WorldSummary:
    uri: str
    counts: dict[str, int]  # images per modality, satellite tiles included
    tiles: int
    locations: int
    distractors: int
    seconds: float
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fingerprint(config: WorldConfig) -> str:
    """What decides the bytes of the corpus: the config (less where it goes) and the renderer."""
    return f"{RENDERER_VERSION}-{config_hash(config, exclude={'output', 'overwrite'})}"


def _owned_paths(root: str) -> list[str]:
    return [storage.join(root, m.value) for m in Modality] + [
        storage.join(root, name) for name in ("manifest.csv", "poses.csv")
    ]


def manifest_rows(config: WorldConfig, sites: list[Site]) -> list[dict[str, str]]:
    """One row per query; a distractor tile is a row without a query. URIs are relative."""
    rows = []
    for site in sites:
        common = {
            "tile_uri": relative_uri(Modality.SATELLITE, site.location_id),
            "location_id": site.location_id,
            "lat": f"{site.lat:.8f}",
            "lon": f"{site.lon:.8f}",
            "split": "",
        }
        if not site.queries:
            rows.append({"query_uri": "", "modality": "", **common})
            continue
        for modality in config.modalities:
            rows.append(
                {"query_uri": relative_uri(modality, site.location_id), "modality": modality.value, **common}
            )
    return rows


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _summary(root: str, meta: dict[str, Any], seconds: float, reused: bool) -> WorldSummary:
    return WorldSummary(
        uri=root,
        counts=dict(meta["counts"]),
        tiles=int(meta["tiles"]),
        locations=int(meta["locations"]),
        distractors=int(meta["distractors"]),
        seconds=seconds,
        reused=reused,
    )


def generate_world(config: WorldConfig) -> WorldSummary:
    """Render the world into `config.output`; world.json is written last and marks it complete.

    A complete world made from the same config is reused as is; one made from another config is an
    error unless `overwrite`. An incomplete one (no world.json) is always rewritten from scratch.
    """
    start = time.perf_counter()
    root = storage.normalize(config.output)
    marker = storage.join(root, "world.json")
    print_id = fingerprint(config)
    if storage.exists(marker):
        meta = storage.read_json(marker)
        if meta.get("fingerprint") == print_id:
            return _summary(root, meta, time.perf_counter() - start, reused=True)
        if not config.overwrite:
            raise WorldExistsError(
                f"{root} already holds a world made from another config (fingerprint"
                f" {meta.get('fingerprint')}, this config {print_id}); choose another output or set"
                " overwrite=true"
            )
    storage.delete(marker)  # from here on the output is incomplete until the marker is back
    for path in _owned_paths(root):
        storage.delete(path)
    city = CityMap(config.seed, world_side(config))
    sites = sample_sites(config, city)
    poses = sorted(_render_all(config, sites, root), key=lambda r: r["location_id"])
    storage.write_text(
        storage.join(root, "manifest.csv"), _csv(MANIFEST_COLUMNS, manifest_rows(config, sites))
    )
    pose_columns = ["location_id", "x_m", "y_m", "drone_azimuth_deg", "drone_pitch_deg", "ground_heading_deg"]
    storage.write_text(storage.join(root, "poses.csv"), _csv(pose_columns, poses))
    counts = {Modality.SATELLITE.value: len(sites)}
    counts.update({m.value: config.locations for m in config.modalities})
    meta = {
        "fingerprint": print_id,
        "renderer_version": RENDERER_VERSION,
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
        "counts": counts,
        "tiles": len(sites),
        "locations": config.locations,
        "distractors": config.distractors,
        "world_side_m": world_side(config),
        "metres_per_pixel": config.tile_metres / config.tile_size,
        "conventions": CONVENTIONS,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    storage.write_json(marker, meta)
    return _summary(root, meta, time.perf_counter() - start, reused=False)


CONVENTIONS = {
    "coordinates": "x east, y north, metres from the world centre = (origin_lat, origin_lon)",
    "satellite": "north-up, centred on the location, tile_metres wide",
    "streetmap": "north-up, centred on the location, tile_metres wide +-15 % zoom",
    "panorama": "equirectangular; column c looks at azimuth (c + 0.5) / width * 360 - 180 degrees clockwise"
    " from north: north at the centre, east at 3/4 width, south at both edges; row 0 = zenith",
    "ground": "90-degree pinhole, level, random heading (poses.csv), same camera as the panorama",
    "drone": "pinhole 50-degree FOV, 55-65 degrees below the horizon, random azimuth (poses.csv)",
}


# --- the non-triviality check ------------------------------------------------------------------------------


@dataclass
class BaselineResult:
    modality: str
    queries: int
    gallery: int
    recall: dict[int, float] = field(default_factory=dict)


def colour_histogram(img: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalised 3-D RGB histogram (bins^3 values) of a uint8 image."""
    q = (img.reshape(-1, 3).astype(np.int64) * bins) // 256
    flat = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    hist = np.bincount(flat, minlength=bins**3).astype(np.float64)
    return hist / hist.sum()


def histogram_similarity(queries: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """(queries x gallery) similarity: histogram intersection or negative chi-square distance."""
    out = np.empty((len(queries), len(gallery)))
    for i, q in enumerate(queries):
        if metric == "intersection":
            out[i] = np.minimum(q[None], gallery).sum(axis=1)
        elif metric == "chi2":
            out[i] = -(((q[None] - gallery) ** 2) / (q[None] + gallery + 1e-12)).sum(axis=1)
        else:
            raise ValueError(f"unknown metric {metric!r}")
    return out


def histogram_baseline(
    uri: str, metric: str = "intersection", bins: int = 8, ks: tuple[int, ...] = (1, 5)
) -> list[BaselineResult]:
    """Recall@k of matching each query to every satellite tile of a world corpus by colour histogram."""
    from PIL import Image

    root = storage.normalize(uri)
    rows = list(csv.DictReader(io.StringIO(storage.read_text(storage.join(root, "manifest.csv")))))

    def load(rel: str) -> np.ndarray:
        data = storage.read_bytes(storage.join(root, rel))
        return colour_histogram(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), bins)

    tiles = sorted({r["tile_uri"] for r in rows})
    tile_pos = {t: i for i, t in enumerate(tiles)}
    gallery = np.stack([load(t) for t in tiles])
    results = []
    for modality in dict.fromkeys(r["modality"] for r in rows if r["modality"]):
        picked = [r for r in rows if r["modality"] == modality]
        sims = histogram_similarity(np.stack([load(r["query_uri"]) for r in picked]), gallery, metric)
        truth = np.array([tile_pos[r["tile_uri"]] for r in picked])
        true_score = sims[np.arange(len(picked)), truth]
        rank = (sims > true_score[:, None]).sum(axis=1)  # ties count in the query's favour
        recall = {k: float((rank < k).mean()) for k in ks}
        results.append(BaselineResult(modality, len(picked), len(tiles), recall))
    return results
