"""process_image: every kind of input a real corpus holds gets an image or a stable reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gleam.corpus.config import ImageLimits
from gleam.corpus.images import prepared_gsd, process_image
from tests.support import bad_images

LIMITS = ImageLimits(min_side=16, max_side=30_000, max_pixels=50_000_000)
TARGET = (48, 32)


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_file"),
        (bad_images.text_file(), "not_an_image"),
        (bad_images.truncated_jpeg(), "decode_error"),
        (bad_images.corrupt_jpeg(), "decode_error"),
        (bad_images.tiny_jpeg(), "too_small"),
        (bad_images.png_header_only(100_000, 100_000), "pixel_limit"),
        (bad_images.png_header_only(40_000, 40), "too_large"),
    ],
    ids=["empty", "text", "truncated", "corrupt", "tiny", "bomb", "too-wide"],
)
def test_bad_inputs_get_a_stable_reason(data: bytes, reason: str) -> None:
    result = process_image(data, TARGET, LIMITS)
    assert not result.ok
    assert result.reason == reason
    assert result.detail
    assert result.image is None


def test_pil_own_bomb_guard_is_reported_as_pixel_limit() -> None:
    """Above PIL's hard limit (2x MAX_IMAGE_PIXELS) PIL raises at open; we still answer pixel_limit."""
    limits = ImageLimits(max_pixels=10**12, max_side=10**7)
    result = process_image(bad_images.png_header_only(200_000, 200_000), TARGET, limits)
    assert result.reason == "pixel_limit"


def test_max_bytes_rejects_without_decoding() -> None:
    result = process_image(bad_images.jpeg((64, 64)), TARGET, ImageLimits(max_bytes=100))
    assert result.reason == "too_large"


@pytest.mark.parametrize(
    "data",
    [
        bad_images.jpeg(),
        bad_images.png_with_alpha(),
        bad_images.grayscale_jpeg(),
        bad_images.cmyk_jpeg(),
        bad_images.png_16bit_gray(),
        bad_images.palette_png(),
    ],
    ids=["rgb", "alpha", "gray", "cmyk", "16bit", "palette"],
)
def test_every_mode_becomes_rgb_jpeg_at_target_size(data: bytes) -> None:
    result = process_image(data, TARGET, LIMITS)
    assert result.ok, result.detail
    image = decoded(result.image)
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert image.size == TARGET == (result.width, result.height)


def test_alpha_is_flattened_on_white() -> None:
    result = process_image(bad_images.png_with_alpha((64, 64)), (64, 64), LIMITS)
    pixels = np.asarray(decoded(result.image)).astype(int)
    assert np.abs(pixels[32, 8] - (255, 0, 0)).max() < 30  # opaque red stays red
    assert pixels[32, 56].min() > 225  # transparent becomes white, not black


def test_16bit_keeps_its_range() -> None:
    result = process_image(bad_images.png_16bit_gray((64, 64)), (64, 64), LIMITS)
    row = np.asarray(decoded(result.image).convert("L")).astype(int)[32]
    assert row[2] < 30 and row[-3] > 225  # a ramp from black to white, not clipped to white
    assert np.all(np.diff(row[4:-4].astype(float)) > -12)  # monotone up to JPEG noise


def test_exif_orientation_is_applied() -> None:
    result = process_image(bad_images.exif_rotated_jpeg((96, 48)), (40, 80), LIMITS)
    assert result.ok
    # Stored 96x48 landscape, displayed as 48x96 portrait: the gradient now runs top to bottom.
    image = np.asarray(decoded(result.image).convert("L")).astype(float)
    vertical = abs(image[:, 20].mean() - image[0, 20]) + abs(image[-1, 20] - image[0, 20])
    horizontal = abs(image[40, -1] - image[40, 0])
    assert vertical > horizontal


def test_sha256_is_of_the_original_bytes() -> None:
    import hashlib

    data = bad_images.jpeg()
    assert process_image(data, TARGET, LIMITS).sha256 == hashlib.sha256(data).hexdigest()
    assert process_image(b"", TARGET, LIMITS).sha256 == hashlib.sha256(b"").hexdigest()


def test_the_source_size_is_the_full_image_after_orientation() -> None:
    """What a listed gsd_m refers to: the file's pixels, not the JPEG draft's reduced decode."""
    big = process_image(bad_images.jpeg((1024, 512)), (128, 64), LIMITS)  # decoded via draft at 1/4
    assert (big.source_width, big.source_height, big.width, big.height) == (1024, 512, 128, 64)
    turned = process_image(bad_images.exif_rotated_jpeg((96, 48)), (40, 80), LIMITS)
    assert (turned.source_width, turned.source_height) == (48, 96)  # displayed portrait
    png = process_image(bad_images.png_with_alpha((64, 64)), (32, 32), LIMITS)
    assert (png.source_width, png.source_height) == (64, 64)
    assert process_image(b"", TARGET, LIMITS).source_width == 0


def test_prepared_gsd_scales_with_the_resize_and_is_unknown_when_pixels_stop_being_square() -> None:
    assert prepared_gsd(0.5, (640, 640), (256, 256)) == pytest.approx(1.25)  # shrunk: larger pixels
    assert prepared_gsd(2.0, (100, 50), (200, 100)) == pytest.approx(1.0)  # enlarged, aspect kept
    assert prepared_gsd(0.5, (641, 640), (256, 256)) == pytest.approx(0.5 * 641 / 256)  # within 1 %
    assert prepared_gsd(0.5, (640, 480), (256, 256)) is None  # stretched: not square any more
    assert prepared_gsd(None, (640, 640), (256, 256)) is None
    assert prepared_gsd(0.5, (0, 0), (256, 256)) is None
