"""The match threshold served with an index: calibrated on validation queries against this very gallery.

"Is this photo of that tile?" needs a similarity threshold, and the right one depends on the encoder,
the modality and the gallery (a dense city of look-alike tiles needs a higher bar than open country).
So each build measures it: every sampled validation query's similarity to its own tile (positives) and
to the most similar other tile in the index (the hardest negative: exactly the mistake a served top-1
can make), and keeps the threshold with the best balanced accuracy, per modality and over all.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow.compute as pc

from gleam.corpus.reader import PreparedCorpus
from gleam.corpus.schema import Modality

log = logging.getLogger(__name__)
NEGATIVES = "hardest other tile in the index"


def calibrate_on_queries(
    corpus: PreparedCorpus,
    encoder: Any,
    spec: Any,
    tile_ids: list[str],
    vectors: np.ndarray,
    split: str,
    max_queries: int,
    seed: int,
    batch_size: int = 64,
) -> dict[str, Any] | None:
    """meta.json's `calibration`, or None when the split has no query whose tile is in the index."""
    from gleam.evaluation.evaluate import embed_images
    from gleam.explain.evidence import calibrate

    split = str(getattr(split, "value", split))
    if not corpus.files("queries"):
        log.info("no calibration: the corpus has no queries")
        return None
    positions = {tile: n for n, tile in enumerate(tile_ids)}
    queries = corpus.read("queries", ["query_id", "modality", "tile_id"], pc.field("split") == split)
    rows = [r for r in queries.sort_by("query_id").to_pylist() if r["tile_id"] in positions]
    if len(rows) < 2 or len(tile_ids) < 2:
        log.info("no calibration: %d %s queries with an indexed tile", len(rows), split)
        return None
    if len(rows) > max_queries:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_queries, replace=False))
        rows = [rows[i] for i in keep]
    wanted = pc.field("query_id").isin([r["query_id"] for r in rows])
    images = corpus.read("queries", ["query_id", "image"], wanted)
    by_id = dict(zip(images["query_id"].to_pylist(), images["image"].to_pylist(), strict=True))
    by_modality: dict[str, dict[str, Any]] = {}
    every_positive: list[np.ndarray] = []
    every_negative: list[np.ndarray] = []
    for modality in sorted({r["modality"] for r in rows}):
        group = [r for r in rows if r["modality"] == modality]
        embedded = np.concatenate(
            [
                embed_images(
                    encoder,
                    spec,
                    [by_id[r["query_id"]] for r in group[i : i + batch_size]],
                    Modality(modality),
                )
                for i in range(0, len(group), batch_size)
            ]
        )
        own = np.array([positions[r["tile_id"]] for r in group])
        positive, negative = _pair_scores(embedded, own, vectors)
        by_modality[modality] = {**calibrate(positive, negative).to_dict(), "queries": len(group)}
        every_positive.append(positive)
        every_negative.append(negative)
    overall = calibrate(np.concatenate(every_positive), np.concatenate(every_negative)).to_dict()
    return {
        **overall,
        "split": split,
        "queries": len(rows),
        "negative_kind": NEGATIVES,
        "by_modality": by_modality,
    }


def _pair_scores(queries: np.ndarray, own: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(similarity to the own tile, similarity to the best other tile) per query, by exact search."""
    import faiss

    scores, ids = faiss.knn(
        np.ascontiguousarray(queries, dtype=np.float32),
        np.ascontiguousarray(vectors, dtype=np.float32),
        2,
        metric=faiss.METRIC_INNER_PRODUCT,
    )
    positive = np.einsum("ij,ij->i", queries, vectors[own])
    negative = np.where(ids[:, 0] == own, scores[:, 1], scores[:, 0])
    return positive.astype(np.float64), negative.astype(np.float64)


def threshold_for(calibration: dict[str, Any] | None, modality: str) -> float | None:
    """The modality's own threshold when it was calibrated, else the overall one."""
    if not calibration:
        return None
    own = (calibration.get("by_modality") or {}).get(modality)
    return float(own["threshold"]) if own else float(calibration["threshold"])
