"""Train, fill and tune a FAISS index over unit vectors; measure its recall on vectors it does not hold.

The pieces autofaiss runs in one call are kept apart here so each can be tested and timed: training
(k-means on a sample), adding in batches (peak memory is one batch of codes, not a copy of the set),
`exact_neighbours` (brute force: the ground truth) and `tune` (raise nprobe or efSearch until the recall
floor is met, autofaiss's "target recall" idea, so a borderline index is made good enough rather than
refused when a wider search would do).

The recall check is honest only when its queries are not in the index: a vector in the index is its
own nearest neighbour and, in an HNSW graph, is linked to its other neighbours, so self-queries overstate
recall (0.99 measured where fresh queries got 0.91). So `train_and_add` holds a seeded sample of the
vectors back, adds the rest, tunes with the held-out vectors as queries against exact search of the rest,
and only then adds the held-out vectors, at their own positions (docs/index.md, "Validate").

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
HELD_OUT_SHARE = 0.1  # at most this share of the set is held out: the tuning gallery is >= 90% of the index
_NPROBE_CAP = 4096
_EF_SEARCH_START, _EF_SEARCH_CAP = 16, 4096
_EXACT_CHUNK = 65_536  # database rows per brute-force pass when some rows are left out


@dataclass(frozen=True)
class RecallTarget:
    """The check `train_and_add` runs: recall@k >= floor on `sample` held-out vectors (seeded)."""

    k: int = 10
    floor: float = 0.95
    sample: int = 1000
    seed: int = 1


@dataclass(frozen=True)
class RecallReport:
    recall: float  # mean |approx top-k ∩ exact top-k| / k over the held-out queries
    k: int
    queries: int
    search_params: dict[str, int]
    tried: list[tuple[dict[str, int], float]]  # every setting tried and its recall, in order


@dataclass
class BuiltIndex:
    """A trained and filled index plus what it took; `search_params` are set on `index` already."""

    index: object  # faiss.Index
    plan: IndexPlan
    train_seconds: float
    add_seconds: float
    trained_on: np.ndarray  # positions of the training sample (never held out when avoidable)
    used_gpu: bool
    search_params: dict[str, int] = field(default_factory=dict)
    held_out: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # recall queries
    recall: RecallReport | None = None  # None: built without a recall check
    check_seconds: float = 0.0  # exact ground truth + tune, not counted in add_seconds


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def train_and_add(
    vectors: np.ndarray,
    plan: IndexPlan,
    add_batch_size: int = 65_536,
    seed: int = 0,
    use_gpu: bool | None = None,
    recall: RecallTarget | None = None,
) -> BuiltIndex:
    """An index of `plan.key` holding `vectors` (ids 0..N-1), trained on a seeded sample of them.

    With `recall`, the held-out vectors join the index only after `tune` has measured it with them as
    queries, so the report (`BuiltIndex.recall`) is recall on vectors the searched index did not hold.
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
    built = BuiltIndex(
        index=index,
        plan=plan,
        train_seconds=trained - started,
        add_seconds=0.0,
        trained_on=sample if sample is not None else np.zeros(0, dtype=np.int64),
        used_gpu=gpu,
        search_params=_start_params(index, plan),
    )
    set_search_params(index, built.search_params)
    if recall is None:
        _add(index, vectors, np.arange(n), add_batch_size, with_ids=False)
        built.add_seconds = time.perf_counter() - trained
        return built
    _add_checked(built, vectors, add_batch_size, recall)
    return built


def _add_checked(built: BuiltIndex, vectors: np.ndarray, batch: int, target: RecallTarget) -> None:
    """Add all but the held-out vectors, tune on them, then add them at their own positions.

    How they get their positions depends on the index: IVF indexes take explicit ids; flat-code and HNSW
    indexes are added to in (rest, held-out) order and permuted back (`permute_entries` moves the graph
    with the vectors); any other index is checked on a copy that never holds the held-out vectors.
    """
    import faiss

    n = len(vectors)
    index = built.index
    held = held_out_queries(n, built.trained_on, target.sample, target.seed)
    rest = np.setdiff1d(np.arange(n), held, assume_unique=True)
    placement = _placement(index)
    started = time.perf_counter()
    gallery = faiss.clone_index(index) if placement == "copy" else index
    _add(gallery, vectors, rest, batch, with_ids=placement == "ids")
    added = time.perf_counter()
    k = min(target.k, len(rest))
    queries = vectors[held]
    exact = exact_neighbours(vectors, queries, k, leave_out=held)
    if placement != "ids":  # the gallery's ids are ranks within `rest`
        exact = np.searchsorted(rest, exact)
    report = tune(gallery, queries, exact, k, target.floor, built.search_params)
    checked = time.perf_counter()
    if placement == "copy":
        del gallery
        _add(index, vectors, np.arange(n), batch, with_ids=False)
    else:
        _add(index, vectors, held, batch, with_ids=placement == "ids")
        if placement == "permute":
            _inner(index).permute_entries(np.argsort(np.concatenate([rest, held])).astype(np.int64))
    set_search_params(index, report.search_params)
    built.add_seconds = (added - started) + (time.perf_counter() - checked)
    built.check_seconds = checked - added
    built.held_out, built.recall, built.search_params = held, report, report.search_params


