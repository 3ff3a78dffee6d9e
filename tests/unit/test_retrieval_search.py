"""Exact FAISS search and the metrics computed from it (gleam.retrieval.search), on real FAISS indexes."""

from __future__ import annotations

import numpy as np
import pytest

from gleam.retrieval import search
from gleam.retrieval.metrics import retrieval_metrics
from gleam.retrieval.search import exact_search, flat_index, list_metrics, search_metrics


def _case(seed: int = 0, gallery_size: int = 40, queries: int = 23, dim: int = 8):
    """Unit gallery vectors and noisy unit queries near their positives, so ranking matters."""
    rng = np.random.default_rng(seed)
    gallery = rng.normal(size=(gallery_size, dim)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    labels = [f"t{i % gallery_size}" for i in range(queries)]
    noise = rng.normal(scale=0.6, size=(queries, dim)).astype(np.float32)
    vectors = gallery[[i % gallery_size for i in range(queries)]] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return gallery, [f"t{i}" for i in range(gallery_size)], vectors, labels


def test_chunked_search_gives_the_metrics_of_one_dense_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    """The FAISS path that feeds the metrics equals numpy's q @ g.T, however the queries are chunked."""
    gallery, gallery_ids, vectors, labels = _case()
    expected = retrieval_metrics(vectors @ gallery.T, labels, gallery_ids)
    index = flat_index(gallery)
    monkeypatch.setattr(search, "SIMILARITY_BUDGET", 40 * 5)  # chunks of 5 queries
    got = search_metrics(index, vectors, labels, gallery_ids, (1, 5, 10))
    assert 0 < expected["R@1"] < 100  # a case where ranking matters
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_exact_top_lists_one_past_the_deepest_rank_give_the_full_ranking_recall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """list_metrics over exact top-(K+1) lists, chunked, equals the dense R@k for every k <= K."""
    gallery, gallery_ids, vectors, labels = _case(seed=1)
    index = flat_index(gallery)
    dense = search_metrics(index, vectors, labels, gallery_ids, (1, 5, 10))
    monkeypatch.setattr(search, "RESULT_BUDGET", 11 * 4)  # chunks of 4 queries
    listed = list_metrics(exact_search(index, gallery_ids), vectors, labels, gallery_ids, (1, 5, 10), 11)
    assert 0 < dense["R@1"] < dense["R@10"] < 100
    for name in ("R@1", "R@5", "R@10", "queries"):
        assert listed[name] == pytest.approx(dense[name], abs=1e-9), name


def test_exact_search_returns_gallery_ids_and_marks_empty_slots() -> None:
    """Asking for more results than the gallery holds leaves None ids with -inf scores, best first."""
    gallery, gallery_ids, vectors, _ = _case(gallery_size=3, queries=2)
    scores, ids = exact_search(flat_index(gallery), gallery_ids)(vectors, 5)
    assert ids.shape == scores.shape == (2, 5)
    assert all(set(row[:3]) == set(gallery_ids) for row in ids.tolist())
    assert ids[:, 3:].tolist() == [[None, None], [None, None]]
    assert np.isneginf(scores[:, 3:]).all() and (np.diff(scores[:, :3], axis=1) <= 0).all()
    assert scores[:, 0] == pytest.approx((vectors @ gallery.T).max(axis=1), abs=1e-6)


def test_the_one_percent_convention_reaches_both_scorers() -> None:
    """search_metrics and list_metrics hand `one_percent` on: 150 tiles, official index 2 against rank 2."""
    gallery, gallery_ids, vectors, labels = _case(seed=2, gallery_size=150, queries=60)
    index = flat_index(gallery)
    sim = vectors @ gallery.T
    for convention in ("platform", "official"):
        expected = retrieval_metrics(sim, labels, gallery_ids, (1,), one_percent=convention)
        dense = search_metrics(index, vectors, labels, gallery_ids, (1,), one_percent=convention)
        search_fn = exact_search(index, gallery_ids)
        listed = list_metrics(search_fn, vectors, labels, gallery_ids, (1,), 4, convention)
        assert dense["R@1%"] == pytest.approx(expected["R@1%"]) == pytest.approx(listed["R@1%"])
    official = search_metrics(index, vectors, labels, gallery_ids, (1,), one_percent="official")
    platform = search_metrics(index, vectors, labels, gallery_ids, (1,))
    assert official["R@1%"] > platform["R@1%"]  # a case where the two conventions differ


def test_semi_positives_reach_both_scorers_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each chunk gets its own queries' semi-positives: chunked hit rate equals the one dense matrix's."""
    gallery, gallery_ids, vectors, labels = _case(seed=3)
    semi = [[gallery_ids[(i + 1) % 40], gallery_ids[(i + 7) % 40]] for i in range(len(labels))]
    expected = retrieval_metrics(vectors @ gallery.T, labels, gallery_ids, (1,), semi_positives=semi)
    index = flat_index(gallery)
    monkeypatch.setattr(search, "SIMILARITY_BUDGET", 40 * 5)  # chunks of 5 queries
    monkeypatch.setattr(search, "RESULT_BUDGET", 3 * 4)  # chunks of 4 queries
    dense = search_metrics(index, vectors, labels, gallery_ids, (1,), semi_positives=semi)
    listed = list_metrics(
        exact_search(index, gallery_ids), vectors, labels, gallery_ids, (1,), 3, "platform", semi
    )
    assert dense["hit_rate"] == pytest.approx(expected["hit_rate"]) == pytest.approx(listed["hit_rate"])
    assert "hit_rate" not in search_metrics(index, vectors, labels, gallery_ids, (1,))
