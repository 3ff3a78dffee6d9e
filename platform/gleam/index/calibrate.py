"""The match threshold served with an index: calibrated on validation queries against this very gallery.

"Is this photo of that tile?" needs a similarity threshold, and the right one depends on the encoder,
the modality and the gallery (a dense city of look-alike tiles needs a higher bar than open country).
So each build measures it: every sampled validation query's similarity to its own tile (positives) and
to the most similar other tile in the index (the hardest negative: exactly the mistake a served top-1
can make), and keeps the threshold with the best balanced accuracy, per modality and over all. On the
same pairs it fits the answer's confidence (`gleam.explain.confidence`: Platt scaling anchored at the
threshold), stored beside it. A modality with fewer than MIN_QUERIES validation queries is answered with
the pooled calibration (threshold and confidence over all modalities), and says so (`fallback`).

A threshold is only worth serving when it separates right from wrong better than a coin: each result
says `at_chance` (see AT_CHANCE_ACCURACY), and `index_quality` combines that with the spread of the
index's tile embeddings into what serving needs to know before it calls anything a match.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.compute as pc

from gleam.corpus.reader import PreparedCorpus
from gleam.corpus.schema import Modality
from gleam.explain.confidence import MIN_QUERIES, POOLED, fit_confidence

log = logging.getLogger(__name__)
NEGATIVES = "hardest other tile in the index"
# Balanced accuracy at or below which a calibration is "at chance": its threshold tells a right match
# from a wrong one at most 1 time in 20 better than a coin (0.5 is the floor: a threshold below every
# score). Scores that carry no information sit at 0.5 here, not above it, because the negative is the
# best of N-1 other tiles: an uninformative positive beats it with probability 1/N. Measured over 128
# validation queries against 200 tiles: 0.500 for a random-init encoder, a healthy-but-weak one (R@1 3x
# chance) and a collapsed one alike, 0.504 for a collapsing one; a threshold worth serving needs an
# encoder whose positives beat the hardest other tile, i.e. a top-1 well above chance.
AT_CHANCE_ACCURACY = 0.55


@dataclass
class ValidationQueries:
    """The sampled queries of a split whose tile is in the index, embedded per modality.

    What the calibration and the location fit (`gleam.index.location_fit`) share, so each query is read
    and embedded once. `rows[m]`: query_id, modality, tile_id, lat, lon (sorted by query_id);
    `vectors[m]`: their unit embeddings; `images`: JPEG bytes by query_id.
    """

    split: str
    rows: dict[str, list[dict[str, Any]]]
    vectors: dict[str, np.ndarray]
    images: dict[str, bytes] = field(repr=False)

    @property
    def count(self) -> int:
        return sum(len(rows) for rows in self.rows.values())


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
    sampled = sample_queries(corpus, encoder, spec, tile_ids, split, max_queries, seed, batch_size)
    return calibrate_sampled(sampled, tile_ids, vectors) if sampled else None


def sample_queries(
    corpus: PreparedCorpus,
    encoder: Any,
    spec: Any,
    tile_ids: list[str],
    split: str,
    max_queries: int,
    seed: int,
    batch_size: int = 64,
) -> ValidationQueries | None:
    """At most `max_queries` (seeded) queries of `split` whose tile is indexed, embedded; None: too few."""
    from gleam.model.embedding import embed_images

    split = str(getattr(split, "value", split))
    if not corpus.files("queries"):
        log.info("no calibration: the corpus has no queries")
        return None
    positions = {tile: n for n, tile in enumerate(tile_ids)}
    columns = ["query_id", "modality", "tile_id", "lat", "lon"]
    queries = corpus.read("queries", columns, pc.field("split") == split)
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
    grouped: dict[str, list[dict[str, Any]]] = {}
    embedded: dict[str, np.ndarray] = {}
    for modality in sorted({r["modality"] for r in rows}):
        group = [r for r in rows if r["modality"] == modality]
        grouped[modality] = group
        embedded[modality] = np.concatenate(
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
    return ValidationQueries(split, grouped, embedded, by_id)


def calibrate_sampled(sampled: ValidationQueries, tile_ids: list[str], vectors: np.ndarray) -> dict[str, Any]:
    """meta.json's `calibration` from the sampled queries' similarities to their own and other tiles."""
    positions = {tile: n for n, tile in enumerate(tile_ids)}
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for modality, group in sampled.rows.items():
        own = np.array([positions[r["tile_id"]] for r in group])
        pairs[modality] = _pair_scores(sampled.vectors[modality], own, vectors)
    overall, by_modality = calibrate_pairs(pairs)
    if is_at_chance(overall["accuracy"]):
        log.info(  # the build job warns once, with what it means
            "calibration at chance: the best match threshold (%.4f) reaches a balanced accuracy of %.3f "
            "on %d %s queries; this index's scores do not tell a right match from a wrong one",
            overall["threshold"],
            overall["accuracy"],
            sampled.count,
            sampled.split,
        )
    return {
        **overall,
        "split": sampled.split,
        "queries": sampled.count,
        "negative_kind": NEGATIVES,
        "by_modality": by_modality,
    }


def calibrate_pairs(
    pairs: dict[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the pooled calibration, one per modality) from each modality's (positive, negative) scores.

    A modality with fewer than MIN_QUERIES queries keeps its measured threshold for the record, but
    gets no confidence of its own and `fallback: POOLED`: it is answered with the pooled calibration.
    """
    by_modality: dict[str, dict[str, Any]] = {}
    for modality, (positive, negative) in sorted(pairs.items()):
        own = calibration_entry(positive, negative, fit=len(positive) >= MIN_QUERIES)
        if own["confidence"] is None:
            own["fallback"] = POOLED
        by_modality[modality] = {**own, "queries": len(positive)}
    every_positive = np.concatenate([positive for positive, _ in pairs.values()])
    every_negative = np.concatenate([negative for _, negative in pairs.values()])
    return calibration_entry(every_positive, every_negative, fit=True), by_modality


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


