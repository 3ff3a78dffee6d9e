"""The served match threshold: positives against the hardest other tile, per modality."""

from __future__ import annotations

import numpy as np

from gleam.index.calibrate import AT_CHANCE_ACCURACY, _pair_scores, index_quality, is_at_chance, threshold_for


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


def test_at_chance_is_a_balanced_accuracy_near_a_coin_flip() -> None:
    assert is_at_chance(0.5) and is_at_chance(AT_CHANCE_ACCURACY)
    assert not is_at_chance(AT_CHANCE_ACCURACY + 0.01) and not is_at_chance(0.9)


def test_index_quality_of_a_collapsed_index_at_chance() -> None:
    spread = {"mean_cosine": 0.99991, "effective_rank": 1.32, "collapsed": True}
    calibration = {
        "threshold": 0.999,
        "accuracy": 0.5,
        "at_chance": True,
        "queries": 128,
        "by_modality": {"drone": {"threshold": 0.999, "accuracy": 0.5, "at_chance": True, "queries": 32}},
    }
    quality = index_quality(spread, calibration, "drone")
    assert quality["collapsed"] is True and quality["at_chance"] is True and quality["reliable"] is False
    assert (quality["mean_cosine"], quality["effective_rank"], quality["queries"]) == (0.99991, 1.32, 32)
    warning = quality["warning"]
    assert warning.startswith("the encoder cannot tell places apart on this index")
    assert "mean pairwise cosine 0.9999" in warning and "balanced accuracy 0.50 on 32" in warning
    assert index_quality(spread, calibration)["queries"] == 128  # no modality: the overall calibration


def test_index_quality_of_a_healthy_index_and_of_one_built_before_spread_was_recorded() -> None:
    healthy = index_quality(
        {"mean_cosine": 0.97, "effective_rank": 12.2, "collapsed": False},
        {"threshold": 0.6, "accuracy": 0.9, "at_chance": False},
        "ground",  # not calibrated on its own: the overall calibration
    )
    assert healthy["reliable"] and healthy["warning"] is None
    assert healthy["collapsed"] is False and healthy["at_chance"] is False
    old = index_quality(None, {"threshold": 0.6, "accuracy": 0.8, "by_modality": {}}, "drone")
    assert old["collapsed"] is None and old["at_chance"] is False and old["reliable"]
    # an old index whose recorded accuracy is at chance is flagged from that figure
    old_at_chance = index_quality(None, {"threshold": 0.999, "accuracy": 0.5})
    assert old_at_chance["at_chance"] is True and old_at_chance["collapsed"] is None
    assert "collapsed" not in old_at_chance["warning"]
    # spread fine, calibration at chance: the ranking may beat chance, but no score confirms a match
    assert old_at_chance["warning"].startswith(
        "on this index the encoder's similarity cannot confirm a match"
    )
    nothing = index_quality(None, None)
    assert nothing["collapsed"] is None and nothing["at_chance"] is None and nothing["reliable"]