def held_out_queries(n: int, trained_on: np.ndarray, size: int, seed: int = 1) -> np.ndarray:
    """Seeded positions to hold out as queries: at most HELD_OUT_SHARE of n, outside the training sample.

    At least one (when n > 1), so even a tiny index is measured; from the whole set when the training
    sample leaves too few.
    """
    size = min(size, max(1, int(n * HELD_OUT_SHARE))) if n > 1 else 0
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(n), trained_on, assume_unique=True)
    if len(pool) < size:
        pool = np.arange(n)
    return np.sort(rng.choice(pool, size=size, replace=False))


def exact_neighbours(
    vectors: np.ndarray, queries: np.ndarray, k: int, leave_out: np.ndarray | None = None
) -> np.ndarray:
    """Positions of the exact top-k by inner product among `vectors` (brute force, no index built).

    `leave_out`: positions that are not candidates (the held-out queries themselves); the set is then
    searched a chunk at a time, so only one chunk of the remaining rows is ever copied.
    """
    import faiss

    queries = _as_float32(queries)
    if leave_out is None or len(leave_out) == 0:
        _, ids = faiss.knn(queries, _as_float32(vectors), k, metric=faiss.METRIC_INNER_PRODUCT)
        return ids
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for start in range(0, len(vectors), _EXACT_CHUNK):
        rows = np.arange(start, min(start + _EXACT_CHUNK, len(vectors)))
        rows = rows[~np.isin(rows, leave_out)]
        if len(rows):
            scores, ids = faiss.knn(
                queries, _as_float32(vectors[rows]), min(k, len(rows)), metric=faiss.METRIC_INNER_PRODUCT
            )
            heap.add_result(scores, rows[ids])
    heap.finalize()
    return heap.I


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


def _start_params(index: object, plan: IndexPlan) -> dict[str, int]:
    """Where `tune` starts: the plan's nprobe for IVF, a moderate efSearch for HNSW."""
    if plan.nprobe is not None and _ivf_of(index) is not None:
        return {"nprobe": plan.nprobe}
    if _hnsw_of(index) is not None:
        return {"efSearch": _EF_SEARCH_START * 4}
    return {}


def _add(index: object, vectors: np.ndarray, positions: np.ndarray, batch: int, with_ids: bool) -> None:
    for start in range(0, len(positions), batch):
        rows = positions[start : start + batch]
        chunk = _as_float32(vectors[rows[0] : rows[-1] + 1] if _contiguous(rows) else vectors[rows])
        if with_ids:
            index.add_with_ids(chunk, rows.astype(np.int64))  # type: ignore[attr-defined]
        else:
            index.add(chunk)  # type: ignore[attr-defined]


def _contiguous(rows: np.ndarray) -> bool:
    return len(rows) > 0 and int(rows[-1]) - int(rows[0]) + 1 == len(rows)


def _placement(index: object) -> str:
    """How held-out vectors reach their positions: 'ids' (IVF), 'permute' (flat codes, HNSW), 'copy'."""
    import faiss

    inner = _inner(index)
    if isinstance(inner, faiss.IndexIVF):
        return "ids"
    return "permute" if hasattr(inner, "permute_entries") else "copy"


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


def _inner(index: object) -> object:
    """The index under a pre-transform (OPQ, PCA), or the index itself."""
    import faiss

    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index


def _hnsw_of(index: object) -> object | None:
    import faiss

    inner = _inner(index)
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def _seed_clustering(index: object, seed: int) -> None:
    """Seed IVF k-means so two builds of the same vectors give the same index (and the same sha256)."""
    ivf = _ivf_of(index)
    if ivf is not None:
        ivf.cp.seed = seed


def _as_float32(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)
