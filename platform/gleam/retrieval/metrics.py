"""Retrieval metrics in the University-1652 convention, vectorised over chunks of queries.

For each query the gallery is ranked by descending similarity and:

- R@k is 1 when the *first* correct gallery item is within the top k.
- AP follows University-1652's `compute_mAP`: for the i-th correct item (0-based) at 0-based rank r_i,
  precision_i = (i + 1) / (r_i + 1), old_precision_i = i / r_i (1 when r_i = 0), and
  AP = mean_i (old_precision_i + precision_i) / 2 (the trapezoid rule).
- Gallery items labelled -1 are junk: removed before ranking (they take no rank).
- R@1% is recall at rank max(1, floor(G / 100 + 0.5)) with G the number of non-junk gallery items
  (half rounds up: 250 -> 3, where Python's round(2.5) would give 2).
- Ties are pessimistic: a correct item tied in similarity with an incorrect one ranks after it, so a
  score cannot be gamed by gallery order (a constant similarity gives the worst ranks, not the best).
- Queries without any correct gallery item are skipped, counted in `queries_without_match`, and left
  out of every average; `queries` is the number evaluated. With none evaluated the metrics are NaN.

Two deliberate departures from University-1652's `evaluate_gpu.py` script, which divides by *all*
queries (so skipped ones count as zeros) and reports `CMC[round(len(gallery) * 0.01)]`, a 0-based
index, i.e. recall at rank round(1%) + 1 with junk counted in the gallery size.

Labels are integers; any other labels (e.g. strings) are mapped to integers through one vocabulary
shared by queries and gallery, with None as junk.

`ranked_metrics` computes the same figures from what a top-D search returned (an approximate index
never yields a full similarity matrix). The list is the ranking and everything it did not return comes
after it, so a positive missing from the list is a miss beyond depth D: it fails every R@k and adds 0
to AP (counted in `beyond_depth`). Ties are pessimistic within the list; a positive tied with the last
item of a full list that does not hold the whole gallery might tie with items past the end, so it is
beyond the list too. With that rule an exact top-(K+1) search gives exactly `retrieval_metrics`' R@k
for every k <= K, and AP up to the contributions of positives past the list (at most 1/(2(D+1)) each).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

JUNK = -1
# keys of a metrics dict that are counts (summed when results are combined), not percentages
COUNT_NAMES = ("queries", "queries_without_match", "beyond_depth")
# Above this many correct items per query, counting by one comparison pass per correct item costs
# more than sorting the row once.
_MAX_GOOD_FOR_COUNTING = 16
_CHUNK_ELEMENTS = 1 << 23


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view of a numpy array, torch tensor (any device or dtype) or sequence."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype.itemsize < 4:
            x = x.float()  # bf16/fp16 have no (or a poor) numpy counterpart
        return x.numpy()
    return np.asarray(x)


def _encode_labels(query_labels: Any, gallery_labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels for both sides; non-integer labels go through one shared vocabulary."""
    q, g = _to_numpy(query_labels).reshape(-1), _to_numpy(gallery_labels).reshape(-1)
    if np.issubdtype(q.dtype, np.integer) and np.issubdtype(g.dtype, np.integer):
        return q.astype(np.int64), g.astype(np.int64)
    vocab: dict[Any, int] = {}

    def encode(values: np.ndarray) -> np.ndarray:
        codes = [JUNK if v is None else vocab.setdefault(v, len(vocab)) for v in values.tolist()]
        return np.asarray(codes, dtype=np.int64)

    return encode(q), encode(g)


