"""Retrieval metrics in the University-1652 convention, vectorised over chunks of queries.

For each query the gallery is ranked by descending similarity and:

- R@k is 1 when the *first* correct gallery item is within the top k.
- AP follows University-1652's `compute_mAP`: for the i-th correct item (0-based) at 0-based rank r_i,
  precision_i = (i + 1) / (r_i + 1), old_precision_i = i / r_i (1 when r_i = 0), and
  AP = mean_i (old_precision_i + precision_i) / 2 (the trapezoid rule).
- Gallery items labelled -1 are junk: removed before ranking (they take no rank).
- R@1% is recall at rank max(1, floor(G / 100 + 0.5)) with G the number of non-junk gallery items
  (half rounds up: 250 -> 3, where Python's round(2.5) would give 2): `one_percent="platform"`, the
  default and the figure of every platform table.
- Ties are pessimistic: a correct item tied in similarity with an incorrect one ranks after it, so a
  score cannot be gamed by gallery order (a constant similarity gives the worst ranks, not the best).
- Queries without any correct gallery item are skipped, counted in `queries_without_match`, and left
  out of every average; `queries` is the number evaluated. With none evaluated the metrics are NaN.

Two deliberate departures from University-1652's `evaluate_gpu.py` script, which divides by *all*
queries (so skipped ones count as zeros) and reports `CMC[round(len(gallery) * 0.01)]`, a 0-based
index, i.e. recall at rank round(1%) + 1 with junk counted in the gallery size. The second is
available as `one_percent="official"` (same rounding, same index, junk counted), so a figure can be
set beside published tables on their definition; the first is not (a query without a positive in the
gallery says nothing about the encoder).

Labels are integers; any other labels (e.g. strings) are mapped to integers through one vocabulary
shared by queries and gallery, with None as junk.

VIGOR's hit rate (`semi_positives`, one list of gallery labels per query: the tiles that also show the
query's place) is the share of evaluated queries whose top-1 is the positive or one of its
semi-positives, ties pessimistic as for R@1 (a hit needs the best accepted item to beat every other
item), so hit rate >= R@1. It is added as `hit_rate` only when semi-positives are given: a corpus without
them has no hit rate, rather than a misleading 0 or a copy of R@1.

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
from typing import Any, Literal

import numpy as np

JUNK = -1
# keys of a metrics dict that are counts (summed when results are combined), not percentages
COUNT_NAMES = ("queries", "queries_without_match", "beyond_depth")
# Above this many correct items per query, counting by one comparison pass per correct item costs
# more than sorting the row once.
_MAX_GOOD_FOR_COUNTING = 16
_CHUNK_ELEMENTS = 1 << 23
# per query, the gallery labels that also show its place (VIGOR's semi-positives); None: none
SemiPositives = Sequence[Sequence[Any] | None]
_NO_MATCH = -2  # a label code no gallery item has
HIT_RATE = "hit_rate"
# R@1% conventions: "platform" (1% of the junk-free gallery, half up) or "official" (University-1652's script)
OnePercent = Literal["platform", "official"]
ONE_PERCENT_CONVENTIONS: tuple[str, ...] = ("platform", "official")


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view of a numpy array, torch tensor (any device or dtype) or sequence."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype.itemsize < 4:
            x = x.float()  # bf16/fp16 have no (or a poor) numpy counterpart
        return x.numpy()
    return np.asarray(x)


def _encode_labels(
    query_labels: Any, gallery_labels: Any, semi_positives: SemiPositives | None = None
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
    """Integer labels for both sides (and each query's semi-positives); non-integer labels go through one
    shared vocabulary, where a semi-positive the gallery does not hold gets a code nothing matches."""
    q, g = _to_numpy(query_labels).reshape(-1), _to_numpy(gallery_labels).reshape(-1)
    if semi_positives is not None and len(semi_positives) != q.size:
        raise ValueError(f"{len(semi_positives)} semi-positive lists for {q.size} queries")
    if np.issubdtype(q.dtype, np.integer) and np.issubdtype(g.dtype, np.integer):
        semi = None
        if semi_positives is not None:
            semi = [np.asarray(list(s or ()), dtype=np.int64) for s in semi_positives]
        return q.astype(np.int64), g.astype(np.int64), semi
    vocab: dict[Any, int] = {}

    def encode(values: np.ndarray) -> np.ndarray:
        codes = [JUNK if v is None else vocab.setdefault(v, len(vocab)) for v in values.tolist()]
        return np.asarray(codes, dtype=np.int64)

    q_codes, g_codes = encode(q), encode(g)
    return q_codes, g_codes, _encode_semi(semi_positives, vocab)


def _encode_semi(semi_positives: SemiPositives | None, vocab: dict[Any, int]) -> list[np.ndarray] | None:
    """Each query's semi-positives as gallery codes; unknown ones (and junk) get a code nothing matches."""
    if semi_positives is None:
        return None
    return [np.asarray([vocab.get(v, _NO_MATCH) for v in s or ()], dtype=np.int64) for s in semi_positives]


def _top1_hits(sim: np.ndarray, accepted: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Per row: the best accepted similarity beats every other one (ties go against the query)."""
    best_ok = np.where(accepted, sim, -np.inf).max(axis=1, initial=-np.inf)
    best_other = np.where(others, sim, -np.inf).max(axis=1, initial=-np.inf)
    return np.isfinite(best_ok) & (best_ok > best_other)


def _in_rows(codes: np.ndarray, per_row: Sequence[np.ndarray]) -> np.ndarray:
    """mask[i, j]: codes[i, j] is one of row i's codes (semi-positives), junk never."""
    if not len(per_row):
        return np.zeros(codes.shape, dtype=bool)
    mask = np.stack([np.isin(row, wanted) for row, wanted in zip(codes, per_row, strict=True)])
    return mask & (codes != JUNK)


def one_percent_rank(gallery_size: int, one_percent: OnePercent = "platform", junk: int = 0) -> int:
    """The R@1% cutoff k: a query is a hit when its first positive's 0-based rank is below k.

    `gallery_size` counts the non-junk gallery items, `junk` the junk ones (removed from the ranking).
    platform: 1% of the non-junk gallery rounded half up, at least 1 (exact integer arithmetic).
    official: University-1652's `CMC[round(len(gallery_label) * 0.01)]`, a 0-based index into the
    junk-free ranking (so k is one more) with junk counted in the size and Python's round (half to even,
    on the script's own float product): 150 -> index 2 (k 3), 250 -> index 2 (k 3), 350 -> index 4.
    """
    if one_percent == "platform":
        return max(1, (gallery_size + 50) // 100)
    if one_percent == "official":
        return round((gallery_size + junk) * 0.01) + 1
    raise ValueError(f"one_percent must be one of {ONE_PERCENT_CONVENTIONS}, got {one_percent!r}")


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
    one_percent: OnePercent = "platform",
    semi_positives: SemiPositives | None = None,
) -> dict[str, float | int]:
    """R@k for each k, R@1%, AP (percentages) plus `queries` and `queries_without_match`.

    `similarity` is (Q, G), higher is better; finite values only. `chunk_size` queries are ranked at
    a time (default: about 8M similarities per chunk) to bound memory for large Q x G. `one_percent`
    picks R@1%'s convention (`one_percent_rank`). With `semi_positives` (one list per query), adds
    `hit_rate`.
    """
    sim = _to_numpy(similarity)
    q_labels, g_labels, semi = _encode_labels(query_labels, gallery_labels, semi_positives)
    _check_inputs(sim, q_labels, g_labels, ks)
    if not np.issubdtype(sim.dtype, np.floating):
        sim = sim.astype(np.float64)
    keep = np.flatnonzero(g_labels != JUNK)
    junk_free = keep.size == g_labels.size
    one_percent_k = one_percent_rank(keep.size, one_percent, junk=g_labels.size - keep.size)
    g_labels = g_labels[keep]
    cutoffs = {f"R@{int(k)}": int(k) for k in ks} | {"R@1%": one_percent_k}
    chunk = chunk_size or max(1, _CHUNK_ELEMENTS // max(keep.size, 1))
    hits = dict.fromkeys([*cutoffs, *([HIT_RATE] if semi is not None else [])], 0)
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
        if semi is not None:
            gallery = np.broadcast_to(g_labels, block.shape)
            accepted = correct | _in_rows(gallery, semi[start : start + chunk])
            hits[HIT_RATE] += int(_top1_hits(block, accepted, ~accepted)[matched].sum())
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
    one_percent: OnePercent = "platform",
    semi_positives: SemiPositives | None = None,
) -> dict[str, float | int]:
    """R@k, R@1%, AP (percentages) and counts from each query's top-D list, as `retrieval_metrics` names them.

    `scores` and `ranked_labels` are (Q, D), best first, as a search returned them; an empty slot (the
    index found fewer than D) has label None. `gallery_labels` are the labels of everything searched
    (None: junk): they set the gallery size for R@1% and how many positives each query has, which AP is
    averaged over. Adds `beyond_depth`: evaluated queries whose first positive is not in the list, and
    with `semi_positives` `hit_rate` (a positive or semi-positive tied with the end of a cut list is not
    a top-1 it can claim).
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
    one_percent_k = one_percent_rank(size, one_percent, junk=len(gallery) - size)
    cutoffs = {f"R@{int(k)}": int(k) for k in ks} | {"R@1%": one_percent_k}
    hits = {name: int((found & (first < k)).sum()) for name, k in cutoffs.items()}
    if semi_positives is not None:
        if len(semi_positives) != len(q):
            raise ValueError(f"{len(semi_positives)} semi-positive lists for {len(q)} queries")
        accepted = correct | (filled & _in_rows(codes, _encode_semi(semi_positives, vocab) or []))
        unsure = cut[:, None] & (sim <= last[:, None])  # might tie with what the list left out
        top1 = _top1_hits(sim, accepted & ~unsure, filled & ~accepted)
        hits[HIT_RATE] = int((top1 & matched).sum())
    ap = _average_precision(ranks, valid, n_positives)[matched].sum() if valid.shape[1] else 0.0
    result = _summarise(hits, float(ap), int(matched.sum()), len(q))
    result["beyond_depth"] = int((matched & ~found).sum())
    return result
