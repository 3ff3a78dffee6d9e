"""Street-level views from 2.5 m above a place: the 360-degree panorama and the pinhole ground photo.

Both are one column ray cast through the height field, exact for vertical walls under any projection;
they differ only in which azimuth and elevation each pixel looks at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from gleam.corpus.world.layers import CROWN_BASE, TREE, Layers
from gleam.corpus.world.noise import point_noise
from gleam.corpus.world.shading import Light, facade, lit, wall_irradiance, wall_normals

CAMERA_HEIGHT_M = 2.5
TRUNK_RGB = np.array([0.3, 0.22, 0.15], dtype=np.float32)
GROUND_FOV_DEG = 90.0


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
    out[seen] = layers.bilinear(lit(layers, light, under_trees=True), cx + vx * d_top, cy + vy * d_top)

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
