"""Retrieval metrics: hand-worked University-1652 examples, junk, pessimistic ties, R@1% rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gleam.retrieval import metrics
from gleam.retrieval.metrics import one_percent_rank, retrieval_metrics


def reference_metrics(sim: np.ndarray, q: np.ndarray, g: np.ndarray, ks: tuple[int, ...]) -> dict:
    """A per-query transcription of University-1652's compute_mAP, with pessimistic ties by lexsort."""
    keep = g != -1
    sim, g = sim[:, keep], g[keep]
    cutoffs = {f"R@{k}": k for k in ks} | {"R@1%": one_percent_rank(g.size)}
    hits, ap, evaluated = dict.fromkeys(cutoffs, 0), 0.0, 0
    for row, label in zip(sim, q, strict=True):
        good = g == label
        if not good.any():
            continue
        evaluated += 1
        order = np.lexsort((good, -row))  # descending similarity, incorrect first among ties
        rows_good = np.flatnonzero(good[order])
        for name, k in cutoffs.items():
            hits[name] += int(rows_good[0] < k)
        for i, r in enumerate(rows_good):
            precision = (i + 1) / (r + 1)
            old_precision = i / r if r != 0 else 1.0
            ap += (old_precision + precision) / 2 / len(rows_good)
    out = {name: 100 * h / evaluated for name, h in hits.items()}
    return out | {
        "AP": 100 * ap / evaluated,
        "queries": evaluated,
        "queries_without_match": len(q) - evaluated,
    }


def assert_metrics(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=1e-9), key


def test_single_correct_item_hand_worked() -> None:
    sim = np.array(
        [
            [0.9, 0.8, 0.1, 0.2],  # label 11 = g1; order g0 g1 g3 g2 -> rank 1; AP = (0/1 + 1/2) / 2 = 1/4
            [0.1, 0.2, 0.3, 0.9],  # label 13 = g3 -> rank 0; AP = 1
            [0.5, 0.6, 0.4, 0.7],  # label 12 = g2; order g3 g1 g0 g2 -> rank 3; AP = (0/3 + 1/4) / 2 = 1/8
        ]
    )
    result = retrieval_metrics(sim, [11, 13, 12], [10, 11, 12, 13], ks=(1, 3))
    # R@1: only query 1. R@3: queries 0 and 1 (rank 3 is outside the top 3). AP: (1/4 + 1 + 1/8) / 3.
    # R@1%: 4 gallery items -> rank max(1, floor(0.04 + 0.5)) = 1, the same as R@1.
    expected = {"R@1": 100 / 3, "R@3": 200 / 3, "R@1%": 100 / 3, "AP": 100 * 1.375 / 3}
    assert_metrics(result, expected | {"queries": 3, "queries_without_match": 0})


def test_default_keys() -> None:
    result = retrieval_metrics(np.eye(3), [0, 1, 2], [0, 1, 2])
    assert_metrics(
        result,
        {
            "R@1": 100,
            "R@5": 100,
            "R@10": 100,
            "R@1%": 100,
            "AP": 100,
            "queries": 3,
            "queries_without_match": 0,
        },
    )


def test_multiple_correct_items_use_the_trapezoid_rule() -> None:
    # Ranking is the gallery order; the correct items (label 1) sit at ranks 0, 2, 4:
    #   i=0, r=0: precision 1,   old 1   -> 1
    #   i=1, r=2: precision 2/3, old 1/2 -> 7/12
    #   i=2, r=4: precision 3/5, old 2/4 -> 11/20
    # AP = (1 + 7/12 + 11/20) / 3 = (60 + 35 + 33) / 60 / 3 = 32/45.
    sim = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    result = retrieval_metrics(sim, [1], [1, 2, 1, 3, 1], ks=(1,))
    assert result["AP"] == pytest.approx(100 * 32 / 45)
    assert result["R@1"] == 100


def test_junk_items_are_removed_from_the_ranking() -> None:
    # Query 5: order g0(junk) g2(junk) g3 g1 -> junk removed, g1 (label 5) ranks 1, not 3.
    # AP = (0/1 + 1/2) / 2 = 1/4. Query 6: g3 is first once junk is gone -> rank 0, AP 1.
    sim = np.array([[0.9, 0.5, 0.8, 0.7], [0.9, 0.5, 0.8, 0.7]])
    result = retrieval_metrics(sim, [5, 6], [-1, 5, -1, 6], ks=(1, 2))
    assert_metrics(
        result,
        {"R@1": 50, "R@2": 100, "R@1%": 50, "AP": 100 * 1.25 / 2, "queries": 2, "queries_without_match": 0},
    )


