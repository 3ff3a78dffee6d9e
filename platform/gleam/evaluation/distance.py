"""Distance errors in metres, next to R@k: how far each estimate of `gleam.index.location` lands from the
photo's own position, and how often its radius holds it (docs/evaluation.md, "Distance errors").

Per modality and estimate ("top1": the top tile's centre; "fused": the probability-weighted centre of
the most probable neighbourhood of candidates; "refined": the evidence heatmap's peak on the top tile,
when asked for), over the queries whose own lat/lon and top tile's lat/lon are known (the others are
skipped and counted): the median and mean error, the share within 25 / 50 / 100 / 500 m, and the
radius's measured coverage, the share of errors within the radius serving would give that query.
Errors are measured to the query's own lat/lon (a photo's camera), never to its tile's centre.

The estimates are made without serving's reliability gate, so an index at chance still shows what its
errors are; `unknown` counts the queries serving would answer "position unknown".

Where the calibration and radius come from:
- through an index: the index's own, fitted on validation queries at build, so the coverage measured
  on the evaluated split is held out;
- exact search over a split: nothing was fitted on it, so both are fitted by 2-fold cross-fitting on the
  split's own queries (seeded halves per modality; each half's calibration and radius are fitted on it
  and measured on the other half), which keeps every measured coverage held out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.compute as pc

from gleam import geo
from gleam.corpus.reader import PreparedCorpus
from gleam.evaluation.result import DistanceErrors
from gleam.index.calibrate import calibrate_pairs
from gleam.index.location import (
    DEFAULT_K,
    METHODS,
    estimate_location,
    fit_location,
    fuse,
    peak_offset_m,
    probabilities,
    radius_for,
)
from gleam.retrieval.search import SearchFn

log = logging.getLogger(__name__)
WITHIN_M = (25, 50, 100, 500)
FOLDS_SEED = 0
SKIPPED = ("queries_without_coordinates", "top_tile_without_coordinates")
# refine(i, top): (east, north) of query i's heatmap peak on its top tile, None when it cannot be computed
Refine = Callable[[int, dict[str, Any]], tuple[float, float] | None]


def figures(errors: np.ndarray, radius: float | None = None) -> dict[str, float]:
    """queries, median_m, mean_m, within_<d>m (%) and, with a radius, radius_m and coverage (%)."""
    errors = np.asarray(errors, dtype=np.float64)
    out: dict[str, float] = {"queries": float(errors.size)}
    if not errors.size:
        return out
    out["median_m"] = float(np.median(errors))
    out["mean_m"] = float(np.mean(errors))
    for limit in WITHIN_M:
        out[f"within_{limit}m"] = float(100.0 * np.mean(errors <= limit))
    if radius is not None:
        out["radius_m"] = float(radius)
        out["coverage"] = float(100.0 * np.mean(errors <= radius))
    return out


@dataclass
class QueryErrors:
    """One modality's per-query errors by method (NaN: that estimate does not apply), the radius each
    would be served with, and whether serving would give a position at all (`served_known`).

    "refined" is the estimate served with refinement on: the heatmap's peak where refinement applies
    (the top tile has a gsd_m), the fused point elsewhere, each with
    its own radius, so it compares with "fused" over the same queries."""

    errors: dict[str, np.ndarray]
    radii: dict[str, np.ndarray]  # the radius each query's estimate would be served with (NaN: none)
    served_known: np.ndarray  # bool per measured query
    skipped: dict[str, int] = field(default_factory=dict)
    # per measured query: its "refined" estimate is the heatmap's peak (not the fused point)
    peaked: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def fitting_errors(self) -> dict[str, np.ndarray]:
        """What a radius is fitted on, as at index build: each estimate where it is the one served
        (the refined radius on the queries whose estimate moved to the heatmap's peak only)."""
        out = {m: e[np.isfinite(e)] for m, e in self.errors.items() if m != "refined"}
        refined = self.errors["refined"]
        out["refined"] = refined[self.peaked & np.isfinite(refined)]
        return out

    @classmethod
    def empty(cls) -> QueryErrors:
        nothing = {m: np.zeros(0) for m in METHODS}
        none = np.zeros(0, dtype=bool)
        return cls(nothing, dict(nothing), none, dict.fromkeys(SKIPPED, 0), none)

    def join(self, other: QueryErrors) -> QueryErrors:
        return QueryErrors(
            {m: np.concatenate([self.errors[m], other.errors[m]]) for m in METHODS},
            {m: np.concatenate([self.radii[m], other.radii[m]]) for m in METHODS},
            np.concatenate([self.served_known, other.served_known]),
            {k: self.skipped.get(k, 0) + other.skipped.get(k, 0) for k in SKIPPED},
            np.concatenate([self.peaked, other.peaked]),
        )

    def report(self, coverage: float | None) -> DistanceErrors:
        methods = {}
        for method in METHODS:
            measured = np.isfinite(self.errors[method])
            if not measured.any():
                continue
            errors, radii = self.errors[method][measured], self.radii[method][measured]
            out = figures(errors)
            with_radius = np.isfinite(radii)
            if with_radius.any():
                out["radius_m"] = float(np.median(radii[with_radius]))
                out["coverage"] = float(100.0 * np.mean(errors[with_radius] <= radii[with_radius]))
            if method == "refined":
                out["refined_pct"] = float(100.0 * self.peaked[measured].sum() / errors.size)
            methods[method] = out
        return DistanceErrors(
            methods=methods,
            skipped=dict(self.skipped),
            unknown=int((~self.served_known).sum()),
            measured=int(self.served_known.size),
            coverage_target=coverage,
        )


def query_errors(
    candidates: Sequence[list[dict[str, Any]]],
    query_latlon: Sequence[tuple[float | None, float | None]],
    modality: str,
    meta: dict[str, Any],
    refine: Refine | None = None,
) -> QueryErrors:
    """The errors of each query's estimates under an index's meta (calibration, spread, location).

    `refine(i, top)`: the heatmap peak's offset for query i on its top tile (None: not computed).
    """
    location = meta.get("location")
    k = int((location or {}).get("k") or DEFAULT_K)
    rows: dict[str, list[float]] = {m: [] for m in METHODS}
    radii: dict[str, list[float]] = {m: [] for m in METHODS}
    known: list[bool] = []
    skipped = dict.fromkeys(SKIPPED, 0)
    peaked: list[bool] = []  # the refined estimate is the heatmap's peak (else the fused point)
    for i, (found, (lat, lon)) in enumerate(zip(candidates, query_latlon, strict=True)):
        top = [c for c in found[:k] if c.get("tile_id") is not None]
        if not _known(lat) or not _known(lon):
            skipped["queries_without_coordinates"] += 1
            continue
        if not top or not _known(top[0].get("lat")) or not _known(top[0].get("lon")):
            skipped["top_tile_without_coordinates"] += 1
            continue
        point: dict[str, tuple[float, float]] = {"top1": (top[0]["lat"], top[0]["lon"])}
        offset = None
        p = probabilities(top, modality, meta)
        fused = fuse(top, p) if p is not None else None
        served_as = {"top1": "top1", "fused": "fused", "refined": "fused"}
        if fused is not None and fused.method == "fused":
            point["fused"] = fused.latlon
            if refine is not None:
                # with refinement on, the estimate served: the heatmap's peak where it applies, else fused
                point["refined"] = fused.latlon
                if _known(top[0].get("gsd_m")):
                    offset = refine(i, top[0])
                if offset is not None:
                    point["refined"] = geo.offset_to_latlon(top[0]["lat"], top[0]["lon"], *offset)
                    served_as["refined"] = "refined"
        for method in METHODS:
            at = point.get(method)
            rows[method].append(np.nan if at is None else float(geo.distance_m(lat, lon, at[0], at[1])))
            radius = radius_for(location, modality, served_as[method]) if at is not None else None
            radii[method].append(np.nan if radius is None else radius[0])
        known.append(estimate_location(top, modality, meta, offset).known)
        peaked.append(served_as["refined"] == "refined")
    return QueryErrors(
        {m: np.asarray(v, dtype=np.float64) for m, v in rows.items()},
        {m: np.asarray(v, dtype=np.float64) for m, v in radii.items()},
        np.asarray(known, dtype=bool),
        skipped,
        np.asarray(peaked, dtype=bool),
    )


# --- inputs: candidates with coordinates, query positions, heatmaps ----------------------------------------


def tile_geometry(corpus: PreparedCorpus, tile_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """tile_id -> lat, lon, gsd_m, width, height (None where unknown) for the given tiles."""
    columns = ["tile_id", "lat", "lon", "gsd_m", "width", "height"]
    table = corpus.read("tiles", columns, pc.field("tile_id").isin(list(tile_ids)))
    return {row["tile_id"]: row for row in table.to_pylist()}


def query_positions(
    corpus: PreparedCorpus, query_ids: Sequence[str]
) -> list[tuple[float | None, float | None]]:
    """Each query's own (lat, lon), in `query_ids` order (None where unknown)."""
    table = corpus.read("queries", ["query_id", "lat", "lon"], pc.field("query_id").isin(list(query_ids)))
    by_id = {r["query_id"]: (r["lat"], r["lon"]) for r in table.to_pylist()}
    return [by_id.get(q, (None, None)) for q in query_ids]


def ranked(
    search: SearchFn, vectors: np.ndarray, k: int, geometry: dict[str, dict[str, Any]]
) -> list[list[dict[str, Any]]]:
    """Each query's top-k candidates as `estimate_location` takes them (tile_id, score, geometry)."""
    scores, tiles = search(vectors, k)
    out = []
    for row_scores, row_tiles in zip(scores, tiles, strict=True):
        out.append(
            [
                {**_geometry(geometry, t), "tile_id": t, "score": float(s)}
                for t, s in zip(row_tiles, row_scores, strict=True)
                if t is not None
            ]
        )
    return out


def heatmap_refiner(
    corpus: PreparedCorpus, encoder: Any, spec: Any, modality: str, query_ids: Sequence[str]
) -> Refine:
    """refine(i, top): the peak offset of query i's heatmap on its top tile (one forward each, cached)."""
    from gleam.explain.evidence import match_heatmap

    cache: dict[tuple[int, str], tuple[float, float] | None] = {}

    def refine(i: int, top: dict[str, Any]) -> tuple[float, float] | None:
        key = (i, str(top["tile_id"]))
        if key not in cache:
            query = _image(corpus, "queries", "query_id", query_ids[i])
            tile = _image(corpus, "tiles", "tile_id", top["tile_id"])
            if query is None or tile is None or not top.get("width") or not top.get("height"):
                cache[key] = None
            else:
                grid = match_heatmap(encoder, spec, query, modality, tile).grid
                cache[key] = peak_offset_m(grid, float(top["gsd_m"]), int(top["width"]), int(top["height"]))
        return cache[key]

    return refine


# --- exact mode: 2-fold cross-fitting -----------------------------------------------------------------------


@dataclass
class ModalityInputs:
    """What cross-fitting needs of one modality: candidates, positions, calibration pairs, a refiner."""

    candidates: list[list[dict[str, Any]]]
    positions: list[tuple[float | None, float | None]]
    positive: np.ndarray  # similarity to the own tile (NaN: the own tile is not in the gallery)
    negative: np.ndarray  # similarity to the best other tile
    refine: Refine | None = None


def pair_scores(
    candidates: Sequence[list[dict[str, Any]]], labels: Sequence[str], own_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) per query: the own tile's similarity, and the best other candidate's."""
    pairs = zip(candidates, labels, strict=True)
    other = [next((c["score"] for c in found if c["tile_id"] != label), np.nan) for found, label in pairs]
    negative = np.array(other, dtype=np.float64)
    return np.asarray(own_scores, dtype=np.float64), negative


def cross_fitted(
    inputs: dict[str, ModalityInputs], spread: dict[str, Any] | None, coverage: float, k: int = DEFAULT_K
) -> dict[str, QueryErrors]:
    """Per modality, every query's errors under a calibration and radius fitted on the other half."""
    folds = {m: _folds(len(x.candidates), FOLDS_SEED) for m, x in inputs.items()}
    out = {m: QueryErrors.empty() for m in inputs}
    for fold in (0, 1):
        meta = _fold_meta(inputs, folds, fold, spread, coverage, k)
        for modality, x in inputs.items():
            held = np.flatnonzero(folds[modality] != fold)
            errors = query_errors(
                [x.candidates[i] for i in held],
                [x.positions[i] for i in held],
                modality,
                meta,
                _shifted(x.refine, held),
            )
            out[modality] = out[modality].join(errors)
    return out


def _fold_meta(
    inputs: dict[str, ModalityInputs],
    folds: dict[str, np.ndarray],
    fold: int,
    spread: dict[str, Any] | None,
    coverage: float,
    k: int,
) -> dict[str, Any]:
    """The meta.json an index built on this fold's queries would hold: calibration, spread, location."""
    pairs = {}
    for modality, x in inputs.items():
        mine = (folds[modality] == fold) & np.isfinite(x.positive) & np.isfinite(x.negative)
        if mine.any():
            pairs[modality] = (x.positive[mine], x.negative[mine])
    meta: dict[str, Any] = {"spread": spread, "calibration": None}
    if not pairs:
        return meta
    overall, by_modality = calibrate_pairs(pairs)
    meta["calibration"] = {**overall, "by_modality": by_modality}
    meta["location"] = {"k": k}
    errors = {}
    for modality, x in inputs.items():
        mine = np.flatnonzero(folds[modality] == fold)
        fitted = query_errors(
            [x.candidates[i] for i in mine],
            [x.positions[i] for i in mine],
            modality,
            meta,
            _shifted(x.refine, mine),
        )
        errors[modality] = fitted.fitting_errors()
    meta["location"] = fit_location(errors, coverage, k)
    return meta


def _folds(n: int, seed: int) -> np.ndarray:
    """Two seeded halves: fold of each of n queries (0 or 1)."""
    folds = np.zeros(n, dtype=np.int64)
    folds[np.random.default_rng(seed).permutation(n)[: n // 2]] = 1
    return folds


def _shifted(refine: Refine | None, positions: np.ndarray) -> Refine | None:
    """`refine` for a subset: its i-th query is `positions[i]` of the whole."""
    if refine is None:
        return None
    return lambda i, top: refine(int(positions[i]), top)


def _geometry(geometry: dict[str, dict[str, Any]], tile_id: str) -> dict[str, Any]:
    found = geometry.get(tile_id) or {}
    return {k: found.get(k) for k in ("lat", "lon", "gsd_m", "width", "height")}


def _image(corpus: PreparedCorpus, part: str, id_column: str, item: str) -> bytes | None:
    table = corpus.read(part, ["image"], pc.field(id_column) == item)
    return table["image"][0].as_py() if table.num_rows else None


def _known(value: Any) -> bool:
    return value is not None and bool(np.isfinite(value))
