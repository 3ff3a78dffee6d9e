"""Sets scored as sets: one fused query per set_id, per fusion method, against an exact search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gleam.corpus.reader import PreparedCorpus, open_corpus
from gleam.corpus.schema import SET_ID, SET_ID_FIELD, Modality
from gleam.evaluation.sets import (
    SETS,
    exact_scorer,
    fuse_sets,
    group_sets,
    list_scorer,
    modality_set_metrics,
    set_label,
    set_metrics,
)
from gleam.model.embedding import Embedded
from gleam.retrieval.search import exact_search, flat_index

D = 16


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def world() -> tuple[np.ndarray, list[str], np.ndarray, list[str], list[str], list[str | None]]:
    """8 orthogonal tiles; 4 sets of 3 photos that show their tile faintly (each with its own clutter),
    where sets B and D hold a clear photo of another place, which wins their plain mean; one single photo."""
    tiles = np.eye(8, D, dtype=np.float32)
    tile_ids = [f"t{i}" for i in range(8)]
    rows, labels, set_ids = [], [], []

    def photo(tile: int, set_id: str | None, clutter: int | None = None) -> None:
        noise = np.zeros(D) if clutter is None else 0.92 * np.eye(1, D, 8 + clutter)[0]
        rows.append((0.4 if clutter is not None else 1.0) * tiles[tile] + noise)
        labels.append(f"t{tile}")
        set_ids.append(set_id)

    for n, (place, odd) in enumerate([(0, None), (1, 5), (2, None), (3, 6)]):
        set_id = "ABCD"[n]
        photo(place, set_id, 0)
        photo(place, set_id, 1)
        if odd is None:
            photo(place, set_id, 2)
        else:  # the outlier: a clear photo of tile `odd`
            photo(odd, set_id)
    photo(7, None)
    return tiles, tile_ids, unit(np.stack(rows)), labels, [f"q{i:02d}" for i in range(len(rows))], set_ids


def test_groups_skip_single_photos_and_labels_follow_the_majority() -> None:
    assert group_sets(["b", None, "a", "b"]) == {"a": [2], "b": [0, 3]}
    assert set_label(["t1", "t5", "t1"]) == "t1"
    assert set_label(["t5", "t1"]) == "t5"  # a tie: the first photo's tile


def test_fused_sets_are_unit_vectors_in_set_order() -> None:
    _, _, vectors, labels, _, set_ids = world()
    fused = fuse_sets(vectors, labels, set_ids, "agreement")
    assert fused.set_ids == ["A", "B", "C", "D"]
    assert fused.labels == ["t0", "t1", "t2", "t3"]
    assert fused.members[1] == [3, 4, 5]
    np.testing.assert_allclose(np.linalg.norm(fused.vectors, axis=1), 1.0, atol=1e-5)
    assert int(np.argmin(fused.weights[1])) == 2  # set B's outlier counts least


def test_agreement_finds_the_places_the_mean_loses_to_an_outlier() -> None:
    tiles, tile_ids, vectors, labels, _, set_ids = world()
    index = flat_index(tiles)
    exact = set_metrics(exact_scorer(index, tile_ids, ks=(1,)), vectors, labels, set_ids)
    through_lists = set_metrics(
        list_scorer(exact_search(index, tile_ids), tile_ids, 3, ks=(1,)), vectors, labels, set_ids
    )
    for result in (exact, through_lists):
        assert result is not None
        assert result[SETS] == 4
        assert result["mean"]["queries"] == 4
        assert result["mean"]["R@1"] == pytest.approx(50.0)  # B and D go to their outlier's tile
        assert result["agreement"]["R@1"] == pytest.approx(100.0)


def test_no_sets_means_no_set_metrics() -> None:
    tiles, tile_ids, vectors, labels, _, _ = world()
    score = exact_scorer(flat_index(tiles), tile_ids)
    assert set_metrics(score, vectors, labels, [None] * len(labels)) is None


def _corpus(root: Path, query_ids: list[str], set_ids: list[str | None] | None) -> PreparedCorpus:
    """A queries part holding only the columns read here (the reader checks no more than that)."""
    n = len(query_ids)
    columns = {"query_id": query_ids, "modality": ["streetmap"] * n, "split": ["test"] * n}
    fields = [pa.field(name, pa.string()) for name in columns]
    if set_ids is not None:
        columns[SET_ID] = set_ids
        fields.append(SET_ID_FIELD)
    (root / "queries").mkdir(parents=True)
    pq.write_table(pa.table(columns, schema=pa.schema(fields)), root / "queries" / "part-0.parquet")
    files = {"tiles": [], "queries": ["part-0.parquet"], "rejects": []}
    (root / "manifest.json").write_text(json.dumps({"files": files}))
    return open_corpus(str(root))


def test_a_modality_of_a_corpus_is_scored_by_its_set_ids(tmp_path: Path) -> None:
    tiles, tile_ids, vectors, labels, query_ids, set_ids = world()
    corpus = _corpus(tmp_path, query_ids, set_ids)
    queries = Embedded(query_ids, labels, vectors)
    score = exact_scorer(flat_index(tiles), tile_ids)
    result = modality_set_metrics(corpus, "test", Modality.STREETMAP, queries, score)
    assert result is not None and result[SETS] == 4
    assert result["agreement"]["R@1"] > result["mean"]["R@1"]


def test_a_corpus_without_sets_or_prepared_before_them_has_none(tmp_path: Path) -> None:
    tiles, tile_ids, vectors, labels, query_ids, _ = world()
    queries = Embedded(query_ids, labels, vectors)
    for n, set_ids in enumerate([None, [None] * len(query_ids)]):
        corpus = _corpus(tmp_path / str(n), query_ids, set_ids)
        score = exact_scorer(flat_index(tiles), tile_ids)
        assert modality_set_metrics(corpus, "test", Modality.STREETMAP, queries, score) is None
