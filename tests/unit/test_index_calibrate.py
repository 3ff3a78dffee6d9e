"""The served match threshold and confidence: positives against the hardest other tile, per modality."""

from __future__ import annotations

import numpy as np
import pytest

from gleam.explain.confidence import MIN_QUERIES, POOLED
from gleam.explain.evidence import Evidence, evidence_answer
from gleam.index.calibrate import (
    AT_CHANCE_ACCURACY,
    _pair_scores,
    calibrate_pairs,
    calibration_for,
    evidence_facts,
    index_quality,
    is_at_chance,
)


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


def test_an_index_without_fitted_confidences_keeps_each_modality_threshold_and_gives_no_confidence() -> None:
    """meta.json of a build before confidences were fitted: it loads, the thresholds are as they were."""
    calibration = {"threshold": 0.5, "accuracy": 0.8, "by_modality": {"drone": {"threshold": 0.7}}}
    assert calibration_for(calibration, "drone") == ({"threshold": 0.7}, "drone")
    assert calibration_for(calibration, "ground") == (calibration, POOLED)  # no calibration of its own
    assert calibration_for(None, "drone") is None
    facts = evidence_facts({"calibration": calibration}, "drone")
    assert (facts["threshold"], facts["calibration_used"], facts["confidence_model"]) == (0.7, "drone", None)
    assert facts["modality"] == "drone" and facts["calibration"] is calibration
    nothing = evidence_facts({}, "drone")
    assert nothing["threshold"] is None and nothing["confidence_model"] is None
    assert nothing["calibration_used"] is None


def _pairs(rng: np.random.Generator, queries: int, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) scores; `gap` 0: the same distribution (a calibration that does not separate)."""
    return rng.normal(0.5 + gap, 0.05, queries), rng.normal(0.5, 0.05, queries)


def test_a_calibration_that_does_not_separate_gives_a_coin_and_no_verdict() -> None:
    rng = np.random.default_rng(0)
    overall, by_modality = calibrate_pairs({"drone": _pairs(rng, 600, 0.0), "ground": _pairs(rng, 600, 0.0)})
    assert overall["at_chance"] and all(own["at_chance"] for own in by_modality.values())
    meta = {"calibration": {**overall, "by_modality": by_modality}}
    for modality in ("drone", "ground"):
        facts = evidence_facts(meta, modality)
        assert facts["calibration_used"] == modality and facts["confidence_model"]["pairs"] == 1200
        for similarity in (0.4, 0.5, 0.6, 0.7):
            evidence = Evidence(similarity=similarity, **facts)
            assert evidence.fitted.probability(similarity) == pytest.approx(0.5, abs=0.05)
            answer = evidence_answer(evidence, "en")
            assert answer.match is None and answer.confidence is None  # no "same place", at any similarity
            assert "same place" not in answer.reasoning.replace("whether they show the same place", "")


def test_a_calibration_that_separates_gives_a_high_confidence_for_a_high_similarity() -> None:
    rng = np.random.default_rng(1)
    overall, by_modality = calibrate_pairs({"drone": _pairs(rng, 300, 0.3)})
    assert not overall["at_chance"] and overall["accuracy"] > 0.95
    facts = evidence_facts({"calibration": {**overall, "by_modality": by_modality}}, "drone")
    assert facts["calibration_used"] == "drone"
    high = evidence_answer(Evidence(similarity=0.8, **facts), "en")
    assert high.match is True and high.confidence > 0.95 and high.notes == []
    low = evidence_answer(Evidence(similarity=0.45, **facts), "en")
    assert low.match is False and low.confidence > 0.9
    near = evidence_answer(Evidence(similarity=facts["threshold"] + 0.01, **facts), "en")
    assert 0.5 <= near.confidence < high.confidence


def test_a_modality_with_too_few_queries_is_answered_with_the_pooled_calibration_and_says_so() -> None:
    rng = np.random.default_rng(2)
    few = MIN_QUERIES - 1
    overall, by_modality = calibrate_pairs({"drone": _pairs(rng, 200, 0.3), "ground": _pairs(rng, few, 0.3)})
    assert by_modality["drone"]["confidence"] is not None and "fallback" not in by_modality["drone"]
    ground = by_modality["ground"]
    assert ground["confidence"] is None and ground["fallback"] == POOLED and ground["queries"] == few
    assert overall["positives"] == 200 + few and overall["confidence"]["pairs"] == 2 * (200 + few)
    meta = {"calibration": {**overall, "by_modality": by_modality}}
    facts = evidence_facts(meta, "ground")
    assert facts["calibration_used"] == POOLED
    assert facts["threshold"] == overall["threshold"] and facts["confidence_model"] == overall["confidence"]
    answer = evidence_answer(Evidence(similarity=0.8, **facts), "en")
    assert answer.confidence is not None and answer.evidence["calibration_used"] == POOLED
    assert any("ground has no calibration of its own" in note and POOLED in note for note in answer.notes)
    assert index_quality(None, meta["calibration"], "ground")["queries"] is None  # the pooled one's figures


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