def calibration_entry(positive: np.ndarray, negative: np.ndarray, fit: bool) -> dict[str, Any]:
    """One calibration: threshold, balanced accuracy, `at_chance` and (when `fit`) the fitted confidence."""
    from gleam.explain.evidence import calibrate

    entry = calibrate(positive, negative).to_dict()
    entry["at_chance"] = is_at_chance(entry["accuracy"])
    entry["confidence"] = fit_confidence(positive, negative, entry["threshold"]).to_dict() if fit else None
    return entry


def calibration_for(
    calibration: dict[str, Any] | None, modality: str | None
) -> tuple[dict[str, Any], str] | None:
    """(the calibration a modality is answered with, its name): its own, or the pooled one (`POOLED`).

    Its own unless it has none or was too small to fit (`fallback`); indexes built before confidences
    were fitted have no `fallback`, so their modality keeps its own threshold as it always did.
    """
    if not calibration:
        return None
    own = (calibration.get("by_modality") or {}).get(modality or "")
    if own and not own.get("fallback"):
        return own, str(modality)
    return calibration, POOLED


def evidence_facts(meta: dict[str, Any], modality: str) -> dict[str, Any]:
    """What an index version tells the evidence answer for `modality` (`gleam.explain.evidence.Evidence`).

    modality, threshold, calibration (all of meta.json's), calibration_used (the modality or POOLED),
    confidence_model (None when not calibrated, or built before confidences were fitted) and quality.
    """
    calibration = meta.get("calibration")
    chosen = calibration_for(calibration, modality)
    used, name = chosen if chosen else ({}, None)
    return {
        "modality": modality,
        "threshold": float(used["threshold"]) if used else None,
        "calibration": calibration,
        "calibration_used": name,
        "confidence_model": used.get("confidence"),
        "quality": index_quality(meta.get("spread"), calibration, modality),
    }


def is_at_chance(accuracy: float) -> bool:
    return float(accuracy) <= AT_CHANCE_ACCURACY


def index_quality(
    spread: dict[str, Any] | None, calibration: dict[str, Any] | None, modality: str | None = None
) -> dict[str, Any]:
    """Can this index's scores tell places apart? From meta.json's `spread` and `calibration`.

    `collapsed` / `at_chance` are None when unknown (an index built before they were recorded has no
    `spread`; `at_chance` is then derived from the recorded balanced accuracy, which every calibrated
    index has). The calibration is the one the modality is answered with (`calibration_for`).
    `reliable` is False when either is True; `warning` says why in one sentence (None when reliable).
    """
    spread = spread or {}
    collapsed = spread.get("collapsed")
    chosen = calibration_for(calibration, modality)
    own: dict[str, Any] = chosen[0] if chosen else {}
    accuracy = own.get("accuracy")
    at_chance = own.get("at_chance")
    if at_chance is None and accuracy is not None:
        at_chance = is_at_chance(accuracy)
    quality: dict[str, Any] = {
        "collapsed": None if collapsed is None else bool(collapsed),
        "at_chance": None if at_chance is None else bool(at_chance),
        "mean_cosine": spread.get("mean_cosine"),
        "effective_rank": spread.get("effective_rank"),
        "accuracy": None if accuracy is None else float(accuracy),
        "queries": own.get("queries"),
    }
    reasons = []
    if quality["collapsed"]:
        reasons.append(
            f"its tile embeddings have collapsed (mean pairwise cosine {_figure(quality['mean_cosine'], 4)}, "
            f"effective rank {_figure(quality['effective_rank'], 1)})"
        )
    if quality["at_chance"]:
        queries = f" on {quality['queries']} validation queries" if quality["queries"] else ""
        reasons.append(
            "its calibrated match threshold separates right from wrong matches no better than chance "
            f"(balanced accuracy {_figure(quality['accuracy'], 2)}{queries})"
        )
    quality["reliable"] = not reasons
    # collapsed: the vectors themselves are alike; at chance only: the ranking may still beat chance,
    # but a score cannot say whether a top-1 is right, so no score-based verdict is honest
    lead = (
        "the encoder cannot tell places apart on this index: "
        if quality["collapsed"]
        else "on this index the encoder's similarity cannot confirm a match: "
    )
    quality["warning"] = lead + "; ".join(reasons) if reasons else None
    return quality


def _figure(value: Any, digits: int) -> str:
    return f"{float(value):.{digits}f}" if isinstance(value, (int, float)) else "unknown"
