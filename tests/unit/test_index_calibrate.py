"""The served match threshold: positives against the hardest other tile, per modality."""

from __future__ import annotations

import numpy as np

from gleam.index.calibrate import _pair_scores, threshold_for


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_pair_scores_take_the_own_tile_and_the_best_other_one() -> None:
    rng = np.random.default_rng(0)
    tiles = _unit(rng.normal(size=(50, 8)))
    own = np.array([3, 7, 11])
    queries = _unit(tiles[own] + 0.05 * rng.normal(size=(3, 8)))
    positive, negative = _pair_scores(queries, own, tiles)
    np.testing.assert_allclose(positive, np.einsum("ij,ij->i", queries, tiles[own]), rtol=1e-5)
    sims = queries @ tiles.T
    sims[np.arange(3), own] = -np.inf
    np.testing.assert_allclose(negative, sims.max(axis=1), rtol=1e-5)


def test_pair_scores_when_another_tile_beats_the_own_one() -> None:
    tiles = _unit(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]))
    queries = _unit(np.array([[0.9, 0.1]]))  # own tile is 0, but tile 1 is identical to the query
    positive, negative = _pair_scores(queries, np.array([0]), tiles)
    assert negative[0] > positive[0]
    assert negative[0] == np.float32(1.0) or abs(negative[0] - 1.0) < 1e-6


def test_threshold_for_prefers_the_modality_and_falls_back_to_overall() -> None:
    calibration = {"threshold": 0.5, "by_modality": {"drone": {"threshold": 0.7}}}
    assert threshold_for(calibration, "drone") == 0.7
    assert threshold_for(calibration, "ground") == 0.5
    assert threshold_for(None, "drone") is None
