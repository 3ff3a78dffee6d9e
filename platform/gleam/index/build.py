"""Train, fill and tune a FAISS index over unit vectors; measure its recall against exact search.

The pieces autofaiss runs in one call are kept apart here so each can be tested and timed: `train_and_add`
(k-means on a sample, then adding in batches so peak memory is one batch of codes, not a copy of the
set), `exact_neighbours` (brute force on a held-out sample: the ground truth) and `tune` (raise nprobe or
efSearch until the recall floor is met, autofaiss's "target recall" idea, so a borderline index is made
good enough rather than refused when a wider search would do).

Ids are positions: vector i of the input gets id i, and `ids.parquet` maps positions to tile ids.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from gleam.index.factory import IndexPlan

log = logging.getLogger(__name__)

METRIC = "inner_product"  # unit vectors: inner product = cosine similarity
_NPROBE_CAP = 4096
_EF_SEARCH_START, _EF_SEARCH_CAP = 16, 4096


@dataclass
class BuiltIndex:
    """A trained and filled index plus what it took; `search_params` are set on `index` already."""

    index: object  # faiss.Index
    plan: IndexPlan
    train_seconds: float
    add_seconds: float
    trained_on: np.ndarray  # positions of the training sample (excluded from the recall check)
    used_gpu: bool
    search_params: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RecallReport:
    recall: float  # mean |approx top-k ∩ exact top-k| / k over the held-out queries
    k: int
    queries: int
    search_params: dict[str, int]
    tried: list[tuple[dict[str, int], float]]  # every setting tried and its recall, in order


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def train_and_add(
    vectors: np.ndarray,
    plan: IndexPlan,
    add_batch_size: int = 65_536,
    seed: int = 0,
    use_gpu: bool | None = None,
) -> BuiltIndex:
    """An index of `plan.key` holding `vectors` (ids 0..N-1), trained on a seeded sample of them.

    With a GPU (and `use_gpu` not False), IVF k-means runs on it, as in autofaiss: training dominates
    build time and the GPU does it an order of magnitude faster; the index itself stays a CPU index.
    """
    import faiss

    vectors = _as_float32(vectors)
    n, dim = vectors.shape
    index = faiss.index_factory(dim, plan.key, faiss.METRIC_INNER_PRODUCT)
    gpu = bool(use_gpu if use_gpu is not None else gpu_count() > 0) and gpu_count() > 0
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(plan.train_size, n), replace=False)) if plan.train_size else None
    started = time.perf_counter()
    if not index.is_trained:
        if sample is None or len(sample) == 0:
            raise ValueError(f"index {plan.key} needs training but the plan has no training sample")
        ivf = _ivf_of(index)
        if gpu and ivf is not None:
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(ivf.d))
        _seed_clustering(index, seed)
        index.train(vectors[sample])
        if gpu and ivf is not None:
            ivf.clustering_index = None  # a GPU index must not be written with the CPU one
    trained = time.perf_counter()
    for start in range(0, n, add_batch_size):
        index.add(vectors[start : start + add_batch_size])
    added = time.perf_counter()
    built = BuiltIndex(
        index=index,
        plan=plan,
        train_seconds=trained - started,
        add_seconds=added - trained,
        trained_on=sample if sample is not None else np.zeros(0, dtype=np.int64),
        used_gpu=gpu,
    )
    if plan.nprobe is not None and _ivf_of(index) is not None:
        set_search_params(index, {"nprobe": plan.nprobe})
        built.search_params = {"nprobe": plan.nprobe}
    elif _hnsw_of(index) is not None:
        set_search_params(index, {"efSearch": _EF_SEARCH_START * 4})
        built.search_params = {"efSearch": _EF_SEARCH_START * 4}
    return built


def held_out_queries(n: int, trained_on: np.ndarray, size: int, seed: int = 1) -> np.ndarray:
    """Positions to query with: outside the training sample when the set is large enough."""
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(n), trained_on, assume_unique=True)
    if len(pool) < min(size, n):
        pool = np.arange(n)
    return np.sort(rng.choice(pool, size=min(size, len(pool)), replace=False))


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of the exact top-k by inner product (brute force, no index built, no copy of the set)."""
    import faiss

    _, ids = faiss.knn(_as_float32(queries), _as_float32(vectors), k, metric=faiss.METRIC_INNER_PRODUCT)
    return ids


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean share of the exact top-k that the approximate top-k found (1.0 = identical sets)."""
    if found.shape[0] == 0:
        return 1.0
    hits = [len(set(f[:k].tolist()) & set(e[:k].tolist()) - {-1}) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits) / k)


def tune(
    index: object, queries: np.ndarray, exact: np.ndarray, k: int, floor: float, start: dict[str, int]
) -> RecallReport:
    """Widen the search (nprobe or efSearch, doubling) until recall@k reaches `floor` or cannot grow.

    Exact indexes are measured once. The narrowest setting that meets the floor is kept on the index;
    when none does, the widest is kept and the caller decides (the job refuses to publish).
    """
    queries = _as_float32(queries)
    tried: list[tuple[dict[str, int], float]] = []
    for params in _search_ladder(index, start):
        set_search_params(index, params)
        _, found = index.search(queries, k)  # type: ignore[attr-defined]
        recall = recall_at_k(found, exact, k)
        tried.append((params, recall))
        if recall >= floor:
            break
    params, recall = tried[-1]
    return RecallReport(recall, k, len(queries), params, tried)


def set_search_params(index: object, params: dict[str, int]) -> None:
    import faiss

    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, int(value))


def _search_ladder(index: object, start: dict[str, int]) -> list[dict[str, int]]:
    ivf, hnsw = _ivf_of(index), _hnsw_of(index)
    if ivf is not None:
        values = _doublings(start.get("nprobe", 1), min(ivf.nlist, _NPROBE_CAP))
        return [{"nprobe": v} for v in values]
    if hnsw is not None:
        values = _doublings(start.get("efSearch", _EF_SEARCH_START), _EF_SEARCH_CAP)
        return [{"efSearch": v} for v in values]
    return [{}]


def _doublings(first: int, cap: int) -> list[int]:
    values, value = [], max(1, min(first, cap))
    while value < cap:
        values.append(value)
        value *= 2
    return [*values, cap]


def _ivf_of(index: object) -> object | None:
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _hnsw_of(index: object) -> object | None:
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def _seed_clustering(index: object, seed: int) -> None:
    """Seed IVF k-means so two builds of the same vectors give the same index (and the same sha256)."""
    ivf = _ivf_of(index)
    if ivf is not None:
        ivf.cp.seed = seed


def _as_float32(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)
