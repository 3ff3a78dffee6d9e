"""Ingress: the HTTP API and the web page, composing QueryEncoder, SatelliteIndex and Explainer by handle.

Every client mistake is an `APIError` -> a 4xx JSON body naming the field; anything else is logged with
a request id and answered with a 500 that carries only that id (no stack trace ever leaves the replica).
`GLEAM_API_TOKEN`, when set in the replica's environment, is required as a bearer token on /v1/*.
An explanation takes everything it knows about the index (tile, calibration, confidence, rank) from one
SatelliteIndex call, so from one index version, and says which (`index` in the explanation).

`/v1/localize` is one hop past the ingress: uploads are checked and decoded here into uint8 arrays at
the encoder's input size, and `QueryEncoder.localize` embeds (batched) and searches. Its answer carries
`timings_ms` (parse, prepare, the encoder call and, inside it, queue/forward/search, explain, total) and
the same figures plus the JSON encode as a `Server-Timing` header, so where a request's time goes can be
read off any answer.

No `from __future__ import annotations` here: Serve rebuilds the route methods' signatures, and
FastAPI must see real classes (a string "Request" would turn into a required body field).
"""

import hmac
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.requests import FUSIONS, APIError, explain_query, jpegs, localize_query, prepare_images
from serve.settings import API_TOKEN_ENV, MAX_K, ServeArgs

log = logging.getLogger("ray.serve")
STATIC = Path(__file__).resolve().parent / "static"

_IMAGE_SCHEMA = {"type": "string", "format": "binary"}
_FUSION_SCHEMA = {
    "type": "string",
    "enum": list(FUSIONS),
    "description": "how a set of photos becomes one query (default: the service's `fusion` setting)",
}
_REFINE_SCHEMA = {
    "type": "string",
    "enum": ["true", "false", "auto"],
    "description": "move the location to the heatmap's peak on the top tile (default: the service's"
    " `refine` setting); one more pass of the photos and the tile through the encoder",
}
_REFINE_JSON_SCHEMA = {
    "oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["auto"]}],
    "description": _REFINE_SCHEMA["description"],
}
_LOCALIZE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "modality"],
                    "properties": {
                        "image": {
                            "type": "array",
                            "items": _IMAGE_SCHEMA,
                            "description": "one or more photos",
                        },
                        "modality": {"type": "string", "enum": ["drone", "streetmap", "panorama", "ground"]},
                        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 5},
                        "explain": {"type": "boolean", "default": False},
                        "language": {"type": "string", "enum": ["en", "zh"], "default": "en"},
                        "fusion": _FUSION_SCHEMA,
                        "refine": _REFINE_SCHEMA,
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["images", "modality"],
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
                        "modality": {"type": "string"},
                        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                        "explain": {"type": "boolean"},
                        "language": {"type": "string", "enum": ["en", "zh"]},
                        "fusion": _FUSION_SCHEMA,
                        "refine": _REFINE_JSON_SCHEMA,
                    },
                }
            },
        },
    }
}
_EXPLAIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "modality"],
                    "properties": {
                        "image": {"type": "array", "items": _IMAGE_SCHEMA},
                        "satellite": _IMAGE_SCHEMA,
                        "tile_id": {"type": "string"},
                        "modality": {"type": "string"},
                        "language": {"type": "string", "enum": ["en", "zh"], "default": "en"},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["image", "modality"],
                    "properties": {
                        "image": {"type": "string", "format": "byte"},
                        "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
                        "satellite": {"type": "string", "format": "byte"},
                        "tile_id": {"type": "string"},
                        "modality": {"type": "string"},
                        "language": {"type": "string", "enum": ["en", "zh"]},
                    },
                }
            },
        },
    }
}

