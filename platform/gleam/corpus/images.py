"""Turn untrusted image bytes into a prepared JPEG, or into a reason why not.

Everything a dataset can throw at us ends here: zero-byte files, truncated or corrupt JPEGs, text files
with an image suffix, PNGs with alpha, grayscale, CMYK, 16-bit, decompression bombs, thumbnails. The
function never raises on bad input; it returns a `ProcessedImage` whose `reason` is a stable
`RejectReason` code, so the caller can quarantine the input and count it instead of crashing a job.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from gleam.corpus.config import ImageLimits
from gleam.corpus.schema import GSD_SQUARE_TOLERANCE, RejectReason
from gleam.storage_errors import ReadFailure, classify, one_line

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never silently grey pixels
WHITE = (255, 255, 255)
# Leading bytes of the formats we accept: an unreadable file that starts like an image is a corrupt
# image (decode_error), anything else is not an image at all (not_an_image).
IMAGE_SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF little-endian
    b"MM\x00*",  # TIFF big-endian
)


def looks_like_image(data: bytes) -> bool:
    return data.startswith(IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


@dataclass(frozen=True)
class ProcessedImage:
    sha256: str
    image: bytes | None = None
    width: int = 0
    height: int = 0
    reason: str | None = None
    detail: str | None = None
    # The decoded image's size before the resize (after EXIF orientation): what a listed metres-per-pixel
    # refers to, so prepare can scale it to the prepared size. 0 when there is no image.
    source_width: int = 0
    source_height: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None


def _reject(sha: str, reason: RejectReason, detail: str) -> ProcessedImage:
    return ProcessedImage(sha256=sha, reason=reason.value, detail=detail)


def unreadable(uri: str, exc: BaseException) -> ProcessedImage:
    """The reject for an object the store would not hand over for good: absent (missing_file), or
    denied or refused (read_error). A failing store never ends here: it is retried, then fails the job."""
    if classify(exc) is ReadFailure.MISSING:
        return _reject("", RejectReason.MISSING_FILE, f"not found: {uri}")
    return _reject("", RejectReason.READ_ERROR, one_line(exc))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, with transparency flattened on white and 16-bit data rescaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(image)
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey -> 8-bit, keeping the full range (PIL's convert would clip)."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        peak = 1.0 if array.size and np.nanmax(array) <= 1.0 else 255.0
    else:
        peak = 65535.0 if (image.mode.startswith("I;16") or (array.size and array.max() > 255)) else 255.0
    scaled = np.clip(np.nan_to_num(array) * (255.0 / peak), 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, mode="L").convert("RGB")


def _open(data: bytes, limits: ImageLimits, sha: str) -> Image.Image | ProcessedImage:
    """Parse the header only, and check sizes before a single pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if looks_like_image(data):
            return _reject(sha, RejectReason.DECODE_ERROR, "image signature but a corrupt header")
        return _reject(sha, RejectReason.NOT_AN_IMAGE, "no known image format")
    except Image.DecompressionBombError as exc:
        return _reject(sha, RejectReason.PIXEL_LIMIT, str(exc))
    except Exception as exc:  # header parse failures of every plugin
        return _reject(sha, RejectReason.DECODE_ERROR, f"{type(exc).__name__}: {exc}")
    width, height = image.size
    if width * height > limits.max_pixels:
        return _reject(sha, RejectReason.PIXEL_LIMIT, f"{width}x{height} exceeds {limits.max_pixels} pixels")
    if max(width, height) > limits.max_side:
        return _reject(sha, RejectReason.TOO_LARGE, f"{width}x{height} has a side over {limits.max_side}")
    if min(width, height) < limits.min_side:
        return _reject(sha, RejectReason.TOO_SMALL, f"{width}x{height} has a side under {limits.min_side}")
    return image


def _decode(image: Image.Image, target: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """(RGB image, its full-resolution size after orientation): a JPEG draft decodes at a reduced size,
    so the source size is the header's, its sides swapped when the EXIF orientation turned it."""
    width, height = image.size
    if image.format == "JPEG":
        side = max(target)  # DCT-domain downscale: large JPEGs decode several times faster
        image.draft("RGB", (side, side))
    image.load()
    loaded = image.size
    with contextlib.suppress(Exception):  # a broken EXIF block must not lose an otherwise good image
        image = ImageOps.exif_transpose(image) or image
    turned = image.size != loaded  # a quarter turn swaps the sides (a square one needs no swap)
    return to_rgb(image), ((height, width) if turned else (width, height))


def decode_resized(
    data: bytes, target: tuple[int, int], limits: ImageLimits, sha: str = ""
) -> Image.Image | ProcessedImage:
    """Validate, decode, orient, convert and resize to exactly `target` (width, height), or the reject.

    `process_image` is this plus its JPEG encode; the serving ingress uses it alone, so an upload reaches
    the encoder as the pixels a prepared corpus image was encoded from, with the same checks and rejects.
    """
    decoded = _decode_sized(data, target, limits, sha)
    return decoded if isinstance(decoded, ProcessedImage) else decoded[0]


def _decode_sized(
    data: bytes, target: tuple[int, int], limits: ImageLimits, sha: str
) -> tuple[Image.Image, tuple[int, int]] | ProcessedImage:
    """decode_resized plus the source size (width, height) after orientation, before the resize."""
    if not data:
        return _reject(sha, RejectReason.EMPTY_FILE, "0 bytes")
    if len(data) > limits.max_bytes:
        return _reject(sha, RejectReason.TOO_LARGE, f"{len(data)} bytes exceeds {limits.max_bytes}")
    opened = _open(data, limits, sha)
    if isinstance(opened, ProcessedImage):
        return opened
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            rgb, source_size = _decode(opened, target)
    except Image.DecompressionBombError as exc:
        return _reject(sha, RejectReason.PIXEL_LIMIT, str(exc))
    except Exception as exc:  # truncated data, broken streams, plugin bugs: all a decode error
        return _reject(sha, RejectReason.DECODE_ERROR, f"{type(exc).__name__}: {exc}")
    if rgb.size != tuple(target):
        rgb = rgb.resize(tuple(target), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return rgb, source_size


def process_image(data: bytes, target: tuple[int, int], limits: ImageLimits) -> ProcessedImage:
    """Validate, decode, orient, convert and resize to exactly `target` (width, height); encode JPEG."""
    sha = hashlib.sha256(data).hexdigest()
    decoded = _decode_sized(data, target, limits, sha)
    if isinstance(decoded, ProcessedImage):
        return decoded
    rgb, (source_width, source_height) = decoded
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=limits.jpeg_quality)
    return ProcessedImage(
        sha256=sha,
        image=buffer.getvalue(),
        width=target[0],
        height=target[1],
        source_width=source_width,
        source_height=source_height,
    )


def prepared_gsd(gsd_m: float | None, source: tuple[int, int], prepared: tuple[int, int]) -> float | None:
    """Metres per pixel of the prepared image, from the source image's (width, height) and its own.

    A resize from W to w pixels makes each pixel W / w times larger: gsd_m * W / w. When the resize
    changes the aspect (the two sides scale by more than 1 % apart), the prepared pixels are no longer
    square and one number cannot say their size, so the answer is None (unknown) rather than a size
    that is wrong along one axis. None in, None out.
    """
    if gsd_m is None or min(*source, *prepared) <= 0:
        return None
    across, down = source[0] / prepared[0], source[1] / prepared[1]
    if abs(across - down) > GSD_SQUARE_TOLERANCE * max(across, down):
        return None
    return gsd_m * across
