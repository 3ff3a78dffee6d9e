"""Set fusion: the mean is today's normalised mean, agreement discounts the odd photo out."""

from __future__ import annotations

import numpy as np
import pytest

from gleam.retrieval.fusion import FUSIONS, agreement_weights, fuse_set


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def place_set(n_inliers: int, outlier: bool, seed: int = 0, d: int = 32) -> np.ndarray:
    """Photos of one place (a shared direction plus noise) and, optionally, one of an unrelated place."""
    rng = np.random.default_rng(seed)
    place = rng.normal(size=d)
    photos = [place + 0.5 * rng.normal(size=d) for _ in range(n_inliers)]
    if outlier:
        photos.append(rng.normal(size=d) * np.linalg.norm(place))
    return unit(np.stack(photos))


def test_the_outlier_gets_the_smallest_weight_clearly_below_its_share() -> None:
    vectors = place_set(4, outlier=True)
    fused, weights = fuse_set(vectors, "agreement")
    n = len(vectors)
    assert weights.sum() == pytest.approx(1.0)
    assert int(np.argmin(weights)) == n - 1
    assert weights[-1] < 0.25 / n  # a quarter of an equal share at most
    assert (weights[:-1] > 4 * weights[-1]).all()
    # the fused vector stays closer to the place than the mean does
    inliers = unit(vectors[:-1].mean(axis=0, keepdims=True))[0]
    mean, _ = fuse_set(vectors, "mean")
    assert float(fused @ inliers) > float(mean @ inliers)


@pytest.mark.parametrize("method", FUSIONS)
def test_output_is_a_unit_vector_with_weights_summing_to_one(method: str) -> None:
    fused, weights = fuse_set(place_set(3, outlier=True, seed=1), method)
    assert fused.shape == (32,) and fused.dtype == np.float32
    assert np.linalg.norm(fused) == pytest.approx(1.0, abs=1e-5)
    assert weights.shape == (4,) and weights.sum() == pytest.approx(1.0)
    assert (weights >= 0).all()


def test_mean_is_the_normalised_mean() -> None:
    vectors = place_set(5, outlier=True, seed=2)
    fused, weights = fuse_set(vectors, "mean")
    expected = vectors.mean(axis=0)
    np.testing.assert_allclose(fused, expected / np.linalg.norm(expected), atol=1e-6)
    np.testing.assert_allclose(weights, np.full(6, 1 / 6))


@pytest.mark.parametrize("method", FUSIONS)
def test_a_single_photo_is_itself_with_weight_one(method: str) -> None:
    vector = place_set(1, outlier=False, seed=3)
    fused, weights = fuse_set(vector, method)
    np.testing.assert_allclose(fused, vector[0], atol=1e-6)
    assert weights.tolist() == [1.0]


def test_photos_that_agree_equally_get_equal_weights() -> None:
    identical = np.repeat(place_set(1, outlier=False, seed=4), 3, axis=0)
    np.testing.assert_allclose(agreement_weights(identical), np.full(3, 1 / 3))
    pair = place_set(1, outlier=True, seed=5)  # two photos: no way to tell which is the odd one
    np.testing.assert_allclose(fuse_set(pair, "agreement")[1], [0.5, 0.5])


def test_opposite_photos_fall_back_to_one_photo_not_a_zero_vector() -> None:
    v = place_set(1, outlier=False, seed=6)
    fused, _ = fuse_set(np.concatenate([v, -v]), "mean")
    np.testing.assert_allclose(fused, v[0], atol=1e-6)


def test_unknown_method_and_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="fusion must be one of"):
        fuse_set(place_set(2, outlier=False), "median")
    with pytest.raises(ValueError, match="shape"):
        fuse_set(np.zeros((0, 4), dtype=np.float32), "mean")
    with pytest.raises(ValueError, match="finite"):
        fuse_set(np.array([[np.nan, 1.0]]), "agreement")
