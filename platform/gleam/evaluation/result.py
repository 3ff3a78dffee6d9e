"""What an evaluation returns: per-modality metrics, and through an index its comparison with exact search.

A module of its own so the job, the through-index path and the report table share the types without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gleam.retrieval.spread import Spread


@dataclass(frozen=True)
class IndexComparison:
    """The published index searched, and exact search over its own vectors at the same depth."""

    name: str
    version: str
    index_key: str
    search_params: dict[str, int]
    depth: int  # results per query on both sides
    exact: dict[str, dict[str, float]]
    gap: dict[str, dict[str, float]]  # index minus exact, in percentage points


@dataclass(frozen=True)
class DistanceErrors:
    """One modality's distance errors (gleam.evaluation.distance): per estimate ("top1", "fused",
    "refined"), queries, median_m, mean_m, within_<d>m (%), and where a radius was fitted radius_m (the
    median of the radii the queries would be served with) and coverage (% of errors within each query's
    radius); "refined" also has refined_pct (% whose estimate moved to the heatmap's peak). `skipped`
    queries had no coordinates (or their top tile had none); `unknown` of the `measured` queries would be
    served "position unknown"."""

    methods: dict[str, dict[str, float]]
    skipped: dict[str, int]
    unknown: int
    measured: int
    coverage_target: float | None  # the share the radius was fitted to cover (0.68), None: no radius


@dataclass(frozen=True)
class EvaluationResult:
    """Per-modality metrics (percentages, University-1652 names: R@1, R@5, R@10, R@1%, AP).

    Through an index, `metrics` are the index's and `index` holds exact search and the gap.
    """

    metrics: dict[str, dict[str, float]]
    gallery_size: int
    query_counts: dict[str, int]
    run_id: str | None
    split: str
    encoder_fingerprint: str
    index: IndexComparison | None = field(default=None)
    spread: Spread | None = field(default=None)  # of the gallery's tile embeddings
    one_percent: str = "platform"  # R@1%'s convention (gleam.retrieval.metrics.one_percent_rank)
    # distance errors per modality (None: not measured); `location_fit` says where the calibration and
    # radius came from (the index's, fitted at build, or 2-fold cross-fitting on the evaluated split)
    distances: dict[str, DistanceErrors] | None = field(default=None)
    location_fit: str | None = None
    # sets scored as sets per modality: {"mean": metrics, "agreement": metrics, "sets": n} (None: no sets)
    sets: dict[str, dict[str, Any]] | None = field(default=None)

    @property
    def chance_r1(self) -> float:
        """R@1 of a random ranking, the floor any trained encoder must clear."""
        return 100.0 / self.gallery_size
