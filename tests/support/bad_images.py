"""Builders for every kind of image a real corpus contains, good and bad, as bytes.

Headers of oversized images are written by hand (struct + zlib), so a "100,000 x 100,000 pixel" PNG
costs a few bytes here, exactly like a real decompression bomb does.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def photo(size: tuple[int, int] = (96, 64), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    gradient = np.linspace(0, 255, w, dtype=np.float64)[None, :, None].repeat(h, 0).repeat(3, 2)
    noise = rng.integers(0, 60, (h, w, 3))
    return Image.fromarray(np.clip(gradient * 0.7 + noise, 0, 255).astype(np.uint8), "RGB")


def jpeg(size: tuple[int, int] = (96, 64), seed: int = 0) -> bytes:
    return _encode(photo(size, seed), "JPEG", quality=90)


def truncated_jpeg(seed: int = 0) -> bytes:
    data = jpeg((128, 128), seed)
    return data[: len(data) // 2]


def corrupt_jpeg(seed: int = 0) -> bytes:
    """A valid JPEG header followed by garbage: identifies as JPEG, fails to decode."""
    data = bytearray(jpeg((128, 128), seed))
    rng = np.random.default_rng(seed)
    start = 200
    data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    return bytes(data)


def png_with_alpha(size: tuple[int, int] = (64, 64)) -> bytes:
    """Left half opaque red, right half fully transparent (must come out white)."""
    w, h = size
    rgba = np.zeros((h, w, 4), dtype=np.uint8)
    rgba[:, : w // 2] = (255, 0, 0, 255)
    rgba[:, w // 2 :] = (0, 0, 255, 0)
    return _encode(Image.fromarray(rgba, "RGBA"), "PNG")


def grayscale_jpeg(size: tuple[int, int] = (64, 64)) -> bytes:
    return _encode(photo(size).convert("L"), "JPEG")


def cmyk_jpeg(size: tuple[int, int] = (64, 64)) -> bytes:
    return _encode(photo(size).convert("CMYK"), "JPEG")


def png_16bit_gray(size: tuple[int, int] = (64, 64)) -> bytes:
    """A 16-bit grayscale ramp 0..65535 (PIL's plain convert would clip it to white)."""
    w, h = size
    ramp = np.linspace(0, 65535, w, dtype=np.uint16)[None, :].repeat(h, 0)
    return _encode(Image.fromarray(ramp), "PNG")


def palette_png(size: tuple[int, int] = (64, 64)) -> bytes:
    return _encode(photo(size).convert("P"), "PNG")


def exif_rotated_jpeg(size: tuple[int, int] = (96, 48)) -> bytes:
    """Stored landscape with EXIF orientation 6 (rotate 90 degrees CW): displays as portrait."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(photo(size), "JPEG", exif=exif.tobytes())


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is a few bytes: a decompression bomb."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tiny_jpeg() -> bytes:
    return jpeg((8, 8))


def text_file() -> bytes:
    return b"These are notes about the survey flight, not an image.\n"