api = FastAPI(
    title="GLEAM geo-localization",
    description="Where was this photo taken (top-k satellite tiles), and why (GLEAM-X).",
    version="1",
)
api.mount("/static", StaticFiles(directory=STATIC), name="static")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _timed_json(body: dict[str, Any], timings: dict[str, float]) -> JSONResponse:
    """The JSON answer, with `timings` and the time its own encoding took as a Server-Timing header."""
    encoding = time.perf_counter()
    response = JSONResponse(body)
    steps = {**timings, "json": _ms(time.perf_counter() - encoding)}
    response.headers["Server-Timing"] = ", ".join(
        f"{name};dur={value}" for name, value in steps.items() if name != "batch"
    )
    return response


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(APIError(status, code, message, field).body(), status_code=status)


@api.exception_handler(APIError)
async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return _error(422, "invalid_field", str(first.get("msg", "invalid request")), field)


@api.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = uuid.uuid4().hex[:12]
    log.error("request %s %s failed (id %s)", request.method, request.url.path, request_id, exc_info=exc)
    return _error(500, "internal", f"internal error (request id {request_id}); the server log has details")


@serve.deployment(
    name="Ingress",
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=256,
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 64},
    health_check_period_s=10,
    health_check_timeout_s=30,
)
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        encoder: DeploymentHandle,
        index: DeploymentHandle,
        explainer: DeploymentHandle,
        args: dict[str, Any],
    ) -> None:
        self.encoder, self.index, self.explainer = encoder, index, explainer
        self.args = ServeArgs.model_validate(args)
        token = os.environ.get(API_TOKEN_ENV, "")
        self._token = token.encode() if token else None
        self._encoder_info: dict[str, Any] | None = None

    # --- helpers ---------------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        if self._token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise APIError(
                401, "unauthorized", "a valid bearer token is required (Authorization: Bearer ...)"
            )

    async def _encoder(self) -> dict[str, Any]:
        if self._encoder_info is None:
            self._encoder_info = await self.encoder.describe.remote()
        return self._encoder_info

    async def _prepared(self, images: list[bytes], modality: str, field: str = "image") -> list[np.ndarray]:
        size = tuple((await self._encoder())["sizes"][modality])
        return await prepare_images(images, size, self.args.limits, field)

    async def _explanation(
        self,
        pixels: list[np.ndarray],
        modality: str,
        language: str,
        context: dict[str, Any],
        satellite: bytes | None = None,
    ) -> dict[str, Any]:
        """The answer for the context's tile (or the uploaded `satellite`), on the context's index version."""
        tile = context["tile"]
        if tile is not None:
            satellite = tile["image"]
        else:
            satellite = jpegs(await self._prepared([satellite], "satellite", "satellite"))[0]
        query = jpegs(pixels)  # evidence and explainer take image bytes: the JPEGs process_image would make
        evidence = await self.encoder.evidence.remote(query, modality, satellite, self.args.explainer.heatmap)
        # threshold, calibration, fitted confidence, quality (no verdict on an index that cannot tell
        # places apart), rank, margin, depth: all from the version that also gave the tile
        evidence.update(context["evidence"])
        answer = await self.explainer.explain.remote(query, satellite, modality, language, evidence)
        answer["tile_id"] = tile["tile_id"] if tile is not None else None
        if tile is not None:
            answer["lat"], answer["lon"] = tile["lat"], tile["lon"]
        answer["index"] = {"name": context["index"], "version": context["version"]}
        return answer

    def _labels(self, found: dict[str, Any], encoder: dict[str, Any]) -> dict[str, Any]:
        quality = found.get("quality") or {}
        return {
            # warning: set when the index's encoder cannot tell places apart (collapsed, at chance)
            "index": {
                "name": found["index"],
                "version": found["version"],
                "quality": quality,
                "warning": quality.get("warning"),
            },
            "encoder": {
                "fingerprint": encoder["fingerprint"],
                "uri": encoder["uri"],
                "model_name": encoder["model_name"],
                "model_version": encoder["model_version"],
            },
        }

    # --- routes ----------------------------------------------------------------------------------------

    @api.post(
        "/v1/localize", openapi_extra=_LOCALIZE_BODY, summary="Top-k satellite tiles for a photo or set"
    )
    async def localize(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        self._authorize(request)
        query = await localize_query(
            request, self.args.limits, self.args.default_k, self.args.fusion, self.args.refine
        )
        parsed = time.perf_counter()
        pixels = await self._prepared(query.images, query.modality)
        prepared = time.perf_counter()
        # one hop: the encoder embeds (batched) and searches; with explain, the top candidate's context
        # comes from the same search, so the same index version, as does the location
        found = await self.encoder.localize.remote(
            query.modality,
            pixels,
            query.k,
            query.modality if query.explain else None,
            query.fusion,
            query.refine,
        )
        searched = time.perf_counter()
        body: dict[str, Any] = {
            "modality": query.modality,
            "images": len(pixels),
            "k": query.k,
            "candidates": found["candidates"],
            "location": found["location"],
            **self._labels(found, await self._encoder()),
        }
        if "fusion" in found:
            body["fusion"] = found["fusion"]
        timings = {
            "parse": _ms(parsed - started),
            "prepare": _ms(prepared - parsed),
            "encoder_call": _ms(searched - prepared),
            **found["timings_ms"],
        }
        if "context" in found:
            body["explanation"] = await self._explanation(
                pixels, query.modality, query.language, found["context"]
            )
            timings["explain"] = _ms(time.perf_counter() - searched)
        timings["total"] = _ms(time.perf_counter() - started)
        body["took_ms"] = round(timings["total"], 1)
        body["timings_ms"] = timings
        return _timed_json(body, timings)

    @api.post(
        "/v1/explain", openapi_extra=_EXPLAIN_BODY, summary="Is this photo of that tile's place, and why"
    )
    async def explain(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        self._authorize(request)
        query = await explain_query(request, self.args.limits)
        pixels = await self._prepared(query.images, query.modality)
        vector = await self.encoder.embed.remote((query.modality, pixels))
        context = await self.index.context.remote(vector, query.modality, query.tile_id)
        if query.tile_id is not None and context["tile"] is None:
            raise APIError(
                404, "unknown_tile", f"tile {query.tile_id!r} is not in the served index", "tile_id"
            )
        answer = await self._explanation(pixels, query.modality, query.language, context, query.satellite)
        answer["took_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return JSONResponse(answer)

    @api.get("/v1/tiles/{tile_id}", summary="A satellite tile's image (JPEG)")
    async def tile(self, tile_id: str, request: Request) -> Response:
        self._authorize(request)
        found = await self.index.tile.remote(tile_id)
        if found is None:
            raise APIError(404, "unknown_tile", f"tile {tile_id!r} is not in the served index", "tile_id")
        headers = {"Cache-Control": "public, max-age=3600"}
        if found["lat"] is not None:
            headers["X-Tile-Lat"], headers["X-Tile-Lon"] = str(found["lat"]), str(found["lon"])
        return Response(found["image"], media_type="image/jpeg", headers=headers)

    @api.get("/healthz", summary="Liveness and what is being served")
    async def healthz(self) -> JSONResponse:
        index = await self.index.status.remote()
        encoder = await self._encoder()
        explainer = await self.explainer.describe.remote()
        return JSONResponse(
            {
                "status": "ok",
                "index": index,
                "encoder": {
                    k: encoder[k] for k in ("uri", "fingerprint", "dim", "model_name", "model_version")
                },
                "explainer": explainer,
                "auth": self._token is not None,
                "limits": self.args.limits.model_dump(),
                # what a /v1/localize request gets when it does not say
                "defaults": {
                    "k": self.args.default_k,
                    "fusion": self.args.fusion,
                    "refine": self.args.refine,
                },
                "modalities": [m for m in encoder["sizes"] if m != "satellite"],
            }
        )

    @api.get("/", include_in_schema=False)
    async def page(self) -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")
