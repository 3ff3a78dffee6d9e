"""The evidence answer's confidence: a probability fitted on the index's own calibration pairs.

A fixed curve gives the same confidence for the same distance to the threshold on every index, so an
index whose calibration is a coin flip still says "same place, confidence 0.51". Instead each index
build fits, per modality, how the chance of "same place" grows with a similarity's distance to the
calibrated threshold, on the very pairs the threshold was calibrated on (a query with its own tile: same
place; with the hardest other tile: not), and the evidence answer reads its confidence from that fit.

The fit is Platt scaling (a logistic regression, scikit-learn) with two choices:
- No intercept: the 50% point is the calibrated threshold, so the verdict (similarity >= threshold) and
  the confidence never disagree. The pairs are balanced (one positive and one negative per query), and
  there the threshold of best balanced accuracy estimates where both classes are equally likely, which
  is the point a free intercept would estimate as well.
- Platt's target smoothing: the labels are (n+ + 1) / (n+ + 2) and 1 / (n- + 2) instead of 1 and 0, so a
  perfectly separated calibration still yields a finite slope, and no confidence claims more certainty
  than its number of pairs supports.
On pairs that do not separate the slope is ~0 and every confidence ~0.5; a slope <= 0 (a higher
similarity is not more often the same place) supports no verdict at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

METHOD = "platt-logistic"
# The name of the calibration over every modality's pairs together: what a modality with too few
# validation queries of its own is answered with (and what the answer then says it used).
POOLED = "all modalities pooled"
# A modality needs this many validation queries (each one positive and one negative pair) for a
# threshold and a confidence of its own; with fewer, both come from the pooled calibration.
MIN_QUERIES = 20


@dataclass(frozen=True)
class ConfidenceModel:
    """P(same place | similarity) = logistic(slope * (similarity - threshold)), fitted on `pairs` pairs."""

    threshold: float
    slope: float
    pairs: int
    method: str = METHOD

    @property
    def informative(self) -> bool:
        """A higher similarity means "same place" more often on the pairs it was fitted on."""
        return self.slope > 0.0

    def probability(self, similarity: float) -> float:
        """The probability that the pair shows the same place."""
        return 0.5 * (1.0 + math.tanh(0.5 * self.slope * (similarity - self.threshold)))

    def confidence(self, similarity: float) -> float:
        """The probability that the verdict `similarity >= threshold` is right (>= 0.5 when informative)."""
        same = self.probability(similarity)
        return same if similarity >= self.threshold else 1.0 - same

    def to_dict(self) -> dict[str, Any]:
        """What meta.json stores beside the calibration's own threshold (so the threshold is not repeated)."""
        out = asdict(self)
        out.pop("threshold")
        return out

    @classmethod
    def from_dict(cls, threshold: float, data: dict[str, Any]) -> ConfidenceModel:
        return cls(
            threshold=float(threshold),
            slope=float(data["slope"]),
            pairs=int(data["pairs"]),
            method=str(data.get("method", METHOD)),
        )


def fit_confidence(
    positive_scores: Sequence[float] | np.ndarray,
    negative_scores: Sequence[float] | np.ndarray,
    threshold: float,
) -> ConfidenceModel:
    """Platt scaling of "same place" on `similarity - threshold`, no intercept, smoothed targets."""
    from sklearn.linear_model import LogisticRegression

    pos = np.asarray(positive_scores, dtype=np.float64).ravel()
    neg = np.asarray(negative_scores, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError("a confidence needs at least one positive and one negative score")
    distance = np.concatenate([pos, neg]) - float(threshold)
    target = np.concatenate(
        [np.full(pos.size, (pos.size + 1) / (pos.size + 2)), np.full(neg.size, 1 / (neg.size + 2))]
    )
    # soft targets as weights: each pair appears once as "same" (weight t) and once as "not" (weight 1 - t)
    features = np.concatenate([distance, distance])[:, None]
    labels = np.concatenate([np.ones(distance.size), np.zeros(distance.size)])
    weights = np.concatenate([target, 1.0 - target])
    model = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-8, max_iter=1000)  # to the MLE
    model.fit(features, labels, sample_weight=weights)
    return ConfidenceModel(
        threshold=float(threshold), slope=float(model.coef_[0, 0]), pairs=int(distance.size)
    )
