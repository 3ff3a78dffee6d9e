"""Exact search over unit vectors with FAISS, and the metrics of a search, in bounded memory.

A FAISS `IndexFlatIP` over unit vectors is exact cosine search, the reference every approximate index is
measured against. Two ways to score a search, both chunked over queries so memory stays bounded for
large galleries and combined weighted by the queries each chunk evaluated (`combine`):

- `search_metrics`: each chunk is searched with k = gallery size and the scores are scattered back into a
  dense (chunk x gallery) block for `retrieval_metrics` (full ranking, pessimistic ties);
- `list_metrics`: any `SearchFn` (a flat index or a published approximate one) returns top-`depth`
  lists, scored by `ranked_metrics` (a positive not returned is a miss beyond the depth).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gleam.retrieval.metrics import COUNT_NAMES, OnePercent, SemiPositives, ranked_metrics, retrieval_metrics

# vectors, k -> (scores (Q, k), gallery ids (Q, k) object with None in empty slots), best first
SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
# similarities per dense block handed to retrieval_metrics (float32: 64 MiB)
SIMILARITY_BUDGET = 1 << 24
# (query x result) slots per search call: bounds memory when a huge gallery needs a deep list
RESULT_BUDGET = 1 << 22


def flat_index(vectors: np.ndarray) -> Any:  # faiss.IndexFlatIP
    """An exact inner-product index holding `vectors` (N, D) float32, in row order."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def exact_search(index: Any, gallery_ids: Sequence[str]) -> SearchFn:
    """A flat index as a SearchFn: FAISS positions turned into the gallery's ids."""
    ids = np.asarray(list(gallery_ids), dtype=object)

    def search(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, positions = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        found = positions >= 0
        tiles = np.full(positions.shape, None, dtype=object)
        tiles[found] = ids[positions[found]]
        return np.where(found, scores, -np.inf).astype(np.float32), tiles

    return search


def similarity_block(index: Any, vectors: np.ndarray) -> np.ndarray:
    """Exact FAISS search with k = gallery size, scattered back to a dense (queries x gallery) matrix."""
    scores, ids = index.search(np.ascontiguousarray(vectors, dtype=np.float32), index.ntotal)
    dense = np.empty_like(scores)
    np.put_along_axis(dense, ids, scores, axis=1)
    return dense


def search_metrics(
    index: Any,
    vectors: np.ndarray,
    labels: Sequence[str],
    gallery_ids: Sequence[str],
    ks: Sequence[int],
    one_percent: OnePercent = "platform",
    semi_positives: SemiPositives | None = None,
) -> dict[str, float]:
    """`retrieval_metrics` of queries (`vectors`, positive `labels`) against a flat index, in chunks."""
    chunk = max(1, SIMILARITY_BUDGET // max(index.ntotal, 1))
    parts = []
    for start in range(0, len(labels), chunk):
        sim = similarity_block(index, vectors[start : start + chunk])
        chunk_labels = list(labels[start : start + chunk])
        semi = None if semi_positives is None else semi_positives[start : start + chunk]
        parts.append(retrieval_metrics(sim, chunk_labels, list(gallery_ids), ks, None, one_percent, semi))
    return combine(parts)


def list_metrics(
    search: SearchFn,
    vectors: np.ndarray,
    labels: Sequence[str],
    gallery_labels: Sequence[str],
    ks: Sequence[int],
    depth: int,
    one_percent: OnePercent = "platform",
    semi_positives: SemiPositives | None = None,
) -> dict[str, float]:
    """`ranked_metrics` over the top-`depth` lists `search` returns, in chunks of queries."""
    chunk = max(1, RESULT_BUDGET // depth)
    parts = []
    for start in range(0, len(labels), chunk):
        scores, ranked = search(vectors[start : start + chunk], depth)
        chunk_labels = list(labels[start : start + chunk])
        semi = None if semi_positives is None else semi_positives[start : start + chunk]
        parts.append(ranked_metrics(scores, ranked, chunk_labels, gallery_labels, ks, one_percent, semi))
    return combine(parts)


def combine(parts: Sequence[dict[str, float | int]]) -> dict[str, float]:
    """Average percentages over chunks by how many queries each evaluated; counts are summed."""
    counts = [name for name in COUNT_NAMES if name in parts[0]]
    evaluated = sum(int(p["queries"]) for p in parts)
    combined: dict[str, float] = {}
    for name in (n for n in parts[0] if n not in counts):
        total = sum(float(p[name]) * int(p["queries"]) for p in parts if p["queries"])
        combined[name] = total / evaluated if evaluated else math.nan
    for name in counts:
        combined[name] = float(sum(int(p[name]) for p in parts))
    return combined
