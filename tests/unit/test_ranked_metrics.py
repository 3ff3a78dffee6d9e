"""Metrics from top-D lists (what an index search returns): hand-worked cases and the full-ranking oracle."""

from __future__ import annotations

import numpy as np
import pytest

from gleam.retrieval.metrics import ranked_metrics, retrieval_metrics

GALLERY = ["a", "b", "c", "d", "e", "f"]


def _assert(actual: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=1e-9), key


def test_hand_worked_lists_with_a_miss_beyond_the_depth() -> None:
    scores = np.array([[0.9, 0.5, 0.4], [0.8, 0.7, 0.6], [0.9, 0.2, 0.1]], dtype=np.float32)
    ranked = [["a", "b", "c"], ["d", "e", "f"], ["f", "a", "e"]]
    # q0 -> b at rank 1: AP 1/4; q1 -> c is not in its list: a miss beyond depth 3, AP 0; q2 -> f at rank 0
    result = ranked_metrics(scores, ranked, ["b", "c", "f"], GALLERY, ks=(1, 2))
    _assert(result, {"R@1": 100 / 3, "R@2": 200 / 3, "R@1%": 100 / 3, "AP": 100 * 1.25 / 3})
    assert result["queries"] == 3 and result["beyond_depth"] == 1 and result["queries_without_match"] == 0


def test_ties_in_the_list_rank_the_positive_last() -> None:
    scores = np.array([[0.5, 0.5, 0.5, 0.1]])
    for ranked in (["c", "a", "b", "d"], ["a", "c", "b", "d"]):  # list order inside a tie does not matter
        result = ranked_metrics(scores, [ranked], ["c"], GALLERY[:4], ks=(1, 2, 3))
        _assert(result, {"R@1": 0.0, "R@2": 0.0, "R@3": 100.0, "AP": 100 * (1 / 3) / 2})


def test_a_positive_tied_with_the_end_of_a_cut_list_is_beyond_it() -> None:
    """Items past the list may share the last score, so the positive's rank is unknown: a miss."""
    scores = np.array([[0.9, 0.5]])
    cut = ranked_metrics(scores, [["a", "b"]], ["b"], GALLERY, ks=(1, 2))
    assert cut["R@2"] == 0.0 and cut["AP"] == 0.0 and cut["beyond_depth"] == 1
    whole = ranked_metrics(scores, [["a", "b"]], ["b"], GALLERY[:2], ks=(1, 2))  # the list is the gallery
    assert whole["R@2"] == 100.0 and whole["beyond_depth"] == 0


def test_k_beyond_what_the_index_returned_and_empty_slots() -> None:
    """An IVF search may return fewer than D items: empty slots hold None; k past them adds nothing."""
    scores = np.array([[0.7, -np.inf, -np.inf], [0.6, 0.3, -np.inf]], dtype=np.float32)
    ranked = [["a", None, None], ["c", "b", None]]
    result = ranked_metrics(scores, ranked, ["b", "b"], GALLERY, ks=(1, 10, 100))
    _assert(result, {"R@1": 0.0, "R@10": 50.0, "R@100": 50.0, "AP": 100 * 0.25 / 2})
    assert result["beyond_depth"] == 1


def test_queries_whose_positive_is_not_in_the_gallery_are_skipped() -> None:
    lists = [["a", "b"], ["a", "b"]]
    result = ranked_metrics(np.array([[0.9, 0.1], [0.8, 0.1]]), lists, ["a", "zz"], GALLERY, ks=(1,))
    assert result["R@1"] == 100.0 and result["queries"] == 1 and result["queries_without_match"] == 1
    none = ranked_metrics(np.array([[0.9, 0.1]]), lists[:1], ["zz"], GALLERY, ks=(1,))
    assert np.isnan(none["R@1"]) and none["queries"] == 0


def test_several_positives_average_over_the_gallery_count() -> None:
    gallery = ["x", "y", "x", "z", "x"]  # three items labelled x
    lists = [["x", "y", "x", "z"]]
    result = ranked_metrics(np.array([[0.9, 0.8, 0.7, 0.6]]), lists, ["x"], gallery, ks=(1,))
    # found x at 0 (term 1) and 2 (i=1: (1/2 + 2/3) / 2); the third x is past the list: 0
    assert result["AP"] == pytest.approx(100 * (1 + (0.5 + 2 / 3) / 2) / 3)


def test_bad_shapes_and_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="must be"):
        ranked_metrics(np.zeros((2, 3)), [["a", "b", "c"]], ["a", "b"], GALLERY)
    with pytest.raises(ValueError, match="finite"):
        ranked_metrics(np.array([[np.nan]]), [["a"]], ["a"], GALLERY)
    with pytest.raises(ValueError, match="positive"):
        ranked_metrics(np.array([[0.1]]), [["a"]], ["a"], GALLERY, ks=(0,))


@pytest.mark.parametrize("seed", range(6))
def test_exact_top_k_plus_one_equals_the_full_ranking(seed: int) -> None:
    """Oracle: exact top-(K+1) lists give retrieval_metrics' R@k for k <= K, ties and junk included."""
    rng = np.random.default_rng(seed)
    n_gallery, n_queries, depth = 40, 30, 6
    sim = rng.integers(0, 8, size=(n_queries, n_gallery)).astype(np.float32) / 8  # many ties
    gallery = [f"t{i % 35}" for i in range(n_gallery)]  # a few labels twice
    queries = [f"t{i}" for i in rng.integers(0, 38, size=n_queries)]  # t35..t37 have no positive
    order = np.argsort(-sim, axis=1, kind="stable")[:, :depth]
    ranked = np.asarray(gallery, dtype=object)[order]
    ks = (1, 2, depth - 1)
    got = ranked_metrics(np.take_along_axis(sim, order, axis=1), ranked, queries, gallery, ks=ks)
    full = retrieval_metrics(sim, queries, gallery, ks=ks)
    for name in ("R@1", "R@2", f"R@{depth - 1}", "queries", "queries_without_match"):
        assert got[name] == pytest.approx(full[name], abs=1e-9), name
    assert got["AP"] <= full["AP"] + 1e-9  # positives past the list add 0 here
    whole = np.argsort(-sim, axis=1, kind="stable")
    everything = ranked_metrics(
        np.take_along_axis(sim, whole, axis=1), np.asarray(gallery, dtype=object)[whole], queries, gallery, ks
    )
    for name, value in full.items():
        assert everything[name] == pytest.approx(value, abs=1e-9), name


def test_official_one_percent_counts_junk_in_the_gallery_size() -> None:
    """150 gallery entries of which 50 junk: officially CMC[round(1.5)] = CMC[2], on the platform rank < 1."""
    gallery = [f"t{i}" for i in range(100)] + [None] * 50
    scores = np.array([[0.9, 0.8, 0.7, 0.6]])
    ranked = [["t1", "t2", "t0", "t3"]]  # the positive t0 third
    official = ranked_metrics(scores, ranked, ["t0"], gallery, ks=(1,), one_percent="official")
    platform = ranked_metrics(scores, ranked, ["t0"], gallery, ks=(1,))
    assert official["R@1%"] == 100.0 and platform["R@1%"] == 0.0
    assert official["R@1"] == platform["R@1"] == 0.0
