"""VIGOR's hit rate: top-1 is the positive or a semi-positive; hand-worked, and dense vs ranked lists."""

from __future__ import annotations

import numpy as np
import pytest

from gleam.retrieval.metrics import ranked_metrics, retrieval_metrics

GALLERY = ["a", "b", "c", "d", "e"]
# rows: queries; columns: GALLERY
SIM = np.array(
    [
        [0.8, 0.9, 0.1, 0.2, 0.0],  # positive a, semi b: b is top-1 -> hit, R@1 miss
        [0.1, 0.2, 0.3, 0.9, 0.0],  # positive c, semi b: d is top-1 -> miss, R@1 miss
        [0.1, 0.2, 0.3, 0.9, 0.0],  # positive d, semi a: d is top-1 -> hit, R@1 hit
        [0.1, 0.9, 0.9, 0.2, 0.0],  # positive a, semi b: b ties with c at the top -> miss (pessimistic)
        [0.9, 0.1, 0.1, 0.1, 0.0],  # positive zz (not in the gallery): skipped by both
    ]
)
LABELS = ["a", "c", "d", "a", "zz"]
SEMI = [["b"], ["b"], ["a"], ["b", "e"], ["a"]]


def test_hit_rate_accepts_semi_positives_where_r_at_1_does_not() -> None:
    result = retrieval_metrics(SIM, LABELS, GALLERY, ks=(1,), semi_positives=SEMI)
    assert result["R@1"] == pytest.approx(25.0)  # query 2 of the 4 evaluated
    assert result["hit_rate"] == pytest.approx(50.0)  # queries 0 and 2
    assert result["queries"] == 4 and result["queries_without_match"] == 1


def test_no_semi_positives_no_hit_rate_key() -> None:
    assert "hit_rate" not in retrieval_metrics(SIM, LABELS, GALLERY, ks=(1,))
    assert "hit_rate" not in ranked_metrics(SIM[:, :2], [["a", "b"]] * 5, LABELS, GALLERY, ks=(1,))


def test_empty_or_unknown_semi_positives_make_hit_rate_r_at_1() -> None:
    semi = [[], ["nowhere"], None, [None], []]
    result = retrieval_metrics(SIM, LABELS, GALLERY, ks=(1,), semi_positives=semi)
    assert result["hit_rate"] == result["R@1"]


def test_integer_labels_and_chunks_give_the_same_hit_rate() -> None:
    codes = {name: i for i, name in enumerate([*GALLERY, "zz"])}
    semi = [[codes[v] for v in row] for row in SEMI]
    as_ints = retrieval_metrics(
        SIM, [codes[v] for v in LABELS], list(range(5)), ks=(1,), chunk_size=2, semi_positives=semi
    )
    assert as_ints["hit_rate"] == pytest.approx(50.0)


def test_ranked_lists_give_the_dense_hit_rate() -> None:
    """Exact top-(1+1) lists (one past top-1) settle the same hits, the tie of query 3 included."""
    order = np.argsort(-SIM, axis=1, kind="stable")[:, :2]
    ranked = np.asarray(GALLERY, dtype=object)[order].tolist()
    scores = np.take_along_axis(SIM, order, axis=1)
    listed = ranked_metrics(scores, ranked, LABELS, GALLERY, ks=(1,), semi_positives=SEMI)
    dense = retrieval_metrics(SIM, LABELS, GALLERY, ks=(1,), semi_positives=SEMI)
    assert listed["hit_rate"] == pytest.approx(dense["hit_rate"]) == pytest.approx(50.0)
    assert listed["R@1"] == pytest.approx(dense["R@1"])


def test_a_semi_positive_tied_with_the_end_of_a_cut_list_is_not_a_hit() -> None:
    """A one-item list cut from a larger gallery: its item may tie with what was left out."""
    result = ranked_metrics(np.array([[0.5]]), [["b"]], ["a"], GALLERY, ks=(1,), semi_positives=[["b"]])
    assert result["hit_rate"] == 0.0
    whole = ranked_metrics(np.array([[0.5, 0.1]]), [["b", "a"]], ["a"], ["a", "b"], semi_positives=[["b"]])
    assert whole["hit_rate"] == 100.0  # the list is the whole gallery


def test_one_semi_positive_list_per_query() -> None:
    with pytest.raises(ValueError, match="semi-positive lists"):
        retrieval_metrics(SIM, LABELS, GALLERY, semi_positives=SEMI[:2])
    with pytest.raises(ValueError, match="semi-positive lists"):
        ranked_metrics(SIM[:, :2], [["a", "b"]] * 5, LABELS, GALLERY, semi_positives=SEMI[:2])