def test_a_junk_labelled_query_matches_nothing() -> None:
    result = retrieval_metrics(np.ones((2, 3)), [-1, 4], [-1, 4, 3], ks=(1,))
    assert result["queries"] == 1 and result["queries_without_match"] == 1


@pytest.mark.parametrize("gallery", [[1, 2, 3], [2, 1, 3], [1, 3, 2]])
def test_ties_are_pessimistic_whatever_the_gallery_order(gallery: list[int]) -> None:
    # All three similarities tie: the correct item ranks after both incorrect ones -> rank 2.
    # AP = (0/2 + 1/3) / 2 = 1/6. A stable sort would rank it 0 when it comes first in the gallery.
    result = retrieval_metrics(np.full((1, 3), 0.5), [2], gallery, ks=(1, 2, 3))
    assert_metrics(
        result,
        {"R@1": 0, "R@2": 0, "R@3": 100, "R@1%": 0, "AP": 100 / 6, "queries": 1, "queries_without_match": 0},
    )


def test_partial_tie_and_tied_correct_items() -> None:
    # Correct g1 ties with incorrect g2 below g0: ranks after g2 -> rank 2.
    partial = retrieval_metrics(np.array([[0.9, 0.5, 0.5, 0.1]]), [2], [3, 2, 1, 4], ks=(2, 3))
    assert (partial["R@2"], partial["R@3"]) == (0, 100)
    # Two correct items tied with one incorrect: the incorrect goes first -> ranks 1 and 2.
    #   i=0, r=1: precision 1/2, old 0/1 -> 1/4;  i=1, r=2: precision 2/3, old 1/2 -> 7/12
    # AP = (1/4 + 7/12) / 2 = 5/12.
    tied = retrieval_metrics(np.full((1, 3), 0.5), [2], [2, 2, 1], ks=(1,))
    assert tied["AP"] == pytest.approx(100 * 5 / 12)
    assert tied["R@1"] == 0


@pytest.mark.parametrize(
    ("size", "rank"), [(0, 1), (40, 1), (149, 1), (150, 2), (249, 2), (250, 3), (251, 3), (1000, 10)]
)
def test_one_percent_rank_rounds_half_up(size: int, rank: int) -> None:
    assert one_percent_rank(size) == rank


def _correct_at(rank: int, size: int, junk: int = 0, one_percent: str = "platform") -> dict:
    """One query whose only correct item (label 0) sits at `rank` among `size` real gallery items."""
    sim = np.concatenate([np.linspace(1.0, 0.0, size), np.full(junk, 2.0)])[None, :]
    labels = np.concatenate([np.arange(1, size + 1), np.full(junk, -1)])
    labels[rank] = 0
    return retrieval_metrics(sim, [0], labels, ks=(1,), one_percent=one_percent)


def test_r_at_one_percent_uses_the_rounded_rank_over_real_items() -> None:
    assert _correct_at(rank=1, size=150)["R@1%"] == 100  # 1.5 -> 2: the second item counts
    assert _correct_at(rank=2, size=150)["R@1%"] == 0
    assert _correct_at(rank=1, size=40)["R@1%"] == 0  # 0.4 -> 0 -> at least 1
    assert _correct_at(rank=2, size=250)["R@1%"] == 100  # 2.5 -> 3 (Python's round would say 2)
    # 100 junk items do not grow the gallery: 150 real items still give rank 2, not 3.
    assert _correct_at(rank=2, size=150, junk=100)["R@1%"] == 0


@pytest.mark.parametrize(
    ("size", "junk", "rank"),
    [
        (150, 0, 3),  # round(1.5) = 2: CMC index 2, the third item (platform: 2)
        (250, 0, 3),  # round(2.5) = 2 (half to even), the same as the platform's half-up 3
        (350, 0, 5),  # round(3.5) = 4 (platform: 4)
        (40, 0, 1),  # round(0.4) = 0: CMC[0] is R@1
        (100, 50, 3),  # junk counts in the size: 150 -> index 2 (platform, junk-free 100: 1)
        (1000, 0, 11),  # index 10 (platform: 10)
    ],
)
def test_official_one_percent_rank_is_the_scripts_cmc_index(size: int, junk: int, rank: int) -> None:
    """University-1652's evaluate_gpu.py reads CMC[round(len(gallery_label) * 0.01)], 0-based."""
    assert one_percent_rank(size, "official", junk=junk) == rank


def test_unknown_one_percent_convention_is_refused() -> None:
    with pytest.raises(ValueError, match="one_percent"):
        one_percent_rank(100, "published")  # type: ignore[arg-type]


