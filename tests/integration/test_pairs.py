"""Training pairs: every query of a split joined with its tile's pixels, per modality."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gleam.corpus.reader import open_corpus
from gleam.training.pairs import PAIR_COLUMNS, pair_datasets

pytestmark = pytest.mark.integration


def test_pairs_join_every_query_with_its_tile(prepared_world: Callable[[int], str]) -> None:
    corpus = open_corpus(prepared_world(24))  # shared with the training and index tests: only read
    tiles = {r["tile_id"]: r["image"] for r in corpus.read("tiles", ["tile_id", "image"]).to_pylist()}
    queries = {r["query_id"]: r for r in corpus.read("queries").to_pylist()}
    modalities = sorted(corpus.manifest["counts"]["queries"])
    assert len(modalities) >= 2

    for split in ("train", "test"):
        datasets = pair_datasets(corpus, split, modalities, partitions=2)
        for modality in modalities:
            expected = {q for q, r in queries.items() if r["modality"] == modality and r["split"] == split}
            rows = datasets[modality].take_all()
            assert sorted(row["query_id"] for row in rows) == sorted(expected), (split, modality)
            for row in rows:
                assert set(row) == set(PAIR_COLUMNS) and row["modality"] == modality
                assert row["query_image"] == queries[row["query_id"]]["image"]
                assert row["tile_image"] == tiles[queries[row["query_id"]]["tile_id"]]
    with pytest.raises(ValueError, match="no satellite queries"):
        pair_datasets(corpus, "train", ["satellite"])
