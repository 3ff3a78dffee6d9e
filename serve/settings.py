"""The application's arguments: what `serve.app:app` is built from (Serve config `args`, or `gleam serve`).

Everything a replica needs is in here and validated before a single deployment starts, so a bad value
fails `serve run` / `serve deploy` with the field's name instead of crash-looping replicas. Secrets are
not arguments: the API token is read from the environment by the ingress replica.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gleam import storage
from gleam.config import StrictModel
from gleam.explain.mllm import MLLMConfig

API_TOKEN_ENV = "GLEAM_API_TOKEN"
MAX_K = 100
# set fusion (gleam.retrieval.fusion.FUSIONS) and refinement choices a request or the config may name
Fusion = Literal["mean", "agreement"]
Refine = bool | Literal["auto"]


class BatchSettings(StrictModel):
    """`@serve.batch` of the query encoder; max_batch_size 1 turns batching off. With no wait (0), a batch
    is whatever queued while the previous one ran: no added latency when idle, full batches under load."""

    max_batch_size: int = Field(16, ge=1, le=512)
    batch_wait_timeout_s: float = Field(0.0, ge=0.0, le=1.0)


class UploadLimits(StrictModel):
    """What one request may carry: checked before any pixel is decoded."""

    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="whole body, all images")
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="one image")
    max_pixels: int = Field(40_000_000, ge=1, description="decompression-bomb guard")
    max_side: int = Field(12_000, ge=16)
    min_side: int = Field(16, ge=1)
    max_images: int = Field(8, ge=1, le=64, description="images of one place in a set")


class ExplainerSettings(StrictModel):
    mllm: MLLMConfig | None = Field(None, description="GLEAM-X model; None answers from evidence alone")
    heatmap: bool = True


class ServeArgs(StrictModel):
    """Arguments of the GLEAM application builder (`serve.app:app`)."""

    encoder: str = Field("models:/gleam-c@champion", description="folder, store URI or models:/ URI")
    index: str = Field("world-demo", description="index name under <store>/indexes/")
    store: str = Field(default_factory=storage.default_store)
    index_version: str | None = Field(None, description="pin a version; None follows CURRENT")
    poll_seconds: float = Field(10.0, ge=0.0, description="how often CURRENT is checked; 0 = never")
    default_k: int = Field(5, ge=1, le=MAX_K)
    batching: BatchSettings = Field(default_factory=BatchSettings)
    colocated_search: bool = Field(
        True,
        description="each QueryEncoder replica holds the index and searches its batches itself (no hop);"
        " false for an index too large to hold in every encoder replica: one SatelliteIndex call per batch",
    )
    fusion: Fusion = Field(
        "agreement",
        description="how a set of photos becomes one query vector when a request does not say"
        " (gleam.retrieval.fusion): weighted by each photo's agreement with the rest (the default: it"
        " found more sets' places when one photo was of another place, docs/evaluation.md), or the mean",
    )
    refine: Refine = Field(
        False,
        description="sub-tile refinement of the location when a request does not say: the heatmap peak on"
        " the top tile (one more forward of the query and the tile per request); auto: only where the"
        " index's validation queries measured the refined radius smaller than the fused one",
    )
    limits: UploadLimits = Field(default_factory=UploadLimits)
    explainer: ExplainerSettings = Field(default_factory=ExplainerSettings)

    @field_validator("store")
    @classmethod
    def _absolute_store(cls, value: str) -> str:
        return storage.normalize(value)  # resolved where the args are parsed, not in a replica's folder

    @field_validator("index")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or value.startswith("."):
            raise ValueError("must be a plain index name (no '/')")
        return value
