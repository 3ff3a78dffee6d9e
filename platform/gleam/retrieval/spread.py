"""How spread out a set of unit embeddings is, and whether the encoder that made them has collapsed.

A collapsed encoder maps every image to (almost) one vector. Search still returns a ranking and the
calibration still returns a threshold, so nothing fails; every score is simply ~1.000 and no place can
be told from another. This module measures that on the vectors themselves (tiles of a gallery or an
index), so training, evaluation and the index build can say so, and serving can refuse to call a match.

- `mean_cosine`: the mean cosine similarity over all pairs of distinct vectors, exact (from the sum of
  the vectors: sum_{i != j} x_i.x_j = |sum x|^2 - sum |x|^2, O(N D), no pair is formed).
- `cosine_std`: the standard deviation of the pairwise cosines, over the pairs of a seeded sample of at
  most `SAMPLE` vectors (all of them when fewer).
- `effective_rank`: exp(entropy) of the normalised singular values (p_i = s_i / sum s) of the matrix of
  the (sampled) unit vectors, *not* mean-centred (Roy & Vetterli 2007): 1 when every vector points one
  way, D for vectors spread evenly over D directions. Centring was tried and rejected: it is blind to
  scale, so the tiny residuals of a collapsed encoder (isotropic noise around one direction) kept a
  centred effective rank of 27-43 of 64, the same as a healthy encoder (see the figures below).

Thresholds, measured on `test_convnext` encoders at 64 px (embed_dim 64) over the 200 tiles of a
200-place synthetic world (R@1 / R@10 against all 200 tiles, 800 queries, chance 0.5 / 5.0):

| encoder                                 | mean cosine | min cosine | cosine std  | eff. rank | R@1 / R@10 |
|-----------------------------------------|-------------|------------|-------------|-----------|------------|
| random init                             | 0.806       | -0.43      | 0.18        | 26.4      | 0.9 / 5.8  |
| healthy but weak: lr 3e-4, 45-100 steps | 0.973-0.977 | 0.82-0.92  | 0.009-0.015 | 11.7-12.2 | 1.5 / 8.8  |
| collapsed in training: lr 1e-3, 100 st. | 0.99982     | 0.9985     | 0.0002      | 1.47      | 0.6 / 7.2  |
| healthy, head norm weight x 0.03 + bias | 0.99979     | 0.9987     | 0.0001      | 1.74      | 1.6 / 8.8  |
| head norm weight 0, constant bias       | 1.0         | 1.0        | 0           | 1.0       | 0 / 0      |

(The user-reported collapse: min 0.9987, mean 0.9999, R@1 at chance.) So:

- COLLAPSED_MEAN_COSINE = 0.999: 1 - mean cosine is ~0.025 for the healthy-but-weak encoder and
  <= 0.0002 for the collapsed ones; 0.001 sits a factor of 5 to 25 from both, on the log scale where
  they differ. Above it, every score an index serves reads 1.000 to three decimals, bf16 or PQ codes
  erase the differences, and a calibrated threshold lands in the fourth decimal.
- COLLAPSED_EFFECTIVE_RANK = 2.0: fewer than two effective directions means the tiles vary along one
  line at most (healthy-but-weak: 12; collapsed: 1.0-1.74). It catches what the mean cosine misses: a
  set that varies along a single direction only, or a tight one just below the bar (head norm weight x
  0.03 on a random-init encoder: mean cosine 0.9987, effective rank 1.94). It is the second rule, not
  the first, because tiny isotropic noise lifts it in many dimensions (one direction plus 1 % noise:
  1.7 in 64 dimensions, about 5 in 512) while the mean cosine stays > 0.9999. A handful of vectors has
  a small rank whatever the encoder (two vectors at cosine 0.5 have 1.93), so this rule applies only
  when both the number of vectors and the dimension are at least `MIN_VECTORS_FOR_RANK`.

Either rule makes the set `collapsed`. Fewer than two vectors have no spread to measure: NaN figures,
never collapsed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

COLLAPSED_MEAN_COSINE = 0.999
COLLAPSED_EFFECTIVE_RANK = 2.0
MIN_VECTORS_FOR_RANK = 8
# vectors sampled for the pairwise std and the SVD: 2048^2 / 2 pairs, a (2048 x D) SVD, well under a second
SAMPLE = 2048


@dataclass(frozen=True)
class Spread:
    """The spread of one set of unit vectors (see the module docstring for each figure)."""

    mean_cosine: float
    cosine_std: float
    effective_rank: float
    vectors: int
    sampled: int  # vectors the std and the effective rank were computed on
    collapsed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    def metrics(self, prefix: str = "spread.") -> dict[str, float]:
        """The figures as MLflow metrics (collapsed as 0/1); NaN ones are left out."""
        values = {
            "mean_cosine": self.mean_cosine,
            "effective_rank": self.effective_rank,
            "cosine_std": self.cosine_std,
            "collapsed": float(self.collapsed),
        }
        return {prefix + k: float(v) for k, v in values.items() if not math.isnan(v)}

    def summary(self) -> str:
        """`tile embeddings: mean cosine 0.97, effective rank 12.2 (ok)`, or `(COLLAPSED)`."""
        return describe(self.to_dict())


def embedding_spread(vectors: np.ndarray, seed: int = 0, sample: int = SAMPLE) -> Spread:
    """The spread of (N, D) L2-normalised vectors (rows are re-normalised; zero rows stay zero)."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected an (N, D) array of vectors, got shape {array.shape}")
    n, dim = array.shape
    if n < 2:
        return Spread(math.nan, math.nan, math.nan, n, n, False)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    unit = array / np.maximum(norms, 1e-12)
    total = unit.sum(axis=0, dtype=np.float64)
    squares = float(np.einsum("ij,ij->", unit, unit, dtype=np.float64))
    mean_cosine = float(np.clip((total @ total - squares) / (n * (n - 1)), -1.0, 1.0))
    if n > sample:
        keep = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
        unit = unit[keep]
    picked = unit.astype(np.float64)
    upper = np.triu_indices(len(picked), 1)
    cosine_std = float((picked @ picked.T)[upper].std())
    rank = effective_rank(picked)
    collapsed = mean_cosine >= COLLAPSED_MEAN_COSINE or (
        min(len(picked), dim) >= MIN_VECTORS_FOR_RANK and rank < COLLAPSED_EFFECTIVE_RANK
    )
    return Spread(mean_cosine, cosine_std, rank, n, len(picked), bool(collapsed))


def effective_rank(matrix: np.ndarray) -> float:
    """exp(entropy) of the singular values normalised to sum 1; 0 for an all-zero matrix."""
    singular = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
    total = singular.sum()
    if total <= 0:
        return 0.0
    p = singular[singular > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def describe(spread: dict[str, Any] | None) -> str:
    """One line from a stored spread dict (meta.json, a result); `unknown` when there is none."""
    if not spread or spread.get("mean_cosine") is None:
        return "tile embeddings: spread unknown"
    verdict = "COLLAPSED" if spread.get("collapsed") else "ok"
    rank = spread.get("effective_rank")
    rank_text = f"{rank:.1f}" if isinstance(rank, (int, float)) else "?"
    return f"tile embeddings: mean cosine {spread['mean_cosine']:.4f}, effective rank {rank_text} ({verdict})"
