"""The drone view: an oblique pinhole camera looking down at a place, ray-marched through the height field."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gleam.corpus.world.layers import Layers
from gleam.corpus.world.shading import Light, facade, lit, wall_irradiance, wall_normals

DRONE_FOV_DEG = 50.0


@dataclass
class _Hits:
    idx: np.ndarray  # flat crop index of the hit, -1 where the ray left the crop
    dist: np.ndarray  # 3-D distance from the camera
    z: np.ndarray  # height of the hit point
    wall: np.ndarray  # True where the ray entered a column through its side
    x: np.ndarray  # world position of the hit
    y: np.ndarray


def _march(layers: Layers, origin: np.ndarray, dirs: np.ndarray, chunk: int = 12) -> _Hits:
    """Cast descending rays through the height field: coarse steps, then bisection at the crossing."""
    res, flat_h = layers.res, layers.height.ravel()
    ox, oy, oz = origin
    dh = np.hypot(dirs[:, 0], dirs[:, 1])
    ux, uy, g = dirs[:, 0] / dh, dirs[:, 1] / dh, -dirs[:, 2] / dh  # g: drop per horizontal metre
    zmax = float(layers.height.max()) + 0.5
    s0 = np.clip((oz - zmax) / g, 0, None)
    s1 = oz / g + res
    step = 1.2 * res
    n = len(dirs)
    hit_lo, hit_hi = np.zeros(n), np.full(n, np.nan)
    active = np.arange(n)
    offs = np.arange(1, chunk + 1) * step
    base = s0.copy()

    def height_at(s: np.ndarray, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx, inside = layers.index(ox + s * ux[rays], oy + s * uy[rays])
        return np.where(inside, flat_h[idx], -1e9), idx

    while active.size:
        s = base[active, None] + offs[None, :]
        h, _ = height_at(s, active[:, None])
        hit = (oz - s * g[active, None]) <= h
        has = hit.any(axis=1)
        first = np.argmax(hit, axis=1)
        rays = active[has]
        hit_hi[rays] = s[has, first[has]]
        hit_lo[rays] = hit_hi[rays] - step
        base[active] = s[:, -1]
        active = active[~has & (s[:, -1] < s1[active])]
    found = np.flatnonzero(~np.isnan(hit_hi))
    lo, hi = hit_lo[found], hit_hi[found]
    for _ in range(4):  # bisection: lo stays above the surface, hi below
        mid = (lo + hi) / 2
        h, _ = height_at(mid, found)
        below = (oz - mid * g[found]) <= h
        hi, lo = np.where(below, mid, hi), np.where(below, lo, mid)
    h_hi, idx = height_at(hi, found)
    z_lo = oz - lo * g[found]
    out = _Hits(np.full(n, -1), np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n), np.zeros(n))
    out.idx[found] = idx
    out.x[found] = ox + hi * ux[found]
    out.y[found] = oy + hi * uy[found]
    out.z[found] = oz - hi * g[found]
    out.dist[found] = hi * np.sqrt(1 + g[found] ** 2)
    out.wall[found] = z_lo <= h_hi
    return out


def render_drone(
    layers: Layers, cx: float, cy: float, size: int, extent_m: float, light: Light, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, float]]:
    """An oblique view of the location from a random azimuth, 55-65 degrees below the horizon."""
    azimuth, pitch = float(rng.uniform(0, 360)), float(rng.uniform(55, 65))
    a, p = math.radians(azimuth), math.radians(pitch)
    fwd = np.array([math.sin(a) * math.cos(p), math.cos(a) * math.cos(p), -math.sin(p)])
    right = np.array([math.cos(a), -math.sin(a), 0.0])
    up = np.cross(right, fwd)
    distance = 0.85 * extent_m
    origin = np.array([cx, cy, 0.0]) - distance * fwd
    focal = size / 2 / math.tan(math.radians(DRONE_FOV_DEG) / 2)
    t = np.arange(size) + 0.5 - size / 2
    dirs = fwd * focal + right * t[None, :, None] - up * t[:, None, None]
    dirs = dirs.reshape(-1, 3)
    hits = _march(layers, origin, dirs)
    img = _shade_hits(layers, hits, dirs, light)
    return img.reshape(size, size, 3), {"drone_azimuth_deg": azimuth, "drone_pitch_deg": pitch}


def _shade_hits(layers: Layers, hits: _Hits, dirs: np.ndarray, light: Light) -> np.ndarray:
    ok = hits.idx >= 0
    idx = hits.idx[ok]
    colour = layers.bilinear(lit(layers, light), hits.x[ok], hits.y[ok])
    wall = hits.wall[ok]
    dh = np.hypot(dirs[ok, 0], dirs[ok, 1])
    nx, ny = wall_normals(layers, idx, dirs[ok, 0] / dh, dirs[ok, 1] / dh)
    wall_rgb = layers.wall.reshape(-1, 3)[idx] * wall_irradiance(nx, ny, light)
    sky = np.asarray(light.horizon, np.float32)
    label, top_h = layers.label.ravel()[idx], layers.height.ravel()[idx]
    wall_rgb = facade(wall_rgb, hits.z[ok], layers.phase.ravel()[idx], top_h, label, sky)
    colour = np.where(wall[:, None], wall_rgb, colour)
    out = np.empty((len(dirs), 3), dtype=np.float32)
    fog = (1 - np.exp(-hits.dist[ok] / (light.visibility * 3)))[:, None].astype(np.float32)
    out[ok] = colour * (1 - fog) + fog * np.asarray(light.haze, np.float32)
    out[~ok] = np.asarray(light.haze, np.float32)
    return out
