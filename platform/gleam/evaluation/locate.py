"""The distance-error step of both evaluation modes: their inputs, and how the figures are logged.

`gleam.evaluation.distance` computes; this module gathers what it needs from each mode (the exact
search over a split, or a published index with its own calibration and radius) and records the result
as MLflow metrics (`<modality>.distance.<estimate>.<figure>`, prefixed `index.` through an index) and
as the `distances` block of metrics.json.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gleam.corpus.reader import PreparedCorpus
from gleam.evaluation.distance import (
    ModalityInputs,
    QueryErrors,
    cross_fitted,
    heatmap_refiner,
    pair_scores,
    query_errors,
    query_positions,
    ranked,
)
from gleam.evaluation.result import DistanceErrors
from gleam.index.catalog import OpenedIndex
from gleam.index.location import DEFAULT_K
from gleam.model.embedding import Embedded
from gleam.retrieval.search import SearchFn
from gleam.tracking import JobRun

CROSS_FITTED = "2-fold cross-fitting on the evaluated split's queries (each half fitted on the other)"


def exact_inputs(
    corpus: PreparedCorpus,
    search: SearchFn,
    gallery: Embedded,
    geometry: dict[str, dict[str, Any]],
    queries: Embedded,
    modality: str,
    refine_with: tuple[Any, Any] | None,
) -> ModalityInputs:
    """One modality's candidates (top DEFAULT_K of the split's gallery), positions and calibration pairs."""
    candidates = ranked(search, queries.vectors, min(DEFAULT_K, len(gallery.ids)), geometry)
    positions = {tile: n for n, tile in enumerate(gallery.ids)}
    own = np.array(
        [
            float(queries.vectors[i] @ gallery.vectors[positions[label]]) if label in positions else np.nan
            for i, label in enumerate(queries.labels)
        ]
    )
    positive, negative = pair_scores(candidates, queries.labels, own)
    refine = heatmap_refiner(corpus, *refine_with, modality, queries.ids) if refine_with else None
    return ModalityInputs(candidates, query_positions(corpus, queries.ids), positive, negative, refine)


def exact_distances(
    inputs: dict[str, ModalityInputs], spread: dict[str, Any], coverage: float
) -> dict[str, DistanceErrors]:
    """Per modality, distance errors with a calibration and radius cross-fitted on the split's queries."""
    return {m: errors.report(coverage) for m, errors in cross_fitted(inputs, spread, coverage).items()}


def index_geometry(opened: OpenedIndex) -> dict[str, dict[str, Any]]:
    """tile_id -> lat, lon, gsd_m, width, height of every tile the index holds (None where unknown)."""
    return {tile: opened.geometry(n) for n, tile in enumerate(opened.tile_ids.tolist())}


def index_distances(
    corpus: PreparedCorpus,
    opened: OpenedIndex,
    geometry: dict[str, dict[str, Any]],
    queries: Embedded,
    modality: str,
    refine_with: tuple[Any, Any] | None,
) -> DistanceErrors:
    """One modality's distance errors through the index, with its own calibration and radius."""
    location = opened.meta.get("location") or {}
    k = min(int(location.get("k") or DEFAULT_K), len(opened))
    candidates = ranked(opened.search, queries.vectors, k, geometry)
    refine = heatmap_refiner(corpus, *refine_with, modality, queries.ids) if refine_with else None
    positions = query_positions(corpus, queries.ids)
    errors: QueryErrors = query_errors(candidates, positions, modality, opened.meta, refine)
    return errors.report(location.get("coverage"))


def index_fit(opened: OpenedIndex) -> str:
    location = opened.meta.get("location")
    if not location:
        return f"index {opened.name} {opened.version} has no fitted radius (built before radii were fitted)"
    return (
        f"calibration and radius of index {opened.name} {opened.version}, fitted at build on "
        f"{location.get('split')} queries (held out from this split)"
    )


def log_distances(run: JobRun, distances: dict[str, DistanceErrors], prefix: str = "") -> None:
    """`<prefix><modality>.distance.<estimate>.<figure>` and `<modality>.distance.unknown_pct`."""
    metrics: dict[str, float] = {}
    for modality, found in distances.items():
        for method, figures in found.methods.items():
            metrics |= {f"{prefix}{modality}.distance.{method}.{k}": v for k, v in figures.items()}
        if found.measured:
            metrics[f"{prefix}{modality}.distance.unknown_pct"] = 100.0 * found.unknown / found.measured
        for reason, count in found.skipped.items():
            metrics[f"{prefix}{modality}.distance.skipped.{reason}"] = float(count)
    run.log_metrics(metrics)


def distances_json(distances: dict[str, DistanceErrors], fit: str) -> dict[str, Any]:
    """metrics.json's `distances`: how the radius was fitted, and per modality what was measured."""
    return {
        "fitted": fit,
        "by_modality": {
            modality: {
                "methods": found.methods,
                "skipped": found.skipped,
                "unknown": found.unknown,
                "measured": found.measured,
                "coverage_target": found.coverage_target,
            }
            for modality, found in distances.items()
        },
    }
