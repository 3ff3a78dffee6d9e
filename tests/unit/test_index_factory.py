"""Choosing the FAISS index from size and memory budget, and checking FAISS builds what is chosen."""

from __future__ import annotations

import numpy as np
import pytest

from gleam.index.factory import IndexPlanError, ivf_lists, plan_index, train_size

GIB = 2**30


def test_small_sets_are_searched_exactly() -> None:
    plan = plan_index(10_000, 512, memory_budget_bytes=GIB)
    assert plan.exact and plan.key == "Flat" and plan.train_size == 0 and plan.nprobe is None


def test_medium_sets_that_fit_get_inverted_lists() -> None:
    plan = plan_index(1_000_000, 512, memory_budget_bytes=8 * GIB)
    nlist = ivf_lists(1_000_000)
    assert plan.key == f"IVF{nlist},Flat" and nlist == 4096  # 4 sqrt(1e6) = 4000 -> 4096
    assert 39 * nlist <= plan.train_size <= 256 * nlist and plan.nprobe == nlist // 16
    assert plan.estimated_bytes <= 8 * GIB


def test_sets_over_budget_get_product_quantization_that_fits() -> None:
    plan = plan_index(20_000_000, 1024, memory_budget_bytes=4 * GIB)
    assert plan.key.startswith("OPQ64,IVF") and plan.key.endswith(",PQ64")
    assert plan.estimated_bytes <= 4 * GIB
    smaller = plan_index(20_000_000, 1024, memory_budget_bytes=GIB // 2)
    # 16-byte codes would need 20M x (16 + 8) B + centroids > 0.5 GiB: the largest that fits is 8 bytes
    assert smaller.key.endswith(",PQ8") and smaller.estimated_bytes <= GIB // 2


def test_an_impossible_budget_says_what_to_change() -> None:
    with pytest.raises(IndexPlanError, match="raise the memory budget"):
        plan_index(100_000_000, 512, memory_budget_bytes=10 * 2**20)
    with pytest.raises(IndexPlanError, match="at least one vector"):
        plan_index(0, 512, memory_budget_bytes=GIB)


def test_lists_and_samples_follow_faiss_guidelines() -> None:
    for n in (2_000, 60_000, 1_000_000, 50_000_000):
        nlist = ivf_lists(n)
        assert nlist & (nlist - 1) == 0 and nlist >= 16 and (nlist * 39 <= n or nlist == 16)
        sample = train_size(n, nlist, pq=True)
        assert sample <= n and (sample >= 39 * nlist or sample == n)
        assert sample >= min(n, 256 * 39)


def test_forced_keys_are_checked_by_faiss() -> None:
    hnsw = plan_index(200_000, 64, memory_budget_bytes=GIB, force_key="HNSW32")
    assert hnsw.key == "HNSW32" and hnsw.train_size == 0 and hnsw.reason == "forced by the config"
    ivf = plan_index(200_000, 64, memory_budget_bytes=GIB, force_key="IVF256,PQ16")
    assert ivf.train_size >= 256 * 39 and ivf.nprobe == 16
    with pytest.raises(IndexPlanError, match="cannot build index key"):
        plan_index(1_000, 64, memory_budget_bytes=GIB, force_key="NotAnIndex42")


def test_planned_indexes_build_and_recall_like_exact_search() -> None:
    import faiss

    faiss.omp_set_num_threads(1)  # OpenMP spin-waits badly on a shared 2-core machine
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(64, 32)).astype(np.float32)
    vectors = centres[rng.integers(0, 64, 8_000)] + 0.3 * rng.normal(size=(8_000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:200] + 0.05 * rng.normal(size=(200, 32)).astype(np.float32)
    exact = faiss.IndexFlatIP(32)
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    # a PQ plan is a key FAISS accepts (training OPQ is too slow for a unit test)
    pq = plan_index(len(vectors), 32, memory_budget_bytes=8_000 * 40, exact_limit=2_000)
    assert "PQ" in pq.key and faiss.index_factory(32, pq.key, faiss.METRIC_INNER_PRODUCT).d == 32
    for budget in (GIB,):  # raw vectors fit: IVF-Flat, trained on the planned sample
        plan = plan_index(len(vectors), 32, memory_budget_bytes=budget, exact_limit=2_000)
        index = faiss.index_factory(32, plan.key, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors[rng.choice(len(vectors), plan.train_size, replace=False)])
        index.add(vectors)
        faiss.extract_index_ivf(index).nprobe = plan.nprobe
        _, found = index.search(queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
        assert plan.key.startswith("IVF") and recall >= 0.9, (plan.key, recall)
