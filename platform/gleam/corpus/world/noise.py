"""Deterministic per-position randomness: integer hashes and world-anchored value noise.

Everything random about the map is a hash of (seed, integer keys) rather than a draw from a stream, so
any point of the world can be computed alone, in any process and any order, and agrees with its
neighbours.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_K1, _K2, _K3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: turns structured integers into well-spread 64-bit values."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _u64(value: Any) -> np.ndarray:
    return np.atleast_1d(np.asarray(value)).astype(np.int64).astype(np.uint64)


def hash3(seed: int, a: Any, b: Any = 0, c: Any = 0) -> np.ndarray:
    """One 64-bit hash of up to three integer keys (arrays broadcast), salted by the world seed."""
    with np.errstate(over="ignore"):
        x = _u64(seed) * _K3 + _u64(a) * _K1 + _u64(b) * _K2 + _mix(_u64(c) + _K3)
    return _mix(x)


def unit(h: np.ndarray, slot: int) -> np.ndarray:
    """The `slot`-th (0..3) 16-bit uniform in [0, 1) packed in a hash."""
    return ((h >> np.uint64(16 * slot)) & np.uint64(0xFFFF)).astype(np.float32) / np.float32(65536.0)


def remix(h: np.ndarray, salt: int) -> np.ndarray:
    """A fresh hash derived from another, for attributes that need more than four uniforms."""
    with np.errstate(over="ignore"):
        return _mix(h ^ np.uint64(salt) * _K2)


def _lattice(seed: int, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    return unit(hash3(seed, ix, iy, 0x51), 0) * 2 - 1


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (3 - 2 * t)


def grid_noise(seed: int, xs: np.ndarray, ys: np.ndarray, scale: float) -> np.ndarray:
    """Value noise in [-1, 1] on the grid xs x ys (metres), anchored to world coordinates."""
    fx, fy = xs / scale, ys / scale
    lx, ly = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    ix = np.arange(lx.min(), lx.max() + 2)
    iy = np.arange(ly.min(), ly.max() + 2)
    lat = _lattice(seed, ix[None, :], iy[:, None]).reshape(iy.size, ix.size)
    tx, ty = _smooth((fx - lx).astype(np.float32)), _smooth((fy - ly).astype(np.float32))
    cx, cy = lx - ix[0], ly - iy[0]
    along_x = lat[:, cx] * (1 - tx) + lat[:, cx + 1] * tx
    return along_x[cy] * (1 - ty)[:, None] + along_x[cy + 1] * ty[:, None]


def point_noise(seed: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Value noise in [-1, 1] at arbitrary points (lattice spacing 1)."""
    lx, ly = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    tx, ty = _smooth((x - lx).astype(np.float32)), _smooth((y - ly).astype(np.float32))
    v00, v10 = _lattice(seed, lx, ly), _lattice(seed, lx + 1, ly)
    v01, v11 = _lattice(seed, lx, ly + 1), _lattice(seed, lx + 1, ly + 1)
    return (v00 * (1 - tx) + v10 * tx) * (1 - ty) + (v01 * (1 - tx) + v11 * tx) * ty
