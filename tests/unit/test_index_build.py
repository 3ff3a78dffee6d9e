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


def test_held_out_queries_avoid_the_training_sample() -> None:
    trained = np.arange(0, 1000, 2)
    held = build.held_out_queries(1000, trained, 200, seed=0)
    assert len(held) == 200 and not set(held.tolist()) & set(trained.tolist())
    small = build.held_out_queries(10, np.arange(10), 50)  # everything trained on: fall back to all
    assert sorted(small.tolist()) == list(range(10))


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
