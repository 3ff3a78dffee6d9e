"""Buildings of the synthetic city: blocks split into lots, one footprint per lot, its height and colours.

Every attribute is a hash of the block and lot indices, so a building is the same whichever crop asks
for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gleam.corpus.world.noise import hash3, remix, unit
from gleam.corpus.world.styles import (
    COURTYARD_P,
    DOWNTOWN,
    GABLE_P,
    HEIGHT,
    L_SHAPE_P,
    LOT_W,
    PLASTERS,
    ROOFS,
    SETBACK,
    STYLE_ROOFS,
)


@dataclass
class Blocks:
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

    def take(self, idx: np.ndarray) -> Blocks:
        return Blocks(*(getattr(self, f)[idx] for f in Blocks.__dataclass_fields__))


@dataclass
class Lot:
    """Per building point: (fa, fb) position in the footprint rectangle in [0, 1), its size, hashes."""

    style: np.ndarray
    fa: np.ndarray
    fb: np.ndarray
    dim_a: np.ndarray
    dim_b: np.ndarray
    h1: np.ndarray
    h2: np.ndarray
    h3: np.ndarray


def lots(seed: int, p: Blocks) -> Lot:
    """Split each block into 1-2 rows of lots of the district's lot width; set back each building."""
    s = p.style
    lot_w = LOT_W[s, 0] + (LOT_W[s, 1] - LOT_W[s, 0]) * unit(p.hash, 1)
    nu = np.maximum(1, np.floor(p.size_a / lot_w))
    nv = np.where(p.size_b >= 1.7 * lot_w, 2.0, 1.0)
    la_size, lb_size = p.size_a / nu, p.size_b / nv
    iu = np.clip(np.floor(p.a / la_size), 0, nu - 1)
    iv = np.clip(np.floor(p.b / lb_size), 0, nv - 1)
    la, lb = p.a - iu * la_size, p.b - iv * lb_size
    h1 = hash3(seed, p.hash.astype(np.int64) & 0x7FFFFFFF, iu.astype(np.int64), iv.astype(np.int64))
    sb_lo, sb_rng = SETBACK[s, 0], SETBACK[s, 1] - SETBACK[s, 0]
    m = [np.minimum(sb_lo + sb_rng * unit(h1, i), 0.25 * (la_size if i < 2 else lb_size)) for i in range(4)]
    dim_a, dim_b = np.maximum(la_size - m[0] - m[1], 1e-3), np.maximum(lb_size - m[2] - m[3], 1e-3)
    return Lot(s, (la - m[0]) / dim_a, (lb - m[2]) / dim_b, dim_a, dim_b, h1, remix(h1, 1), remix(h1, 2))


def footprint(lot: Lot) -> np.ndarray:
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


def building_height(lot: Lot) -> np.ndarray:
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


def building_colours(lot: Lot) -> tuple[np.ndarray, np.ndarray]:
    """Roof from the district's palette with a per-building tint; facade = 30 % roof + 70 % plaster."""
    h5 = remix(lot.h1, 4)
    palette = STYLE_ROOFS[lot.style, (unit(lot.h2, 1) * STYLE_ROOFS.shape[1]).astype(np.int64)]
    tint = (np.stack([unit(h5, i) for i in range(3)], axis=1) - 0.5) * 0.09
    roof = np.clip(ROOFS[palette] + tint + (unit(h5, 3)[:, None] - 0.5) * 0.08, 0, 1)
    plaster = PLASTERS[(unit(lot.h2, 2) * len(PLASTERS)).astype(np.int64)]
    return roof, 0.3 * roof + 0.7 * plaster
