"""The `prepare` job's config: which sources, where to, image sizes and limits, and the split rule.

The sources are whichever kinds `gleam.corpus.sources` registers (one file per kind), told apart by
`kind`; the loading, env expansion and overrides every job shares stay in `gleam.config`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from gleam import storage
from gleam.config import NAME_PATTERN, StrictModel, TrackingConfig
from gleam.corpus.schema import Modality
from gleam.corpus.sources.registry import SourceConfig

DEFAULT_SIZES: dict[Modality, tuple[int, int]] = {
    Modality.SATELLITE: (384, 384),
    Modality.DRONE: (384, 384),
    Modality.STREETMAP: (384, 384),
    Modality.PANORAMA: (768, 384),
    Modality.GROUND: (384, 384),
}


class ImageLimits(StrictModel):
    min_side: int = Field(32, ge=1, description="smaller images are rejected as too_small")
    max_side: int = Field(30_000, ge=1, description="larger sides are rejected as too_large")
    max_pixels: int = Field(120_000_000, ge=1, description="decompression-bomb guard (pixel_limit)")
    max_bytes: int = Field(200 * 1024 * 1024, ge=1, description="larger files are rejected unread")
    jpeg_quality: int = Field(90, ge=30, le=100)


class SplitConfig(StrictModel):
    """Used only where the dataset defines no split of its own."""

    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    salt: str = "gleam"

    @field_validator("test_fraction")
    @classmethod
    def _fractions_leave_train(cls, value: float, info: Any) -> float:
        if value + info.data.get("val_fraction", 0.0) >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave something for train")
        return value


class PrepareConfig(StrictModel):
    """`jobs/prepare.py`: raw corpora -> `<output>/<name>/{tiles,queries,rejects}` + manifest.json."""

    name: str = Field(pattern=NAME_PATTERN)
    output: str = Field(description="store URI; the corpus is written to <output>/<name>/")
    sources: list[SourceConfig] = Field(min_length=1)
    sizes: dict[Modality, tuple[int, int]] = Field(
        default_factory=lambda: dict(DEFAULT_SIZES), description="(width, height) per modality"
    )
    limits: ImageLimits = Field(default_factory=ImageLimits)
    split: SplitConfig = Field(default_factory=SplitConfig)
    batch_size: int | None = Field(
        None,
        ge=1,
        description="images per decode task (one input block, one output file per part); "
        "default: about 4 tasks per decode worker, at most rows_per_shard",
    )
    concurrency: int | None = Field(None, ge=1, description="parallel decode tasks; default: all CPUs")
    rows_per_shard: int = Field(2000, ge=1, description="rows per output Parquet file (at most)")
    image_codec: Literal["none", "snappy", "zstd"] = Field(
        "none", description="Parquet codec of the image column (JPEG bytes do not compress; others: zstd)"
    )
    warm_workers: bool = Field(True, description="start the decode workers' imports while listing")
    overwrite: bool = Field(False, description="replace a complete corpus made from another config")
    contact_sheet_pairs: int = Field(6, ge=0, le=64)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("sizes")
    @classmethod
    def _all_sizes(cls, value: dict[Modality, tuple[int, int]]) -> dict[Modality, tuple[int, int]]:
        merged = {**DEFAULT_SIZES, **value}
        for modality, (w, h) in merged.items():
            if w < 8 or h < 8:
                raise ValueError(f"size of {modality.value} must be at least 8x8, got {w}x{h}")
        return merged

    @property
    def corpus_uri(self) -> str:
        return storage.join(self.output, self.name)