def one_percent_rank(gallery_size: int) -> int:
    """The rank for R@1%: 1% of the gallery rounded half up, at least 1 (exact integer arithmetic)."""
    return max(1, (gallery_size + 50) // 100)


def _ranks_of_correct(sim: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based pessimistic ranks of each row's correct items, best first, padded to the row maximum.

    The i-th best correct item (similarity s) ranks at i + #{incorrect items with similarity >= s},
    which is its position in the full ranking with ties broken against it, without sorting the row.
    Returns (ranks, valid) of shape (rows, max correct per row).
    """
    n_good = correct.sum(axis=1)
    m = int(n_good.max(initial=0))
    valid = np.arange(m)[None, :] < n_good[:, None]
    if m == 0:
        return np.zeros((sim.shape[0], 0), dtype=np.int64), valid
    good = np.where(correct, sim, -np.inf)
    best = -np.sort(np.partition(-good, m - 1, axis=1)[:, :m], axis=1)  # descending, -inf pads
    incorrect = np.where(correct, -np.inf, sim)  # -inf never reaches a finite correct similarity
    counts = _count_at_or_above(incorrect, best)
    return np.arange(m)[None, :] + counts, valid


def _count_at_or_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each row and threshold, how many of the row's values are >= the threshold."""
    if thresholds.shape[1] <= _MAX_GOOD_FOR_COUNTING:
        columns = [(values >= thresholds[:, [j]]).sum(axis=1) for j in range(thresholds.shape[1])]
        return np.stack(columns, axis=1).astype(np.int64)
    ordered = np.sort(values, axis=1)
    below = [np.searchsorted(row, t, side="left") for row, t in zip(ordered, thresholds, strict=True)]
    return values.shape[1] - np.stack(below).astype(np.int64)


def _average_precision(
    ranks: np.ndarray, valid: np.ndarray, n_correct: np.ndarray | None = None
) -> np.ndarray:
    """Per-row AP by University-1652's trapezoid rule (rows without a correct item get 0).

    `n_correct` is the number of correct items each row's AP is averaged over; default the valid ones
    (a ranked list passes the gallery's count, so positives it did not return add 0).
    """
    i = np.arange(ranks.shape[1], dtype=np.float64)[None, :]
    r = ranks.astype(np.float64)
    precision = (i + 1) / (r + 1)
    old_precision = np.where(r > 0, i / np.maximum(r, 1), 1.0)
    per_item = np.where(valid, (old_precision + precision) / 2, 0.0)
    denominator = valid.sum(axis=1) if n_correct is None else n_correct
    return per_item.sum(axis=1) / np.maximum(denominator, 1)


def _check_inputs(sim: np.ndarray, q: np.ndarray, g: np.ndarray, ks: Sequence[int]) -> None:
    if sim.ndim != 2 or sim.shape != (q.size, g.size):
        raise ValueError(f"similarity {sim.shape} does not match {q.size} queries x {g.size} gallery")
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive ranks, got {tuple(ks)}")


def retrieval_metrics(
    similarity: Any,
    query_labels: Any,
    gallery_labels: Any,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
) -> dict[str, float | int]:
    """R@k for each k, R@1%, AP (percentages) plus `queries` and `queries_without_match`.

    `similarity` is (Q, G), higher is better; finite values only. `chunk_size` queries are ranked at
    a time (default: about 8M similarities per chunk) to bound memory for large Q x G.
    """
    sim = _to_numpy(similarity)
    q_labels, g_labels = _encode_labels(query_labels, gallery_labels)
    _check_inputs(sim, q_labels, g_labels, ks)
    if not np.issubdtype(sim.dtype, np.floating):
        sim = sim.astype(np.float64)
    keep = np.flatnonzero(g_labels != JUNK)
    junk_free = keep.size == g_labels.size
    g_labels = g_labels[keep]
    cutoffs = {f"R@{int(k)}": int(k) for k in ks} | {"R@1%": one_percent_rank(keep.size)}
    chunk = chunk_size or max(1, _CHUNK_ELEMENTS // max(keep.size, 1))
    hits = dict.fromkeys(cutoffs, 0)
    ap_sum, evaluated = 0.0, 0
    for start in range(0, sim.shape[0], chunk):
        block = sim[start : start + chunk]
        block = block if junk_free else block[:, keep]
        if not np.isfinite(block).all():
            raise ValueError("similarity must be finite")
        correct = q_labels[start : start + chunk, None] == g_labels[None, :]
        ranks, valid = _ranks_of_correct(block, correct)
        matched = valid.any(axis=1)
        evaluated += int(matched.sum())
        if not matched.any():
            continue
        first = ranks[matched, 0]
        for name, k in cutoffs.items():
            hits[name] += int((first < k).sum())
        ap_sum += float(_average_precision(ranks[matched], valid[matched]).sum())
    return _summarise(hits, ap_sum, evaluated, sim.shape[0])


def _summarise(hits: dict[str, int], ap_sum: float, evaluated: int, n_queries: int) -> dict[str, float | int]:
    """Percentages over the evaluated queries (NaN when none), plus the query counts."""
    scale = 100.0 / evaluated if evaluated else float("nan")
    result: dict[str, float | int] = {name: count * scale for name, count in hits.items()}
    result["AP"] = ap_sum * scale
    result["queries"] = evaluated
    result["queries_without_match"] = n_queries - evaluated
    return result


def ranked_metrics(
    scores: Any,
    ranked_labels: Any,
    query_labels: Sequence[Any],
    gallery_labels: Sequence[Any],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float | int]:
    """R@k, R@1%, AP (percentages) and counts from each query's top-D list, as `retrieval_metrics` names them.

    `scores` and `ranked_labels` are (Q, D), best first, as a search returned them; an empty slot (the
    index found fewer than D) has label None. `gallery_labels` are the labels of everything searched
    (None: junk): they set the gallery size for R@1% and how many positives each query has, which AP is
    averaged over. Adds `beyond_depth`: evaluated queries whose first positive is not in the list.
    """
    sim = _to_numpy(scores)
    labels = np.asarray(ranked_labels, dtype=object)
    if sim.ndim != 2 or labels.shape != sim.shape or sim.shape[0] != len(query_labels):
        raise ValueError(f"scores {sim.shape} and labels {labels.shape} must be ({len(query_labels)}, depth)")
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive ranks, got {tuple(ks)}")
    vocab: dict[Any, int] = {}
    gallery = np.asarray([JUNK if g is None else vocab.setdefault(g, len(vocab)) for g in gallery_labels])
    per_label = np.bincount(gallery[gallery != JUNK].astype(np.int64), minlength=len(vocab))
    size = int(per_label.sum())
    q = np.asarray([vocab.get(label, -2) for label in query_labels], dtype=np.int64)  # -2: no positive
    codes = np.asarray([vocab.get(v, JUNK) for v in labels.reshape(-1).tolist()], dtype=np.int64)
    codes = codes.reshape(labels.shape)
    filled = codes != JUNK
    if not np.isfinite(sim[filled]).all():
        raise ValueError("scores of returned items must be finite")
    sim = np.where(filled, sim.astype(np.float64), -np.inf)
    correct = filled & (codes == q[:, None])
    # a full list that stops short of the gallery may hide ties with its last score: such positives are
    # beyond the list (pessimistic, and what makes an exact top-(K+1) search agree with the full ranking)
    last = np.where(filled, sim, np.inf).min(axis=1, initial=np.inf)
    cut = (filled.sum(axis=1) == sim.shape[1]) & (sim.shape[1] < size)
    boundary = correct & cut[:, None] & (sim <= last[:, None])
    known = correct & ~boundary
    ranks, valid = _ranks_of_correct(np.where(boundary, -np.inf, sim), known)
    n_positives = np.where(q >= 0, per_label[np.maximum(q, 0)], 0) if len(vocab) else np.zeros_like(q)
    matched = n_positives > 0
    found = valid[:, 0] & matched if valid.shape[1] else np.zeros_like(matched)
    first = ranks[:, 0] if valid.shape[1] else np.zeros(len(q), dtype=np.int64)
    cutoffs = {f"R@{int(k)}": int(k) for k in ks} | {"R@1%": one_percent_rank(size)}
    hits = {name: int((found & (first < k)).sum()) for name, k in cutoffs.items()}
    ap = _average_precision(ranks, valid, n_positives)[matched].sum() if valid.shape[1] else 0.0
    result = _summarise(hits, float(ap), int(matched.sum()), len(q))
    result["beyond_depth"] = int((matched & ~found).sum())
    return result
