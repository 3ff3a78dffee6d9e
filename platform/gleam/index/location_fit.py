"""The location radius, fitted at index build on the calibration's validation queries (docs/index.md).

For each sampled validation query whose own lat/lon is known: its top-k candidates in the index (exact
search over the index's vectors, as the calibration does), the three estimates `gleam.index.location`
serves (the top-1 centre, the fused point, and for a bounded seeded sample the refined point from the
evidence heatmap on the top tile: one forward of query and tile each), and each one's distance to the
query's own position. `fit_location` turns those errors into the radius per method and modality.

The estimates are made exactly as serving makes them (same fusion, same confidence, same k), but
without the reliability gate: an index whose calibration is at chance still records its radius (what
its errors are), and serving answers "unknown" on it anyway. Queries without coordinates, and queries
whose top tile has none, are left out and counted (`left_out`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gleam import geo
from gleam.corpus.reader import PreparedCorpus
from gleam.index.calibrate import ValidationQueries
from gleam.index.location import fit_location, fuse, peak_offset_m, probabilities

log = logging.getLogger(__name__)


def tile_candidates(tiles: pa.Table) -> list[dict[str, Any]]:
    """Per index position: tile_id, lat, lon, gsd_m, width, height (None where unknown)."""
    names = ["tile_id", "lat", "lon", "gsd_m", "width", "height"]
    columns = {n: tiles[n].to_pylist() if n in tiles.column_names else [None] * tiles.num_rows for n in names}
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def ranked_candidates(
    queries: np.ndarray, vectors: np.ndarray, tiles: Sequence[dict[str, Any]], k: int
) -> list[list[dict[str, Any]]]:
    """Each query's top-k tiles by exact inner product, as candidate dicts with their score."""
    import faiss

    k = min(k, len(vectors))
    scores, ids = faiss.knn(
        np.ascontiguousarray(queries, dtype=np.float32),
        np.ascontiguousarray(vectors, dtype=np.float32),
        k,
        metric=faiss.METRIC_INNER_PRODUCT,
    )
    return [
        [{**tiles[int(i)], "score": float(s)} for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
        for row_ids, row_scores in zip(ids, scores, strict=True)
    ]


def fit_on_queries(
    sampled: ValidationQueries,
    meta: dict[str, Any],
    corpus: PreparedCorpus,
    tiles: pa.Table,
    vectors: np.ndarray,
    model_and_spec: tuple[Any, Any],
    coverage: float,
    k: int,
    refine_queries: int,
    seed: int,
) -> dict[str, Any] | None:
    """meta.json's `location` (None when no query could be measured or there is no fitted confidence)."""
    table = tile_candidates(tiles)
    refine = _refine_sample(sampled, refine_queries, seed)
    errors: dict[str, dict[str, list[float]]] = {}
    left_out = {"queries_without_coordinates": 0, "top_tile_without_coordinates": 0}
    pending: list[tuple[str, dict[str, Any], dict[str, Any]]] = []  # (modality, query row, top candidate)
    for modality, rows in sampled.rows.items():
        ranked = ranked_candidates(sampled.vectors[modality], vectors, table, k)
        own = errors.setdefault(modality, {"top1": [], "fused": [], "refined": []})
        for row, candidates in zip(rows, ranked, strict=True):
            if not _known(row.get("lat")) or not _known(row.get("lon")):
                left_out["queries_without_coordinates"] += 1
                continue
            top = candidates[0]
            if not _known(top.get("lat")) or not _known(top.get("lon")):
                left_out["top_tile_without_coordinates"] += 1
                continue
            p = probabilities(candidates, modality, meta)
            if p is None:
                return None  # no fitted confidence: nothing to weigh candidates with
            own["top1"].append(_error(row, (top["lat"], top["lon"])))
            point = fuse(candidates, p)
            if point.method != "fused":
                continue
            own["fused"].append(_error(row, point.latlon))
            if row["query_id"] in refine and _known(top.get("gsd_m")):
                pending.append((modality, row, top))
    _refined_errors(pending, errors, sampled, corpus, model_and_spec)
    fitted = fit_location(errors, coverage, k, left_out, sampled.split)
    if fitted is not None:
        fitted["refine_sample"] = len(pending)
    return fitted


def _refined_errors(
    pending: list[tuple[str, dict[str, Any], dict[str, Any]]],
    errors: dict[str, dict[str, list[float]]],
    sampled: ValidationQueries,
    corpus: PreparedCorpus,
    model_and_spec: tuple[Any, Any],
) -> None:
    """The refined estimate's error of each pending query: its heatmap's peak on its top tile."""
    if not pending:
        return
    from gleam.explain.evidence import match_heatmap

    model, spec = model_and_spec
    wanted = sorted({top["tile_id"] for _, _, top in pending})
    read = corpus.read("tiles", ["tile_id", "image"], pc.field("tile_id").isin(wanted))
    images = dict(zip(read["tile_id"].to_pylist(), read["image"].to_pylist(), strict=True))
    for modality, row, top in pending:
        query, tile = sampled.images[row["query_id"]], images[top["tile_id"]]
        grid = match_heatmap(model, spec, query, modality, tile).grid
        east, north = peak_offset_m(grid, float(top["gsd_m"]), int(top["width"]), int(top["height"]))
        refined = geo.offset_to_latlon(top["lat"], top["lon"], east, north)
        errors[modality]["refined"].append(_error(row, refined))


def _refine_sample(sampled: ValidationQueries, size: int, seed: int) -> set[str]:
    """A seeded sample of at most `size` query ids: the ones whose heatmap is computed."""
    ids = sorted(r["query_id"] for rows in sampled.rows.values() for r in rows)
    if len(ids) <= size:
        return set(ids)
    keep = np.random.default_rng(seed + 2).choice(len(ids), size, replace=False)
    return {ids[int(i)] for i in keep}


def _error(row: dict[str, Any], latlon: tuple[float, float]) -> float:
    return float(geo.distance_m(row["lat"], row["lon"], latlon[0], latlon[1]))


def _known(value: Any) -> bool:
    return value is not None and bool(np.isfinite(value))
