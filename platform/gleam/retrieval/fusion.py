"""One vector for a set of photos of one place: the plain mean, or a mean weighted by agreement.

A set (several photos taken together at one place) is searched as one query. The plain normalised
mean gives every photo the same say, so one photo of something else (a wrong upload, a photo of the
sky, a neighbour's garden) drags the set's vector away from the place. FlexGeo / Set-CVGL fuse a set
with a learned, similarity-guided feature fuser instead; "agreement" is a training-free form of that
idea: a photo that agrees with the rest of the set counts more, the odd photo out counts less.

Agreement is iterated re-weighting toward the weighted consensus of the *other* photos: a photo's
agreement is its weighted mean cosine to the others (uniform weights at first), its weight a softmax
of agreements at temperature `AGREEMENT_TEMPERATURE`, repeated `AGREEMENT_ROUNDS` times so an outlier's
pull on the others' agreement fades too. What it says and no more: photos that agree equally (identical
photos, any pair) get equal weights, which is the mean; a single photo gets weight 1; when most photos
disagree with each other there is no consensus and the weights stay near uniform.

numpy only: serving, evaluation and benchmarks fuse the same way without importing each other.
"""

from __future__ import annotations

import numpy as np

FUSIONS: tuple[str, ...] = ("mean", "agreement")
# cosine units: a photo whose agreement is 0.1 lower than another's gets e^-1 of its weight. Unit-vector
# embeddings of one place agree at cosines far above unrelated ones, so an outlier is tens of times lighter
AGREEMENT_TEMPERATURE = 0.1
# re-weighting rounds: the first uses uniform weights, later ones discount the outlier's own votes
AGREEMENT_ROUNDS = 3
_EPS = 1e-12


def fuse_set(
    vectors: np.ndarray, method: str = "mean", temperature: float = AGREEMENT_TEMPERATURE
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (n, d) of one place -> (fused unit vector (d,), weights (n,) summing to 1).

    "mean" is the normalised mean (serve's `fuse`); "agreement" weights each photo by its agreement
    with the rest of the set (module docstring). A fused vector of (near) zero norm, photos that cancel
    out, falls back to the heaviest photo (the first on ties, as the mean always did).
    """
    if method not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {method!r}")
    data = np.asarray(vectors, dtype=np.float32)
    if data.ndim != 2 or data.shape[0] < 1:
        raise ValueError(f"a set needs vectors of shape (n >= 1, d), got {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("set vectors must be finite")
    n = data.shape[0]
    if method == "mean" or n == 1:
        weights = np.full(n, 1.0 / n)
    else:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        weights = agreement_weights(data, temperature)
    fused = (weights[:, None] * data.astype(np.float64)).sum(axis=0)
    norm = float(np.linalg.norm(fused))
    if norm <= _EPS:
        return data[int(np.argmax(weights))].copy(), weights
    return (fused / norm).astype(np.float32), weights


def agreement_weights(
    vectors: np.ndarray, temperature: float = AGREEMENT_TEMPERATURE, rounds: int = AGREEMENT_ROUNDS
) -> np.ndarray:
    """Weights (n,) summing to 1: softmax of each photo's weighted mean cosine to the other photos."""
    data = np.asarray(vectors, dtype=np.float64)
    n = data.shape[0]
    if n == 1:
        return np.ones(1)
    unit = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), _EPS)
    cosine = unit @ unit.T
    others = 1.0 - np.eye(n)  # a photo never votes for itself
    weights = np.full(n, 1.0 / n)
    for _ in range(max(1, rounds)):
        votes = others * weights[None, :]
        agreement = (cosine * votes).sum(axis=1) / np.maximum(votes.sum(axis=1), _EPS)
        logits = (agreement - agreement.max()) / temperature
        weights = np.exp(logits)
        weights /= weights.sum()
    return weights
