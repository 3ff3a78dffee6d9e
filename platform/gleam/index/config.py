"""`gleam index build` config: which tiles, which encoder, what index, how strict, how to run."""

from __future__ import annotations

from typing import Literal

from pydantic import ByteSize, Field

from gleam import storage
from gleam.config import NAME_PATTERN, StrictModel, TrackingConfig
from gleam.corpus.schema import Split
from gleam.index.location import DEFAULT_COVERAGE, DEFAULT_K


class RecallCheck(StrictModel):
    """recall@k of the built index against exact search on held-out vectors; below `floor`: no publish."""

    floor: float = Field(0.95, ge=0.0, le=1.0)
    k: int = Field(10, ge=1, le=1000)
    sample: int = Field(1000, ge=1, description="held-out query vectors (fewer when the set is smaller)")


class EmbedConfig(StrictModel):
    """The Ray Data actor pool that embeds tiles."""

    batch_size: int = Field(64, ge=1, description="tiles per forward pass")
    actors: int | None = Field(None, ge=1, description="pool size; default: one per GPU, else 1")
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs per actor; default: 1 when the cluster has any"
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs per actor")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16 on GPU, fp32 on CPU"
    )


class CalibrationConfig(StrictModel):
    """The served match threshold, measured on queries of `split` (see gleam.index.calibrate)."""

    split: Split | None = Field(Split.VAL, description="queries to calibrate on; None: no calibration")
    max_queries: int = Field(2000, ge=2, description="a seeded sample when the split has more")


class LocationConfig(StrictModel):
    """The location radius, fitted on the calibration's queries (gleam.index.location, docs/index.md)."""

    coverage: float = Field(
        DEFAULT_COVERAGE, gt=0.0, lt=1.0, description="share of validation errors the radius covers"
    )
    k: int = Field(DEFAULT_K, ge=1, le=1000, description="candidates fused per query")
    refine_queries: int = Field(
        200,
        ge=0,
        description="queries whose heatmap on their top tile is computed for the refined radius "
        "(one forward of query and tile each); 0: no refined radius",
    )


class IndexBuildConfig(StrictModel):
    """`jobs/build_index.py`: tiles of a prepared corpus -> `<store>/indexes/<name>/<version>/` + CURRENT."""

    name: str = Field(pattern=NAME_PATTERN, description="index name: <store>/indexes/<name>/")
    corpus: str = Field(description="store URI of a prepared corpus (the folder holding manifest.json)")
    encoder: str = Field(min_length=1, description="saved encoder folder, store URI or models:/gleam-c@alias")
    store: str = Field(default_factory=storage.default_store, description="store root the index goes under")
    splits: list[Split] | None = Field(None, description="tiles of these splits; None: every tile")
    memory_budget: ByteSize = Field(ByteSize(4 * 2**30), description="index size limit, e.g. 4GiB")
    index_key: str | None = Field(None, description="force a faiss.index_factory key, e.g. HNSW32,Flat")
    exact_limit: int = Field(50_000, ge=0, description="up to this many tiles: exact (Flat) search")
    recall: RecallCheck = Field(default_factory=RecallCheck)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    location: LocationConfig = Field(default_factory=LocationConfig)
    add_batch_size: int = Field(65_536, ge=1, description="vectors added to the index per call")
    incremental: bool = Field(False, description="embed only new or changed tiles since CURRENT")
    lease_ttl_s: float = Field(600.0, gt=0, description="a build silent this long is presumed dead")
    keep_versions: int = Field(3, ge=1, description="complete versions kept (CURRENT always is)")
    seed: int = Field(0, ge=0)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
