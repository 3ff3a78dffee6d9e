"""FAISS build pieces on real FAISS: training sample, positions as ids, recall, and search tuning."""

from __future__ import annotations

import numpy as np
import pytest

from gleam.index import build
from gleam.index.factory import plan_index


def clustered(n: int, dim: int, clusters: int = 50, noise: float = 0.25, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, dim))
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_recall_at_k_counts_shared_neighbours() -> None:
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 2, 9], [-1, -1, -1]])
    assert build.recall_at_k(found, exact, 3) == pytest.approx((2 / 3 + 0) / 2)
    assert build.recall_at_k(exact, exact, 3) == 1.0
    assert build.recall_at_k(np.zeros((0, 3), int), np.zeros((0, 3), int), 3) == 1.0


def test_exact_neighbours_equal_numpy() -> None:
    vectors = clustered(300, 16)
    queries = vectors[:20]
    expected = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :5]
    found = build.exact_neighbours(vectors, queries, 5)
    sims = queries @ vectors.T
    # same similarity at every rank (ties may swap ids)
    assert np.allclose(np.take_along_axis(sims, found, 1), np.take_along_axis(sims, expected, 1), atol=1e-5)
    assert (found[:, 0] == np.arange(20)).all()  # each vector is its own nearest


def test_ids_are_positions_and_training_uses_a_seeded_sample() -> None:
    vectors = clustered(4000, 16)
    plan = plan_index(len(vectors), 16, 1 << 30, exact_limit=100)
    assert plan.key.startswith("IVF")
    first = build.train_and_add(vectors, plan, add_batch_size=700, seed=3)
    second = build.train_and_add(vectors, plan, add_batch_size=4000, seed=3)
    assert first.index.ntotal == len(vectors)
    assert len(first.trained_on) == plan.train_size and np.array_equal(first.trained_on, second.trained_on)
    build.set_search_params(first.index, {"nprobe": 64})
    build.set_search_params(second.index, {"nprobe": 64})
    _, ids = first.index.search(vectors[:50], 1)
    assert (ids[:, 0] == np.arange(50)).mean() > 0.95  # a vector finds itself: id = position
    _, again = second.index.search(vectors[:50], 1)
    assert np.array_equal(ids, again)  # same seed, same index, whatever the add batch size


def test_held_out_queries_avoid_the_training_sample_and_keep_the_gallery_whole() -> None:
    trained = np.arange(0, 1000, 2)
    held = build.held_out_queries(1000, trained, 80, seed=0)
    assert len(held) == 80 and not set(held.tolist()) & set(trained.tolist())
    assert len(build.held_out_queries(1000, trained, 500)) == 100  # at most a tenth of the set
    small = build.held_out_queries(30, np.arange(30), 50)  # everything trained on: drawn from all
    assert len(small) == 3 and len(build.held_out_queries(5, np.arange(5), 50)) == 1
    assert len(build.held_out_queries(1, np.zeros(0, np.int64), 50)) == 0


