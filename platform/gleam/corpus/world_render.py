"""Renderers of the synthetic world: one north-up map crop in, one image per modality out.

Every view of a location is computed from the same `Layers` (label, height, colours of a square crop
around it), so the views agree geometrically; what differs between them is what a real sensor would
change: the viewpoint, the light (time of day, weather), the camera's colour response and noise. That
is what makes the corpus need a learned model rather than colour statistics.

All images are float32 RGB in [0, 1] until `develop` turns them into uint8. Azimuths are degrees
clockwise from north; world x is east, y north; crop row 0 is the northern edge.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

# Surface labels of the map (uint8).
BARE, GRASS, ROAD, MAJOR, SIDEWALK, BUILDING, TREE, WATER, PARKING, PAVED = range(10)
CAMERA_HEIGHT_M = 2.5
CROWN_BASE = 0.4  # tree crowns start at this fraction of the tree's height
TRUNK_RGB = np.array([0.3, 0.22, 0.15], dtype=np.float32)
GROUND_FOV_DEG = 90.0
DRONE_FOV_DEG = 50.0


# --- hashing: deterministic per-position randomness --------------------------------------------------------

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


# --- the map crop a place is rendered from -----------------------------------------------------------------


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

    def index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat pixel index of world points and whether they fall inside the crop."""
        n = self.size
        col = np.floor((x - self.x0) / self.res).astype(np.int64)
        row = np.floor((self.y0 - y) / self.res).astype(np.int64)
        inside = (col >= 0) & (col < n) & (row >= 0) & (row < n)
        return np.where(inside, row * n + col, 0), inside

    def gradient(self) -> tuple[np.ndarray, np.ndarray]:
        """(dh/dx east, dh/dy north), clipped so walls read as steep slopes, not infinities."""
        if "grad" not in self._cache:
            g_row, g_col = np.gradient(self.height, self.res)
            self._cache["grad"] = np.stack([np.clip(g_col, -4, 4), np.clip(-g_row, -4, 4)])
        gx, gy = self._cache["grad"]
        return gx, gy

    def wall_gradient(self) -> tuple[np.ndarray, np.ndarray]:
        """The gradient of a 5x5-smoothed height: wall normals without pixel staircases."""
        if "wall_grad" not in self._cache:
            h = self.height
            for axis in (0, 1):
                p = np.pad(h, [(2, 2) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
                h = sum(np.take(p, range(i, i + self.size), axis=axis) for i in range(5)) / 5
            g_row, g_col = np.gradient(h, self.res)
            self._cache["wall_grad"] = np.stack([g_col, -g_row])
        gx, gy = self._cache["wall_grad"]
        return gx, gy

    def lit(self, light: Light, under_trees: bool = False) -> np.ndarray:
        """Albedo x irradiance of the upward surfaces under one light (cached: views share lights).

        `under_trees` gives the ground below the crowns (in their shade), as seen from the street."""
        key = (light, under_trees)
        if key not in self._cache:
            albedo = self.ground_top if under_trees else self.top
            self._cache[key] = albedo * top_irradiance(self, light)
        return self._cache[key]

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


# --- noise -------------------------------------------------------------------------------------------------


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


# --- light -------------------------------------------------------------------------------------------------


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


# --- camera ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    """How strongly a sensor's colour response varies between captures."""

    exposure: float
    balance: float
    saturation: tuple[float, float]
    gamma: tuple[float, float]
    noise: float
    vignette: float = 0.0


SATELLITE_CAMERA = Camera(0.06, 0.03, (0.9, 1.1), (0.95, 1.05), 0.012)
DRONE_CAMERA = Camera(0.15, 0.06, (0.7, 1.3), (0.85, 1.15), 0.02)
STREET_CAMERA = Camera(0.18, 0.07, (0.7, 1.3), (0.85, 1.15), 0.02)
PHOTO_CAMERA = Camera(0.2, 0.08, (0.6, 1.35), (0.85, 1.2), 0.03, vignette=0.35)


def develop(img: np.ndarray, rng: np.random.Generator, camera: Camera) -> np.ndarray:
    """Exposure, white balance, saturation, tone curve, vignetting and sensor noise -> uint8."""
    gain = math.exp(rng.normal(0, camera.exposure))
    balance = (1 + rng.normal(0, camera.balance, 3)).astype(np.float32)
    img = img.astype(np.float32) * np.float32(gain) * balance
    grey = img.mean(axis=-1, keepdims=True)
    img = grey + (img - grey) * np.float32(rng.uniform(*camera.saturation))
    img = np.clip(img, 0, 1) ** np.float32(rng.uniform(*camera.gamma))
    if camera.vignette:
        h, w = img.shape[:2]
        ry, rx = np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32)
        img *= (1 - camera.vignette * 0.5 * (ry[:, None] ** 2 + rx[None, :] ** 2))[..., None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(camera.noise)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def encode(img: np.ndarray, fmt: str, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(img).save(buf, format="PNG", optimize=False)
    else:
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# --- satellite ---------------------------------------------------------------------------------------------


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


# --- drone -------------------------------------------------------------------------------------------------


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
    colour = layers.bilinear(layers.lit(light), hits.x[ok], hits.y[ok])
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


# --- street level: panorama and ground photo ---------------------------------------------------------------


@lru_cache(maxsize=16)
def _distances(res: float, far: float) -> np.ndarray:
    """Sample distances along a ground ray: dense near the camera, about 1 % of the range further out."""
    d, out = 0.25 * res, []
    while d < far:
        out.append(d)
        d += max(0.5 * res, 0.012 * d)
    return np.array(out)


def _sky(light: Light, az: np.ndarray, el: np.ndarray, seed: int) -> np.ndarray:
    """Sky gradient with clouds on a plane 1 km up, so cloud shapes agree between views of a capture."""
    e = np.clip(el, 0, 90)
    k = np.sqrt(e / 90.0)[..., None].astype(np.float32)
    rgb = np.asarray(light.horizon, np.float32) * (1 - k) + np.asarray(light.zenith, np.float32) * k
    if light.clouds > 0:
        reach = 1000.0 / np.tan(np.radians(np.clip(el, 2.0, 90.0)))
        px, py = np.sin(np.radians(az)) * reach / 400.0, np.cos(np.radians(az)) * reach / 400.0
        n = 0.65 * point_noise(seed, px, py) + 0.35 * point_noise(seed + 1, px * 2.7, py * 2.7)
        cover = np.clip((n * 0.5 + 0.5 - (1 - light.clouds)) / 0.25, 0, 1)
        cover *= np.clip(el / 4.0, 0, 1)
        cloud = np.float32(0.92) * np.asarray(light.horizon, np.float32) ** 0.3
        rgb = rgb * (1 - cover[..., None]) + cloud * cover[..., None]
    return rgb.astype(np.float32)


@dataclass
class StreetHits:
    """What each pixel of a street-level view sees: a solid sample along its column, a crown, or sky."""

    hit: np.ndarray  # (rows, cols) bool: a solid column (ground, building, trunk) was reached
    pix: np.ndarray  # (rows, cols) flat crop index of the solid sample
    dist: np.ndarray  # (rows, cols) horizontal distance of the solid sample (m)
    wall: np.ndarray  # (rows, cols) bool: the sample is the vertical face of a column
    height: np.ndarray  # (rows, cols) height of the sample's column (m)
    step: np.ndarray  # (rows, cols) spacing of the samples around it (m)
    crown: np.ndarray  # (rows, cols) bool: a tree crown in front of the solid sample
    crown_pix: np.ndarray  # (rows, cols) flat crop index where the pixel's ray enters the crown
    crown_dist: np.ndarray  # (rows, cols) horizontal distance of that entry (m)

    @property
    def seen(self) -> np.ndarray:
        """Pixels that show the world rather than the sky."""
        return self.hit | self.crown


def street_hits(layers: Layers, cx: float, cy: float, azimuth: np.ndarray, slopes: np.ndarray) -> StreetHits:
    """Column ray cast from a street-level camera: exact for vertical walls under any projection.

    `azimuth` gives each image column's direction (degrees clockwise from north), `slopes` (rows, cols)
    the tangent of each pixel's elevation. Along each column the running maximum of (h - camera height)
    / distance is the horizon seen so far; a pixel shows the first sample whose horizon reaches it.
    Tree crowns float above the ground (2.5-D slabs in front of the solid scene).
    """
    far = (layers.size / 2 - 1) * layers.res
    d = _distances(layers.res, far)
    rows, cols = slopes.shape
    az = np.radians(azimuth)
    idx, _ = layers.index(cx + np.sin(az)[:, None] * d[None, :], cy + np.cos(az)[:, None] * d[None, :])
    h = layers.solid.ravel()[idx]  # (cols, K)
    horizon = np.maximum.accumulate(np.clip((h - CAMERA_HEIGHT_M) / d[None, :], -1e3, 1e3), axis=1)
    k_count = d.size
    offset = (np.arange(cols) * 4e3)[:, None]  # one sorted array for all columns: one searchsorted call
    queries = np.clip(slopes, -999.0, 999.0).T + offset
    pos = np.searchsorted((horizon + offset).ravel(), queries.ravel(), side="left")
    k = pos.reshape(cols, rows).T - np.arange(cols)[None, :] * k_count
    kk = np.minimum(k, k_count - 1)
    col_ix = np.broadcast_to(np.arange(cols)[None, :], kk.shape)
    step = np.diff(d, prepend=0.0)
    jump = np.diff(h, axis=1, prepend=0.0) > np.maximum(0.6, step)[None, :]
    crown, crown_k = _crowns(layers, idx, d, slopes, k)
    return StreetHits(
        hit=k < k_count,
        pix=idx[col_ix, kk],
        dist=d[kk],
        wall=jump[col_ix, kk],
        height=h[col_ix, kk],
        step=step[kk],
        crown=crown,
        crown_pix=idx[col_ix, crown_k],
        crown_dist=d[crown_k],
    )


def _crowns(
    layers: Layers, idx: np.ndarray, d: np.ndarray, slopes: np.ndarray, solid_k: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest crown in front of each pixel's solid sample. Each run of tree samples along a column
    is one crown: it covers the slopes from its lowest base to its highest top over the run (crowns
    float from CROWN_BASE of their height), and is shaded where the ray enters it."""
    cols, k_count = idx.shape
    tree = layers.label.ravel()[idx] == TREE
    none = np.zeros(slopes.shape, bool), np.zeros(slopes.shape, np.int64)
    if not tree.any():
        return none
    starts = tree & ~np.concatenate([np.zeros((cols, 1), bool), tree[:, :-1]], axis=1)
    run = (np.cumsum(starts.ravel()) - 1)[tree.ravel()]  # run id of every tree sample
    crown_h = layers.height.ravel()[idx][tree]
    dist = np.broadcast_to(d[None, :], idx.shape)[tree]
    n_runs = int(starts.sum())
    hi, lo = np.full(n_runs, -np.inf), np.full(n_runs, np.inf)
    np.maximum.at(hi, run, (crown_h - CAMERA_HEIGHT_M) / dist)
    np.minimum.at(lo, run, (CROWN_BASE * crown_h - CAMERA_HEIGHT_M) / dist)
    # Lay the runs out as (column, slot) so every pixel tests only its own column's runs.
    width = int(starts.sum(axis=1).max())
    slot = np.cumsum(starts, axis=1) - 1
    c_ix, k_ix = np.nonzero(starts)
    run_k = np.full((cols, width), k_count, dtype=np.int64)
    run_lo, run_hi = np.full((cols, width), np.inf), np.full((cols, width), -np.inf)
    run_k[c_ix, slot[c_ix, k_ix]] = k_ix
    run_lo[c_ix, slot[c_ix, k_ix]] = lo
    run_hi[c_ix, slot[c_ix, k_ix]] = hi
    s = slopes[..., None]
    inside = (s >= run_lo[None]) & (s <= run_hi[None]) & (run_k[None] < solid_k[..., None])
    first = np.argmax(inside, axis=-1)
    col_ix = np.broadcast_to(np.arange(cols)[None, :], first.shape)
    return inside.any(axis=-1), np.minimum(run_k[col_ix, first], k_count - 1)


def render_street(
    layers: Layers, cx: float, cy: float, azimuth: np.ndarray, slopes: np.ndarray, light: Light, sky_seed: int
) -> np.ndarray:
    """Shade a street-level view: lit ground and roofs, facades, trees, haze with distance, sky."""
    hits = street_hits(layers, cx, cy, azimuth, slopes)
    out = np.empty((*slopes.shape, 3), dtype=np.float32)
    az = np.radians(np.broadcast_to(azimuth[None, :], slopes.shape))
    haze = np.asarray(light.haze, np.float32)
    sky_rgb = np.asarray(light.horizon, np.float32)

    seen = hits.hit & ~hits.wall
    sl, dist, h_hit = slopes[seen], hits.dist[seen], hits.height[seen]
    # Surfaces seen from above: intersect the pixel's ray with the sample's top exactly, sample smoothly.
    down = (sl < -1e-6) & (h_hit < CAMERA_HEIGHT_M)
    d_top = np.where(down, (h_hit - CAMERA_HEIGHT_M) / np.minimum(sl, -1e-6), dist)
    d_top = np.clip(d_top, dist - hits.step[seen], dist + hits.step[seen])
    vx, vy = np.sin(az[seen]), np.cos(az[seen])
    out[seen] = layers.bilinear(layers.lit(light, under_trees=True), cx + vx * d_top, cy + vy * d_top)

    wall = hits.hit & hits.wall
    pix, vx, vy = hits.pix[wall], np.sin(az[wall]), np.cos(az[wall])
    nx, ny = wall_normals(layers, pix, vx, vy)
    label = layers.label.ravel()[pix]
    albedo = np.where((label == TREE)[:, None], TRUNK_RGB, layers.wall.reshape(-1, 3)[pix])
    z = CAMERA_HEIGHT_M + hits.dist[wall] * slopes[wall]
    out[wall] = facade(albedo * wall_irradiance(nx, ny, light), z, layers.phase.ravel()[pix],
                       hits.height[wall], np.where(label == TREE, 0, label), sky_rgb)  # fmt: skip

    crown = hits.crown
    pix, vx, vy = hits.crown_pix[crown], np.sin(az[crown]), np.cos(az[crown])
    nx, ny = wall_normals(layers, pix, vx, vy)
    z = CAMERA_HEIGHT_M + hits.crown_dist[crown] * slopes[crown]
    rgb = layers.wall.reshape(-1, 3)[pix] * wall_irradiance(nx, ny, light)
    out[crown] = facade(rgb, z, layers.phase.ravel()[pix], layers.height.ravel()[pix],
                        np.full(pix.shape, TREE), sky_rgb)  # fmt: skip

    distance = np.where(crown, hits.crown_dist, hits.dist)
    near = hits.seen
    fog = (1 - np.exp(-distance[near] / light.visibility))[:, None].astype(np.float32)
    out[near] = out[near] * (1 - fog) + haze * fog
    far_ground = ~near & (slopes < 0)
    out[far_ground] = haze
    sky = ~near & (slopes >= 0)
    out[sky] = _sky(light, np.degrees(az[sky]), np.degrees(np.arctan(slopes[sky])), sky_seed)
    return out


def panorama_angles(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular grid: column c looks at azimuth (c + 0.5) / width * 360 - 180 (north at the centre,
    east at three quarters), row r at elevation 90 - (r + 0.5) / height * 180 degrees."""
    azimuth = (np.arange(width) + 0.5) / width * 360.0 - 180.0
    elevation = 90.0 - (np.arange(height) + 0.5) / height * 180.0
    return azimuth, elevation


def render_panorama(
    layers: Layers, cx: float, cy: float, size: int, light: Light, sky_seed: int
) -> np.ndarray:
    """A north-aligned 360-degree equirectangular panorama, 2*size x size, from 2.5 m above the street."""
    azimuth, elevation = panorama_angles(2 * size, size)
    slopes = np.tan(np.radians(np.clip(elevation, -89.9, 89.9)))[:, None] * np.ones((1, 2 * size))
    return render_street(layers, cx, cy, azimuth, slopes, light, sky_seed)


def render_ground(
    layers: Layers, cx: float, cy: float, size: int, heading: float, light: Light, sky_seed: int
) -> np.ndarray:
    """A level pinhole photo (90-degree field of view) from the panorama's camera, facing `heading`."""
    focal = size / 2 / math.tan(math.radians(GROUND_FOV_DEG) / 2)
    t = np.arange(size) + 0.5 - size / 2
    offset = np.degrees(np.arctan(t / focal))
    slopes = -t[:, None] / focal * np.cos(np.radians(offset))[None, :]
    return render_street(layers, cx, cy, heading + offset, slopes, light, sky_seed)
