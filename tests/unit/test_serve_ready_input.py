"""The ingress's ready input: uploads decoded once into uint8 arrays at the encoder's input size.

`decode_checked` must be `process_image` without its JPEG encode (same checks, same rejects, the pixels
the JPEG was encoded from), and the encoder fed those arrays must give the vector it gives image bytes of
the same pixels. (`QueryEncoder.localize`, which embeds and searches a batch and times it, is tested over
HTTP on a published index in tests/integration/test_serve.py.)
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from gleam.corpus.config import ImageLimits
from gleam.corpus.images import process_image
from gleam.model import weights
from gleam.model.transforms import load_resized
from serve.encoder import QueryEncoder
from serve.requests import decode_checked, jpegs
from tests.support import bad_images
from tests.support.training import tiny_encoder

SIZE = (64, 64)
UPLOADS = [
    bad_images.jpeg((96, 64), seed=1),
    bad_images.jpeg((50, 70), seed=2),
    bad_images.exif_rotated_jpeg((96, 48)),
    bad_images.png_with_alpha(),
    bad_images.grayscale_jpeg(),
    bad_images.cmyk_jpeg(),
    bad_images.png_16bit_gray(),
    bad_images.palette_png(),
]
BAD = [
    b"",
    bad_images.truncated_jpeg(),
    bad_images.corrupt_jpeg(),
    bad_images.png_header_only(40_000, 40_000),
    bad_images.tiny_jpeg(),
    bad_images.text_file(),
]


@pytest.fixture(scope="module")
def encoder_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("encoder") / "encoder", seed=3, embed_dim=16, size=64)


@pytest.mark.parametrize("upload", UPLOADS, ids=lambda b: str(len(b)))
def test_decode_checked_is_process_image_before_its_encode(upload: bytes) -> None:
    pixels = decode_checked(upload, SIZE, ImageLimits())
    assert isinstance(pixels, np.ndarray) and pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    processed = process_image(upload, SIZE, ImageLimits())
    assert jpegs([pixels]) == [processed.image]  # the same pixels, so the same JPEG
    # and the encoder's transform takes the array as it is
    np.testing.assert_array_equal(load_resized(pixels, SIZE), pixels)


@pytest.mark.parametrize("upload", BAD, ids=range(len(BAD)))
def test_decode_checked_rejects_what_process_image_rejects(upload: bytes) -> None:
    limits = ImageLimits(min_side=16, max_pixels=40_000_000)
    rejected = decode_checked(upload, SIZE, limits)
    assert not isinstance(rejected, np.ndarray)
    assert rejected.reason == process_image(upload, SIZE, limits).reason


def test_ready_arrays_embed_like_image_bytes_of_the_same_pixels(encoder_uri: str) -> None:
    """Arrays and lossless bytes (PNG) of the same pixels give the same vectors: the ready input takes the
    bytes path minus the decode, so the served vector differs from the old JPEG path only by the JPEG."""
    _, fingerprint = weights.pin(encoder_uri)
    replica = QueryEncoder.func_or_class(encoder_uri, fingerprint, {"max_batch_size": 16})
    embed = QueryEncoder.func_or_class.embed.__wrapped__
    arrays = [decode_checked(upload, SIZE, ImageLimits()) for upload in UPLOADS]
    from_arrays = np.stack(asyncio.run(embed(replica, [("drone", [a]) for a in arrays])))
    from_png = np.stack(asyncio.run(embed(replica, [("drone", [_png(a)]) for a in arrays])))
    np.testing.assert_allclose(from_arrays, from_png, atol=2e-5)
    # the old path (the JPEG process_image made) is the same pixels after one JPEG round trip
    from_jpegs = np.stack(asyncio.run(embed(replica, [("drone", [j]) for j in jpegs(arrays)])))
    round_trip = [decode_checked(j, SIZE, ImageLimits()) for j in jpegs(arrays)]
    via_arrays = np.stack(asyncio.run(embed(replica, [("drone", [a]) for a in round_trip])))
    np.testing.assert_allclose(from_jpegs, via_arrays, atol=2e-5)
    # and a set is fused the same way from arrays
    fused = asyncio.run(embed(replica, [("drone", arrays[:2])]))[0]
    mean = from_arrays[:2].mean(axis=0)
    np.testing.assert_allclose(fused, mean / np.linalg.norm(mean), atol=1e-5)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_only_a_small_jpeg_is_decoded_on_the_event_loop() -> None:
    """A small PNG may declare tens of megapixels (flat colour compresses ~1000:1): it, like any set or
    large upload, is decoded in a thread so it cannot stall the ingress's other requests."""
    import threading

    from serve import requests as serve_requests
    from serve.settings import UploadLimits

    flat = io.BytesIO()
    Image.new("RGB", (2000, 2000), (30, 90, 60)).save(flat, format="PNG", optimize=True)
    assert len(flat.getvalue()) < serve_requests.INLINE_DECODE_BYTES  # small bytes, 4 Mpx to decode
    seen: list[str] = []
    decode = serve_requests._prepare_one

    def recording(*args: object) -> np.ndarray:
        seen.append(threading.current_thread().name)
        return decode(*args)

    async def prepare(data: bytes) -> np.ndarray:
        return (await serve_requests.prepare_images([data], SIZE, UploadLimits()))[0]

    original, serve_requests._prepare_one = serve_requests._prepare_one, recording
    try:
        small_jpeg = asyncio.run(prepare(bad_images.jpeg((96, 64), seed=3)))
        small_png = asyncio.run(prepare(flat.getvalue()))
    finally:
        serve_requests._prepare_one = original
    assert small_jpeg.shape == small_png.shape == (SIZE[1], SIZE[0], 3)
    assert seen[0] == threading.main_thread().name and seen[1] != threading.main_thread().name