def test_official_r_at_one_percent_differs_from_the_platforms_where_the_rounding_does() -> None:
    # 150 items: the third (0-based rank 2) is a hit officially (CMC[2]), not on the platform (rank < 2)
    assert _correct_at(rank=2, size=150, one_percent="official")["R@1%"] == 100
    assert _correct_at(rank=2, size=150)["R@1%"] == 0
    assert _correct_at(rank=3, size=150, one_percent="official")["R@1%"] == 0
    # 250 items: round(2.5) = 2 keeps the official cut at rank 2, where half up would have moved it to 3
    assert _correct_at(rank=2, size=250, one_percent="official")["R@1%"] == 100
    assert _correct_at(rank=3, size=250, one_percent="official")["R@1%"] == 0
    # junk grows the official gallery (100 real + 50 junk -> 150 -> index 2) but not the platform's (-> 1)
    assert _correct_at(rank=2, size=100, junk=50, one_percent="official")["R@1%"] == 100
    assert _correct_at(rank=1, size=100, junk=50)["R@1%"] == 0
    # every other figure is the same whichever convention R@1% follows
    official = _correct_at(rank=2, size=150, one_percent="official")
    platform = _correct_at(rank=2, size=150)
    assert {k: v for k, v in official.items() if k != "R@1%"} == {
        k: v for k, v in platform.items() if k != "R@1%"
    }


def test_queries_without_match_are_skipped_and_counted() -> None:
    sim = np.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.4]])
    result = retrieval_metrics(sim, [1, 7, 2], [1, 2], ks=(1,))
    # Query 1 (label 7) has no match; query 0 is right at rank 0, query 2 wrong (rank 1, AP 1/4).
    assert_metrics(
        result, {"R@1": 50, "R@1%": 50, "AP": 100 * 1.25 / 2, "queries": 2, "queries_without_match": 1}
    )


def test_no_query_evaluated_gives_nan() -> None:
    result = retrieval_metrics(np.ones((2, 2)), [5, 6], [1, -1], ks=(1,))
    assert np.isnan(result["R@1"]) and np.isnan(result["AP"])
    assert (result["queries"], result["queries_without_match"]) == (0, 2)


def _random_problem(seed: int, q: int = 37, g: int = 53, classes: int = 9) -> tuple[np.ndarray, ...]:
    """Coarse similarities (many ties), several correct items per query, some junk and no-match."""
    rng = np.random.default_rng(seed)
    sim = rng.integers(0, 6, size=(q, g)).astype(np.float32) / 5
    gallery = rng.integers(0, classes, size=g)
    gallery[rng.random(g) < 0.1] = -1
    return sim, rng.integers(0, classes + 2, size=q), gallery


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_good_for_counting", [0, 16, 10_000])
def test_matches_a_per_query_reference(
    seed: int, max_good_for_counting: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways of ranking correct items (counting and sorting) agree with the per-query loop."""
    monkeypatch.setattr(metrics, "_MAX_GOOD_FOR_COUNTING", max_good_for_counting)
    sim, q, g = _random_problem(seed)
    ks = (1, 2, 5, 10)
    assert_metrics(retrieval_metrics(sim, q, g, ks=ks), reference_metrics(sim, q, g, ks))


def test_torch_input_equals_numpy_input() -> None:
    sim, q, g = _random_problem(3)
    expected = retrieval_metrics(sim, q, g)
    assert_metrics(
        retrieval_metrics(torch.from_numpy(sim), torch.from_numpy(q), torch.from_numpy(g)), expected
    )
    assert_metrics(retrieval_metrics(torch.from_numpy(sim).bfloat16(), q.tolist(), g.tolist()), expected)


def test_string_labels_map_consistently() -> None:
    sim, q, g = _random_problem(4)
    names = np.array([f"tile-{v}" for v in range(12)], dtype=object)
    string_gallery = [None if v == -1 else names[v] for v in g]
    assert_metrics(retrieval_metrics(sim, names[q], string_gallery), retrieval_metrics(sim, q, g))


@pytest.mark.parametrize("chunk_size", [1, 4, 36, 1000])
def test_chunking_does_not_change_the_result(chunk_size: int) -> None:
    sim, q, g = _random_problem(5)
    assert_metrics(retrieval_metrics(sim, q, g, chunk_size=chunk_size), retrieval_metrics(sim, q, g))


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="does not match"):
        retrieval_metrics(np.ones((2, 3)), [1, 2], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        retrieval_metrics(np.array([[np.nan, 1.0]]), [1], [1, 2])
    with pytest.raises(ValueError, match="positive"):
        retrieval_metrics(np.ones((1, 2)), [1], [1, 2], ks=(0,))
