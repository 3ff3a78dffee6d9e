"""Which FAISS index to build for N vectors of dimension D under a memory budget, and how to train it.

The rules follow autofaiss's reasoning (and FAISS's own guidelines), written down so they are tested:

- Exact search (`Flat`) while the set is small (up to `exact_limit` vectors) and fits the budget:
  nothing to train, recall 1, and brute force is fast at that size.
- `IVF<nlist>,Flat` for medium sets whose raw vectors fit the budget: nlist ~ 4 sqrt(N) (a power of
  two), searched with nprobe ~ nlist / 16. It memory-maps, unlike HNSW, so servers share pages.
- `OPQ<m>,IVF<nlist>,PQ<m>` when raw vectors do not fit: PQ codes of m bytes per vector, m the largest
  of 64/32/16/8 that divides D and fits the budget; OPQ rotates the space first so the sub-quantizers
  see balanced variance.
- Training samples: FAISS wants 39-256 points per IVF centroid (k-means warns below 39) and enough for
  the 256 centroids of each PQ sub-quantizer, so the sample is 64 per list, at least 39 per list (and
  256 x 39 with PQ), at most 256 per list, and never more than N.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from gleam.errors import RefusedError

FLOAT_BYTES = 4
ID_BYTES = 8
_PQ_CHOICES = (64, 32, 16, 8)
_IVF = re.compile(r"IVF(\d+)")


class IndexPlanError(RefusedError, ValueError):
    """No index fits: the budget is too small, or a forced key is not something FAISS can build."""


@dataclass(frozen=True)
class IndexPlan:
    key: str  # a faiss.index_factory string
    train_size: int  # vectors to train on (0: no training)
    nprobe: int | None  # IVF lists to visit per query
    estimated_bytes: int
    reason: str

    @property
    def exact(self) -> bool:
        return self.key == "Flat"


def ivf_lists(n: int) -> int:
    """4 sqrt(N) rounded to a power of two, at least 16 and at most N / 39 (enough points per list)."""
    target = 4 * math.sqrt(max(n, 1))
    lists = 2 ** round(math.log2(max(target, 16)))
    while lists > 16 and lists * 39 > n:
        lists //= 2
    return lists


def train_size(n: int, nlist: int, pq: bool) -> int:
    """64 points per list, at least 39 per list (and 256 x 39 for PQ codebooks), at most 256 per list."""
    low = max(39 * nlist, 256 * 39 if pq else 1)
    high = max(256 * nlist, low)
    return min(n, max(low, min(high, 64 * nlist)))


def plan_index(
    n: int,
    dim: int,
    memory_budget_bytes: int,
    exact_limit: int = 50_000,
    force_key: str | None = None,
) -> IndexPlan:
    """The index to build; `force_key` overrides the choice (still sized and checked)."""
    if n < 1 or dim < 1:
        raise IndexPlanError(f"need at least one vector of at least one dimension, got n={n}, dim={dim}")
    if memory_budget_bytes < 1:
        raise IndexPlanError("memory budget must be positive")
    raw = n * (dim * FLOAT_BYTES + ID_BYTES)
    if force_key is not None:
        return _forced(force_key, n, dim, raw)
    if n <= exact_limit and raw <= memory_budget_bytes:
        return IndexPlan("Flat", 0, None, raw, f"{n} vectors <= {exact_limit}: exact search")
    nlist = ivf_lists(n)
    if raw <= memory_budget_bytes:
        return IndexPlan(
            f"IVF{nlist},Flat",
            train_size(n, nlist, pq=False),
            max(1, nlist // 16),
            raw + nlist * dim * FLOAT_BYTES,
            f"raw vectors fit the budget ({_gib(raw)} <= {_gib(memory_budget_bytes)}): inverted lists",
        )
    for m in _PQ_CHOICES:
        if dim % m:
            continue
        size = n * (m + ID_BYTES) + nlist * dim * FLOAT_BYTES + dim * dim * FLOAT_BYTES
        if size <= memory_budget_bytes:
            return IndexPlan(
                f"OPQ{m},IVF{nlist},PQ{m}",
                train_size(n, nlist, pq=True),
                max(1, nlist // 16),
                size,
                f"raw vectors ({_gib(raw)}) exceed the budget: {m}-byte product-quantized codes",
            )
    raise IndexPlanError(
        f"{n} vectors of dimension {dim} do not fit {_gib(memory_budget_bytes)} even as 8-byte PQ codes "
        "(or the dimension has no divisor among 64/32/16/8): raise the memory budget"
    )


def _forced(key: str, n: int, dim: int, raw: int) -> IndexPlan:
    import faiss

    try:
        index = faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexPlanError(f"FAISS cannot build index key {key!r} for dimension {dim}: {exc}") from None
    match = _IVF.search(key)
    nlist = int(match.group(1)) if match else 0
    pq = "PQ" in key
    needs_training = not index.is_trained
    size = train_size(n, max(nlist, 1), pq) if needs_training else 0
    return IndexPlan(key, size, max(1, nlist // 16) if nlist else None, raw, "forced by the config")


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"
