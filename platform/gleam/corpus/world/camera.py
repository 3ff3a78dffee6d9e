"""The sensor after the scene: each capture's exposure, colour response and noise, and the file encoding.

A learned model must see past these; colour statistics that differ between two captures of the same
place are what keep a colour histogram from solving the corpus.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


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
