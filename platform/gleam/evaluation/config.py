"""`gleam evaluate` config: which split of which corpus, which encoder, exact or through a published index."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from gleam import storage
from gleam.config import NAME_PATTERN, StrictModel, TrackingConfig
from gleam.corpus.schema import Modality
from gleam.index.location import DEFAULT_COVERAGE
from gleam.model.embedding import Precision
from gleam.retrieval.metrics import OnePercent


class EvaluateConfig(StrictModel):
    """`jobs/evaluate.py`: embed a prepared split, search it exactly (or through a published index)."""

    corpus: str = Field(description="store URI of a prepared corpus (the folder holding manifest.json)")
    encoder: str = Field(min_length=1, description="saved encoder folder, store URI or models:/gleam-c@alias")
    split: Literal["train", "val", "test"] = Field("test", description="tiles and queries of this split")
    modalities: list[Modality] | None = Field(None, description="query modalities; None: all in the split")
    batch_size: int = Field(64, ge=1, description="images per forward pass")
    precision: Precision = Field(
        "auto", description="gleam.model.embedding's policy (auto: bf16/fp16 on GPU, fp32 on CPU), as served"
    )
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1, description="ranks for R@k")
    one_percent: OnePercent = Field(
        "platform",
        description=(
            "R@1% convention: platform (1% of the junk-free gallery, half up) or official (University-1652's "
            "evaluate_gpu.py: CMC[round(0.01 * gallery incl. junk)], a 0-based index)"
        ),
    )
    grid_queries: int = Field(8, ge=0, le=64, description="queries per modality in the retrieval grid PNG")
    index: Annotated[str, Field(pattern=NAME_PATTERN)] | None = Field(
        None, description="search through this published index (its whole gallery), next to exact search"
    )
    index_version: str | None = Field(None, min_length=1, description="a version of `index`; default CURRENT")
    index_depth: int = Field(
        100, ge=1, description="results per query through the index (at least max(ks) and the R@1% rank)"
    )
    refine: bool = Field(
        False,
        description="also score the refined location estimate (the evidence heatmap's peak on the top tile: "
        "one forward of query and tile per query)",
    )
    coverage: float = Field(
        DEFAULT_COVERAGE,
        gt=0.0,
        lt=1.0,
        description="exact mode: share of errors the cross-fitted radius covers (an index has its own)",
    )
    store: str = Field(default_factory=storage.default_store, description="store root holding indexes/")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("index_version")
    @classmethod
    def _version_of_an_index(cls, value: str | None, info: Any) -> str | None:
        if value is not None and info.data.get("index") is None:
            raise ValueError("a version needs an index name (index=NAME)")
        return value

    @field_validator("modalities")
    @classmethod
    def _query_modalities(cls, value: list[Modality] | None) -> list[Modality] | None:
        return Modality.checked_queries(value)

    @field_validator("ks")
    @classmethod
    def _positive_ranks(cls, value: list[int]) -> list[int]:
        if min(value) < 1:
            raise ValueError(f"ranks must be at least 1, got {value}")
        return sorted(set(value))