def sphere(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_by_numpy(vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    sims = queries @ vectors[candidates].T
    return candidates[np.argsort(-sims, axis=1, kind="stable")[:, :k]]


@pytest.mark.parametrize("key", ["Flat", "IVF16,Flat", "HNSW16,Flat", "IVF16,Flat,Refine(Flat)"])
def test_held_out_vectors_end_up_at_their_own_positions(key: str) -> None:
    """Each way of adding the held-out vectors last (ids, permutation, a copy) keeps id = position."""
    vectors = sphere(2000, 16, 0)
    built = build.train_and_add(
        vectors, plan_index(2000, 16, 1 << 30, force_key=key), add_batch_size=700, recall=build.RecallTarget()
    )
    assert built.index.ntotal == 2000 and len(built.held_out) == 200
    build.set_search_params(built.index, {"nprobe": 16} if "IVF" in key else {})
    probe = np.concatenate([built.held_out[:50], np.setdiff1d(np.arange(100), built.held_out)])
    _, ids = built.index.search(vectors[probe], 1)
    assert (ids[:, 0] == probe).all()


def test_the_reported_recall_is_that_of_queries_the_index_did_not_hold() -> None:
    """IVF-PQ finds a query's own code first, so self-queries overstated recall; held-out ones do not."""
    import faiss

    vectors, k = sphere(3000, 16, 0), 10
    plan = plan_index(3000, 16, 1 << 30, force_key="IVF16,PQ4x4")
    built = build.train_and_add(vectors, plan, recall=build.RecallTarget(k=k, floor=0.99, sample=300, seed=1))
    report, held = built.recall, built.held_out
    assert report is not None and report.queries == len(held) == 300
    assert report.search_params == {"nprobe": 16}  # the floor is out of PQ's reach: the widest setting
    # independently: the published index without the held-out vectors, against brute force over the rest
    rest = np.setdiff1d(np.arange(3000), held)
    without = faiss.clone_index(built.index)
    without.remove_ids(faiss.IDSelectorBatch(held))
    build.set_search_params(without, report.search_params)
    _, found = without.search(vectors[held], k)
    independent = build.recall_at_k(found, exact_by_numpy(vectors, vectors[held], rest, k), k)
    assert abs(report.recall - independent) <= 0.01
    # the old check: the same vectors queried against the index that holds them
    _, found = built.index.search(vectors[held], k)
    self_query = build.recall_at_k(found, exact_by_numpy(vectors, vectors[held], np.arange(3000), k), k)
    assert self_query > report.recall + 0.03


def test_the_floor_refuses_an_index_whose_held_out_recall_is_below_it() -> None:
    """A floor the self-query check passed (its own code is found first) is refused on held-out queries."""
    from gleam.index.job import RecallTooLowError, refuse_below_floor

    vectors, k, floor = sphere(3000, 16, 0), 10, 0.31
    plan = plan_index(3000, 16, 1 << 30, force_key="IVF16,PQ4x4")
    built = build.train_and_add(vectors, plan, recall=build.RecallTarget(k=k, floor=floor, sample=300))
    held = built.held_out
    self_exact = build.exact_neighbours(vectors, vectors[held], k)
    old = build.tune(built.index, vectors[held], self_exact, k, floor, {})
    assert old.recall >= floor  # what the build used to report: published
    assert built.recall is not None and built.recall.recall < floor
    message = r"IVF16,PQ4x4, 3000 vectors\) reaches recall@10 0\.\d+ < floor 0\.31 on 300 held-out"
    with pytest.raises(RecallTooLowError, match=message):
        refuse_below_floor("demo", plan.key, 3000, built.recall, floor)
    refuse_below_floor("demo", plan.key, 3000, built.recall, built.recall.recall)  # at the floor: published


def test_tune_widens_nprobe_until_the_floor_is_met() -> None:
    vectors = clustered(6000, 32, clusters=200, noise=0.6)
    plan = plan_index(len(vectors), 32, 1 << 30, exact_limit=100, force_key="IVF64,Flat")
    built = build.train_and_add(vectors, plan)
    queries = build.held_out_queries(len(vectors), built.trained_on, 300)
    exact = build.exact_neighbours(vectors, vectors[queries], 10)
    report = build.tune(built.index, vectors[queries], exact, 10, floor=0.99, start={"nprobe": 1})
    recalls = [recall for _, recall in report.tried]
    assert report.tried[0][0] == {"nprobe": 1} and recalls[0] < 0.99  # one list is not enough
    assert recalls == sorted(recalls)  # a wider search never finds less
    assert report.recall >= 0.99 and report.search_params == report.tried[-1][0]
    assert report.search_params["nprobe"] < 64  # stopped at the narrowest setting that passes
    unreachable = build.tune(built.index, vectors[queries], exact, 10, floor=1.01, start={"nprobe": 1})
    assert unreachable.search_params == {"nprobe": 64} and unreachable.recall < 1.01


def test_hnsw_is_tuned_through_ef_search_and_flat_is_measured_once() -> None:
    vectors = clustered(2000, 16)
    queries, k = vectors[:100], 10
    exact = build.exact_neighbours(vectors, queries, k)
    hnsw = build.train_and_add(vectors, plan_index(2000, 16, 1 << 30, force_key="HNSW8,Flat"))
    report = build.tune(hnsw.index, queries, exact, k, floor=0.999, start={"efSearch": 16})
    assert all("efSearch" in params for params, _ in report.tried)
    flat = build.train_and_add(vectors, plan_index(2000, 16, 1 << 30))
    assert flat.plan.key == "Flat" and len(flat.trained_on) == 0
    assert build.tune(flat.index, queries, exact, k, 0.95, {}).tried == [({}, 1.0)]
