"""Light on the synthetic world: sun and sky of a capture, cast shadows, irradiance, facade detail.

What differs between two views of a place is what a real capture would change (time of day, weather,
viewpoint), so each view gets its own `Light`; the surfaces it falls on are the same `Layers`.
Azimuths are degrees clockwise from north.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gleam.corpus.world.layers import BUILDING, TREE, Layers
from gleam.corpus.world.noise import point_noise


@dataclass(frozen=True)
class Light:
    """Sun, sky and atmosphere of one capture."""

    azimuth: float  # degrees clockwise from north, towards the sun
    elevation: float
    sun: tuple[float, float, float]
    ambient: tuple[float, float, float]
    zenith: tuple[float, float, float]
    horizon: tuple[float, float, float]
    haze: tuple[float, float, float]
    visibility: float  # metres at which the haze reaches 1 - 1/e
    clouds: float  # cloud cover in [0, 1]

    @property
    def direction(self) -> np.ndarray:
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        return np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])

    @property
    def strength(self) -> float:
        """Direct light normalised so that flat ground under a high sun gets about 1 in total."""
        return 0.62 / max(math.sin(math.radians(self.elevation)), 0.6)


def random_light(rng: np.random.Generator) -> Light:
    """A random time of day and weather for a ground-level or drone capture."""
    if rng.random() < 0.15:  # overcast: no direct sun, no shadows, grey sky
        g = float(rng.uniform(0.7, 0.85))
        visibility = float(rng.uniform(120, 300))
        return Light(
            0.0,
            45.0,
            (0, 0, 0),
            (1.0, 1.0, 1.02),
            (g, g, g + 0.02),
            (g + 0.08,) * 3,
            (g,) * 3,
            visibility,
            0.0,
        )
    el = float(rng.uniform(12, 65))
    warm = min(max((28 - el) / 16, 0.0), 1.0)
    amb = float(rng.uniform(0.32, 0.45))
    horizon = np.array([0.78, 0.84, 0.92]) * (1 - warm) + np.array([0.98, 0.8, 0.62]) * warm
    haze = horizon * 0.92
    return Light(
        azimuth=float(rng.uniform(0, 360)),
        elevation=el,
        sun=(1.0, 0.96 - 0.16 * warm, 0.9 - 0.35 * warm),
        ambient=(amb * 0.9, amb * 0.95, amb * 1.1),
        zenith=tuple(np.array([0.22, 0.42, 0.82]) * rng.uniform(0.8, 1.1)),
        horizon=tuple(horizon),
        haze=tuple(haze),
        visibility=float(rng.uniform(180, 700)),
        clouds=float(rng.uniform(0, 0.75)),
    )


def satellite_light(rng: np.random.Generator, azimuth: float, elevation: float) -> Light:
    """The world's satellite pass: a mid-morning sun, jittered a little per tile."""
    return Light(
        azimuth=azimuth + float(rng.uniform(-8, 8)),
        elevation=elevation + float(rng.uniform(-5, 5)),
        sun=(1.0, 0.98, 0.94),
        ambient=(0.36, 0.39, 0.45),
        zenith=(0.3, 0.5, 0.85),
        horizon=(0.8, 0.85, 0.9),
        haze=(0.72, 0.76, 0.8),
        visibility=1e9,
        clouds=0.0,
    )


