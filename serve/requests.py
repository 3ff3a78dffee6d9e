"""Turn an untrusted HTTP request into a checked query, or into a 4xx with a JSON body that says why.

Bodies are read under a byte cap before anything is parsed (Content-Length first, then the stream), and
every image goes through the checks and steps of corpus preparation's `process_image` (header-only size
checks before decoding against decompression bombs, truncation is an error, EXIF orientation, RGB, a
bicubic resize to the encoder's input size) but stops before its JPEG encode: the answer is the
(H, W, 3) uint8 array the encoder's transform would have decoded, so the encoder gets ready input (no
re-encode here and re-decode there) and what reaches the model is always well formed and small. The
explain paths, whose evidence and explainer take image bytes, encode those arrays once (`jpegs`), as
`process_image` would have.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request

from gleam.corpus.config import ImageLimits
from gleam.corpus.images import ProcessedImage, decode_resized
from gleam.corpus.schema import Modality
from gleam.retrieval.fusion import FUSIONS
from serve.settings import MAX_K, Refine, UploadLimits

LANGUAGES = ("en", "zh")
# A single small JPEG is decoded without a thread hop: its DCT-domain draft decode costs about the
# target size whatever its header declares. A small PNG can still declare tens of megapixels (flat
# colour compresses ~1000:1), so other formats always decode in a thread, off the event loop.
INLINE_DECODE_BYTES = 64 * 1024
JPEG_SIGNATURE = b"\xff\xd8\xff"
QUERY_MODALITIES = tuple(m.value for m in Modality.query_modalities())
# process_image's reject reason -> (HTTP status, what to tell the client)
_IMAGE_STATUS = {
    "empty_file": (400, "is empty"),
    "not_an_image": (415, "is not an image (JPEG, PNG, WebP, GIF, BMP or TIFF expected)"),
    "decode_error": (422, "is corrupt or truncated"),
    "too_small": (422, "is too small"),
    "too_large": (413, "is too large"),
    "pixel_limit": (413, "has too many pixels"),
}


class APIError(Exception):
    """An error the client caused: becomes `{"error": {"code", "message", "field"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error}


@dataclass(frozen=True)
class LocalizeQuery:
    images: list[bytes]  # raw uploads, not yet checked
    modality: str
    k: int
    explain: bool
    language: str
    fusion: str = "mean"  # how a set of photos becomes one vector (gleam.retrieval.fusion)
    refine: Refine = False  # sub-tile refinement of the location: True, False or "auto"


@dataclass(frozen=True)
class ExplainQuery:
    images: list[bytes]
    modality: str
    language: str
    tile_id: str | None
    satellite: bytes | None


# --- the body -------------------------------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413) past `limit` bytes without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise APIError(400, "bad_request", "Content-Length is not a number") from None
        if size > limit:
            raise APIError(413, "too_large", f"request body of {size} bytes exceeds the {limit}-byte limit")
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise APIError(413, "too_large", f"request body exceeds the {limit}-byte limit")
            chunks.append(chunk)
    except ClientDisconnect:
        raise APIError(400, "bad_request", "the client disconnected mid-body") from None
    body = b"".join(chunks)
    request._body = body  # starlette's cache: form() parses these bytes instead of the spent stream
    if not body:
        raise APIError(400, "empty_body", "the request has no body")
    return body


async def read_fields(
    request: Request, limits: UploadLimits
) -> tuple[dict[str, Any], list[bytes], bytes | None]:
    """(form or JSON fields, query images, satellite image) from multipart or JSON."""
    await read_body(request, limits.max_request_bytes)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        return _json_fields(request._body, limits)
    if kind == "multipart/form-data":
        return await _form_fields(request, limits)
    raise APIError(
        415,
        "unsupported_media_type",
        f"content type {kind or '(none)'} is not accepted: send multipart/form-data or application/json",
    )


def _json_fields(body: bytes, limits: UploadLimits) -> tuple[dict[str, Any], list[bytes], bytes | None]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise APIError(400, "bad_json", "the JSON body must be an object")
    if "images" in data:
        encoded = data.pop("images")
        if not isinstance(encoded, list):
            raise APIError(422, "invalid_field", "images must be a list of base64 strings", "images")
        field = "images"
    elif "image" in data:
        encoded, field = [data.pop("image")], "image"
    else:
        raise APIError(422, "missing_field", "the body needs images (a list) or image (base64)", "images")
    _check_count(len(encoded), limits, field)
    images = [_b64(item, f"{field}[{n}]" if field == "images" else field) for n, item in enumerate(encoded)]
    satellite = _b64(data.pop("satellite"), "satellite") if data.get("satellite") is not None else None
    data.pop("satellite", None)
    return data, images, satellite


def _b64(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise APIError(422, "invalid_field", f"{field} must be a base64 string", field)
    if value.startswith("data:") and "," in value:  # a data URL from a browser
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "bad_base64", f"{field} is not valid base64", field) from None


async def _form_fields(
    request: Request, limits: UploadLimits
) -> tuple[dict[str, Any], list[bytes], bytes | None]:
    try:
        form = await request.form(max_files=limits.max_images + 1, max_fields=32)
    except MultiPartException as exc:
        raise APIError(400, "bad_multipart", f"the multipart body cannot be parsed: {exc.message}") from None
    except ValueError as exc:
        raise APIError(400, "bad_multipart", f"the multipart body cannot be parsed: {exc}") from None
    fields: dict[str, Any] = {}
    uploads: list[UploadFile] = []
    satellite: bytes | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key == "image":
                uploads.append(value)
            elif key == "satellite":
                satellite = await value.read()
            else:
                raise APIError(422, "invalid_field", f"unexpected file field {key!r} (use image)", key)
        elif key in ("image", "satellite"):
            raise APIError(422, "invalid_field", f"{key} must be a file upload", key)
        else:
            fields[key] = value
    if not uploads:
        raise APIError(422, "missing_field", "no image: add a file field named image", "image")
    _check_count(len(uploads), limits, "image")
    return fields, [await upload.read() for upload in uploads], satellite


def _check_count(count: int, limits: UploadLimits, field: str) -> None:
    if count == 0:
        raise APIError(422, "missing_field", f"{field} holds no image", field)
    if count > limits.max_images:
        raise APIError(
            413, "too_many_images", f"{count} images; a set may hold at most {limits.max_images}", field
        )


# --- fields ---------------------------------------------------------------------------------------------


def modality_field(fields: dict[str, Any]) -> str:
    value = fields.get("modality")
    if value is None or value == "":
        raise APIError(
            422, "missing_field", f"modality is required: one of {', '.join(QUERY_MODALITIES)}", "modality"
        )
    value = str(value).strip().lower()
    if value not in QUERY_MODALITIES:
        raise APIError(
            422,
            "unknown_modality",
            f"unknown modality {value!r}: one of {', '.join(QUERY_MODALITIES)}",
            "modality",
        )
    return value


def k_field(fields: dict[str, Any], default: int) -> int:
    value = fields.get("k", default)
    if isinstance(value, bool):
        raise APIError(422, "invalid_field", "k must be an integer", "k")
    try:
        k = int(value)
        if isinstance(value, float) and k != value:
            raise ValueError
    except (TypeError, ValueError):
        raise APIError(422, "invalid_field", f"k must be an integer, got {value!r}", "k") from None
    if not 1 <= k <= MAX_K:
        raise APIError(422, "out_of_range", f"k must be between 1 and {MAX_K}, got {k}", "k")
    return k


def bool_field(fields: dict[str, Any], name: str) -> bool:
    value = fields.get(name, False)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise APIError(422, "invalid_field", f"{name} must be true or false, got {value!r}", name)


def fusion_field(fields: dict[str, Any], default: str) -> str:
    value = fields.get("fusion")
    if value is None or value == "":
        return default
    text = str(value).strip().lower()
    if text not in FUSIONS:
        raise APIError(
            422, "invalid_field", f"fusion must be one of {', '.join(FUSIONS)}, got {value!r}", "fusion"
        )
    return text


def refine_field(fields: dict[str, Any], default: Refine) -> Refine:
    value = fields.get("refine")
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return bool_field(fields, "refine")
    except APIError:
        raise APIError(
            422, "invalid_field", f"refine must be true, false or auto, got {value!r}", "refine"
        ) from None


def language_field(fields: dict[str, Any]) -> str:
    value = str(fields.get("language") or "en").strip().lower()
    if value not in LANGUAGES:
        raise APIError(
            422, "unsupported_language", f"language {value!r} is not supported: en or zh", "language"
        )
    return value


def _check_unknown(fields: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(fields) - known)
    if unknown:
        raise APIError(422, "unknown_field", f"unknown field(s) {', '.join(unknown)}", unknown[0])


async def localize_query(
    request: Request,
    limits: UploadLimits,
    default_k: int,
    default_fusion: str = "mean",
    default_refine: Refine = False,
) -> LocalizeQuery:
    fields, images, satellite = await read_fields(request, limits)
    if satellite is not None:
        raise APIError(
            422, "invalid_field", "satellite belongs to /v1/explain, not /v1/localize", "satellite"
        )
    return localize_fields(fields, images, default_k, default_fusion, default_refine)


def localize_fields(
    fields: dict[str, Any],
    images: list[bytes],
    default_k: int,
    default_fusion: str = "mean",
    default_refine: Refine = False,
) -> LocalizeQuery:
    """The checked fields of a localize request (each bad one a 4xx naming it)."""
    _check_unknown(fields, {"modality", "k", "explain", "language", "fusion", "refine"})
    return LocalizeQuery(
        images=images,
        modality=modality_field(fields),
        k=k_field(fields, default_k),
        explain=bool_field(fields, "explain"),
        language=language_field(fields),
        fusion=fusion_field(fields, default_fusion),
        refine=refine_field(fields, default_refine),
    )


async def explain_query(request: Request, limits: UploadLimits) -> ExplainQuery:
    fields, images, satellite = await read_fields(request, limits)
    _check_unknown(fields, {"modality", "language", "tile_id"})
    tile_id = fields.get("tile_id")
    if tile_id is not None and not isinstance(tile_id, str):
        raise APIError(422, "invalid_field", "tile_id must be a string", "tile_id")
    if not tile_id and satellite is None:
        raise APIError(422, "missing_field", "name a tile_id or send a satellite image", "tile_id")
    return ExplainQuery(
        images=images,
        modality=modality_field(fields),
        language=language_field(fields),
        tile_id=tile_id or None,
        satellite=satellite,
    )


# --- images ---------------------------------------------------------------------------------------------


def decode_checked(data: bytes, size: tuple[int, int], limits: ImageLimits) -> np.ndarray | ProcessedImage:
    """`process_image` up to its JPEG encode: an (h, w, 3) uint8 array at `size` (w, h), or the reject.

    Same checks, decode and resize (`gleam.corpus.images.decode_resized`), so the array is the one
    `process_image`'s JPEG would be encoded from; no sha256 (nothing is de-duplicated here), no encode.
    """
    rgb = decode_resized(data, size, limits)
    if isinstance(rgb, ProcessedImage):
        return rgb
    return np.asarray(rgb, dtype=np.uint8)


def _prepare_one(data: bytes, size: tuple[int, int], limits: ImageLimits, field: str) -> np.ndarray:
    decoded = decode_checked(data, size, limits)
    if isinstance(decoded, np.ndarray):
        return decoded
    status, says = _IMAGE_STATUS.get(decoded.reason or "", (422, "cannot be used"))
    raise APIError(status, decoded.reason or "invalid_image", f"{field} {says}: {decoded.detail}", field)


async def prepare_images(
    images: list[bytes], size: tuple[int, int], limits: UploadLimits, field: str = "image"
) -> list[np.ndarray]:
    """Checked, decoded and resized to `size` (w, h) uint8 arrays; the first bad one is a 4xx.

    A single small JPEG is decoded on the event loop (a thread hop costs more than its decode); other
    formats, larger uploads and sets go to threads, so no upload blocks other requests for long.
    """
    image_limits = ImageLimits(
        min_side=limits.min_side,
        max_side=limits.max_side,
        max_pixels=limits.max_pixels,
        max_bytes=limits.max_image_bytes,
    )
    names = [f"{field}[{n}]" if len(images) > 1 else field for n in range(len(images))]
    if len(images) == 1 and len(images[0]) <= INLINE_DECODE_BYTES and images[0].startswith(JPEG_SIGNATURE):
        return [_prepare_one(images[0], size, image_limits, names[0])]
    return list(
        await asyncio.gather(
            *(
                asyncio.to_thread(_prepare_one, data, size, image_limits, name)
                for data, name in zip(images, names, strict=True)
            )
        )
    )


def jpegs(arrays: list[np.ndarray], quality: int = ImageLimits().jpeg_quality) -> list[bytes]:
    """Prepared arrays -> the JPEGs `process_image` would have made of them (for evidence and explainer)."""
    out = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        out.append(buffer.getvalue())
    return out
