"""The evidence answer's confidence, fitted on calibration pairs (Platt scaling anchored at the threshold)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gleam.explain.confidence import METHOD, ConfidenceModel, fit_confidence


def _soft_gradient(model: ConfidenceModel, pos: np.ndarray, neg: np.ndarray) -> float:
    """d log-likelihood / d slope with Platt's smoothed targets: zero at the maximum-likelihood slope."""
    distance = np.concatenate([pos, neg]) - model.threshold
    target = np.concatenate(
        [np.full(pos.size, (pos.size + 1) / (pos.size + 2)), np.full(neg.size, 1 / (neg.size + 2))]
    )
    fitted = 1 / (1 + np.exp(-model.slope * distance))
    return float(np.sum((target - fitted) * distance))


def test_pairs_that_do_not_separate_give_a_confidence_near_a_coin_everywhere() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.6, 0.1, 2000), rng.normal(0.6, 0.1, 2000)  # the same distribution
    model = fit_confidence(pos, neg, threshold=0.6)
    for similarity in np.linspace(0.3, 0.9, 13):
        assert model.probability(similarity) == pytest.approx(0.5, abs=0.03)
        assert 0.47 < model.confidence(similarity) < 0.53


def test_separated_pairs_give_a_high_confidence_far_from_the_threshold() -> None:
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(0.75, 0.05, 500), rng.normal(0.45, 0.05, 500)
    model = fit_confidence(pos, neg, threshold=0.6)
    assert model.informative and model.method == METHOD and model.pairs == 1000
    assert model.probability(0.6) == 0.5  # anchored: the verdict and the confidence agree at the threshold
    assert model.probability(0.8) > 0.97 and model.confidence(0.8) > 0.97  # "same place", sure of it
    assert model.probability(0.4) < 0.03 and model.confidence(0.4) > 0.97  # "not", and sure of that
    assert 0.5 < model.confidence(0.62) < model.confidence(0.7) < model.confidence(0.8)
    assert _soft_gradient(model, pos, neg) == pytest.approx(0.0, abs=1e-3)  # the maximum-likelihood slope


def test_perfectly_separated_pairs_give_a_finite_slope_and_no_certainty_beyond_their_number() -> None:
    pos, neg = np.array([0.9, 0.8, 0.85]), np.array([0.1, 0.2])
    model = fit_confidence(pos, neg, threshold=0.5)
    assert np.isfinite(model.slope) and model.slope > 0
    # with 3 positives Platt's target is 4/5: the fit does not claim 0.999 from five pairs
    assert 0.7 < model.probability(0.85) < 0.95
    assert _soft_gradient(model, pos, neg) == pytest.approx(0.0, abs=1e-3)


def test_a_model_round_trips_through_meta_json_beside_its_threshold() -> None:
    model = fit_confidence([0.8, 0.7, 0.75], [0.4, 0.5, 0.6], threshold=0.65)
    stored = json.loads(json.dumps(model.to_dict()))
    assert "threshold" not in stored and stored["method"] == METHOD
    assert ConfidenceModel.from_dict(0.65, stored) == model


def test_fit_refuses_an_empty_side() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fit_confidence([], [0.1], threshold=0.5)