def shadow_mask(layers: Layers, light: Light) -> np.ndarray:
    """1 where the sun is visible, 0 in cast shadow; computed at half resolution, softened."""
    n = layers.size
    if max(light.sun) == 0:
        return np.ones((n, n), dtype=np.float32)
    m = n // 2
    h = layers.height[: 2 * m, : 2 * m].reshape(m, 2, m, 2).max(axis=(1, 3))
    res = layers.res * 2
    rise = math.tan(math.radians(light.elevation)) * res
    az = math.radians(light.azimuth)
    d_col, d_row = math.sin(az), -math.cos(az)
    steps = int(min(math.ceil(float(h.max()) / rise), m)) if h.max() > 0 else 0
    occluder = np.full((m, m), -np.inf, dtype=np.float32)
    last = (0, 0)
    for k in range(1, steps + 1):
        dr, dc = round(k * d_row), round(k * d_col)
        if (dr, dc) == last:
            continue
        last = (dr, dc)
        src = h[max(dr, 0) : m + min(dr, 0), max(dc, 0) : m + min(dc, 0)] - np.float32(k * rise)
        dst = occluder[max(-dr, 0) : m + min(-dr, 0), max(-dc, 0) : m + min(-dc, 0)]
        np.maximum(dst, src, out=dst)
    lit = (occluder <= h + 0.3).astype(np.float32)
    lit = (lit + np.roll(lit, 1, 0) + np.roll(lit, 1, 1) + np.roll(np.roll(lit, 1, 0), 1, 1)) / 4
    full = np.ones((n, n), dtype=np.float32)
    full[: 2 * m, : 2 * m] = np.repeat(np.repeat(lit, 2, axis=0), 2, axis=1)
    return full


def top_irradiance(layers: Layers, light: Light) -> np.ndarray:
    """Light reaching upward-facing surfaces: sky ambient plus hill-shaded, shadowed sun."""
    gx, gy = layers.gradient()
    lx, ly, lz = light.direction
    ndotl = (-gx * lx - gy * ly + lz) / np.sqrt(1 + gx * gx + gy * gy)
    direct = np.clip(ndotl, 0, None) * shadow_mask(layers, light) * light.strength
    return (
        np.asarray(light.ambient, np.float32) + direct[..., None] * np.asarray(light.sun, np.float32)
    ).astype(np.float32)


def lit(layers: Layers, light: Light, under_trees: bool = False) -> np.ndarray:
    """Albedo x irradiance of the upward surfaces under one light (cached: views share lights).

    `under_trees` gives the ground below the crowns (in their shade), as seen from the street."""
    albedo = layers.ground_top if under_trees else layers.top
    return layers.cached((light, under_trees), lambda: albedo * top_irradiance(layers, light))


def wall_irradiance(nx: np.ndarray, ny: np.ndarray, light: Light) -> np.ndarray:
    """Light on vertical faces with outward horizontal normals (nx, ny)."""
    lx, ly, _ = light.direction
    direct = np.clip(nx * lx + ny * ly, 0, None) * light.strength
    return np.asarray(light.ambient, np.float32) * 0.95 + direct[..., None] * np.asarray(
        light.sun, np.float32
    )


def wall_normals(
    layers: Layers, idx: np.ndarray, view_x: np.ndarray, view_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Outward normals at wall pixels (downhill direction); facing the viewer where flat."""
    gx, gy = layers.wall_gradient()
    nx, ny = -gx.ravel()[idx], -gy.ravel()[idx]
    norm = np.hypot(nx, ny)
    flat = norm < 0.5
    nx = np.where(flat, -view_x, nx / np.maximum(norm, 1e-6))
    ny = np.where(flat, -view_y, ny / np.maximum(norm, 1e-6))
    return nx, ny


def facade(rgb: np.ndarray, z: np.ndarray, phase: np.ndarray, top_h: np.ndarray, label: np.ndarray,
           sky: np.ndarray) -> np.ndarray:  # fmt: skip
    """Detail on vertical faces, a function of (position along the wall, height) so every view agrees:
    windows (storeys of 3.2 m, bays of 2.8 m) and weathering on buildings, leaves on tree crowns."""
    building, tree = label == BUILDING, label == TREE
    fz, fp = (z / 3.2) % 1.0, (phase / 2.8) % 1.0
    win = building & (fz > 0.3) & (fz < 0.78) & (fp > 0.22) & (fp < 0.78) & (z > 0.9) & (z < top_h - 0.6)
    glass = np.float32(0.12) + 0.25 * sky
    rgb = np.where(win[..., None], rgb * 0.2 + glass * 0.8, rgb)
    grain = np.where(tree, 0.25, 0.06) * point_noise(4242, phase / np.where(tree, 0.7, 2.0), z / 0.9)
    lower = np.where(tree, 0.55 + 0.45 * np.clip(z / (0.75 * np.maximum(top_h, 0.1)), 0, 1), 1.0)
    return rgb * ((1 + grain) * lower)[..., None].astype(np.float32)
