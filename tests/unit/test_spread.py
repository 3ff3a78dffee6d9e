"""Embedding spread: mean pairwise cosine, effective rank, and the collapsed verdict on constructed sets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gleam.retrieval.spread import (
    COLLAPSED_EFFECTIVE_RANK,
    COLLAPSED_MEAN_COSINE,
    SAMPLE,
    describe,
    effective_rank,
    embedding_spread,
)


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def around(direction: np.ndarray, noise: float, n: int, seed: int = 0) -> np.ndarray:
    """`n` unit vectors: `direction` plus isotropic noise of `noise` per unit of length."""
    rng = np.random.default_rng(seed)
    dim = direction.size
    return _unit(direction[None] + noise * rng.normal(size=(n, dim)) / math.sqrt(dim))


def brute_force_mean_cosine(vectors: np.ndarray) -> float:
    sims = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    return float(sims[np.triu_indices(len(vectors), 1)].mean())


def test_random_unit_vectors_are_spread_out() -> None:
    vectors = _unit(np.random.default_rng(0).normal(size=(500, 64)))
    spread = embedding_spread(vectors)
    assert abs(spread.mean_cosine) < 0.01
    assert spread.effective_rank > 50  # of 64
    assert spread.cosine_std == pytest.approx(1 / 8, rel=0.1)  # 1 / sqrt(D)
    assert not spread.collapsed and spread.vectors == spread.sampled == 500


def test_one_vector_plus_tiny_noise_is_collapsed() -> None:
    direction = np.random.default_rng(1).normal(size=64)
    spread = embedding_spread(around(direction / np.linalg.norm(direction), 0.01, 300))
    assert spread.mean_cosine > 0.9999 and spread.effective_rank < COLLAPSED_EFFECTIVE_RANK
    assert spread.collapsed
    exact = embedding_spread(np.repeat(_unit(direction[None]), 50, axis=0))
    assert exact.mean_cosine == pytest.approx(1.0) and exact.effective_rank == pytest.approx(1.0)
    assert exact.collapsed and exact.cosine_std == pytest.approx(0.0, abs=1e-6)


def test_a_weak_but_healthy_set_near_098_mean_cosine_is_not_collapsed() -> None:
    """What a small random-init encoder that beats chance looks like: close together, but spread."""
    direction = np.random.default_rng(2).normal(size=64)
    vectors = around(direction / np.linalg.norm(direction), 0.14, 400)
    spread = embedding_spread(vectors)
    assert 0.97 < spread.mean_cosine < 0.99
    assert spread.effective_rank > 2 * COLLAPSED_EFFECTIVE_RANK
    assert not spread.collapsed


def test_one_direction_of_variation_is_collapsed_below_the_mean_cosine_bar() -> None:
    """Tiles that vary along a single line only (cosines around 0.99) are collapsed by the rank rule."""
    rng = np.random.default_rng(3)
    base, line = np.eye(32)[0], np.eye(32)[1]
    vectors = _unit(base[None] + 0.15 * rng.normal(size=(200, 1)) * line[None])
    spread = embedding_spread(vectors)
    assert spread.mean_cosine < COLLAPSED_MEAN_COSINE
    assert spread.effective_rank < COLLAPSED_EFFECTIVE_RANK and spread.collapsed


def test_few_vectors_are_judged_by_the_mean_cosine_only() -> None:
    pair = _unit(np.array([[1.0, 0.0, 0.0], [0.5, math.sqrt(3) / 2, 0.0]]))  # cosine 0.5
    spread = embedding_spread(pair)
    assert spread.mean_cosine == pytest.approx(0.5, abs=1e-6)
    assert spread.effective_rank < COLLAPSED_EFFECTIVE_RANK  # two vectors: a small rank whatever they are
    assert not spread.collapsed
    single = embedding_spread(pair[:1])
    assert math.isnan(single.mean_cosine) and not single.collapsed
    assert single.to_dict()["mean_cosine"] is None and "spread.mean_cosine" not in single.metrics()


def test_mean_cosine_is_exact_and_the_rest_is_sampled_with_a_seed() -> None:
    rng = np.random.default_rng(4)
    vectors = around(rng.normal(size=16), 3.0, SAMPLE + 500, seed=5)
    spread = embedding_spread(vectors, seed=7)
    assert spread.mean_cosine == pytest.approx(brute_force_mean_cosine(vectors), abs=1e-6)
    assert spread.sampled == SAMPLE and spread.vectors == SAMPLE + 500
    assert embedding_spread(vectors, seed=7) == spread  # same seed, same figures
    small = embedding_spread(vectors[:300])
    assert small.mean_cosine == pytest.approx(brute_force_mean_cosine(vectors[:300]), abs=1e-6)


def test_rows_are_normalised_and_bad_shapes_refused() -> None:
    vectors = _unit(np.random.default_rng(6).normal(size=(50, 8)))
    assert embedding_spread(vectors * 3.0).mean_cosine == pytest.approx(embedding_spread(vectors).mean_cosine)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        embedding_spread(vectors[0])


def test_effective_rank_counts_equal_directions() -> None:
    assert effective_rank(np.eye(5)) == pytest.approx(5.0)
    assert effective_rank(np.ones((4, 3))) == pytest.approx(1.0)
    assert effective_rank(np.zeros((4, 3))) == 0.0


def test_records_metrics_and_the_report_line() -> None:
    direction = np.random.default_rng(8).normal(size=32)
    collapsed = embedding_spread(around(direction / np.linalg.norm(direction), 0.01, 100))
    data = json.loads(json.dumps(collapsed.to_dict()))
    assert set(data) == {"mean_cosine", "cosine_std", "effective_rank", "vectors", "sampled", "collapsed"}
    assert data["collapsed"] is True
    assert collapsed.metrics("val.spread.")["val.spread.collapsed"] == 1.0
    assert {"val.spread.mean_cosine", "val.spread.effective_rank"} <= set(collapsed.metrics("val.spread."))
    assert collapsed.summary().startswith("tile embeddings: mean cosine 0.9999, effective rank 1.")
    assert collapsed.summary().endswith("(COLLAPSED)")
    healthy = embedding_spread(_unit(np.random.default_rng(9).normal(size=(100, 32))))
    assert healthy.summary().endswith("(ok)")
    assert describe(None) == describe({}) == "tile embeddings: spread unknown"
