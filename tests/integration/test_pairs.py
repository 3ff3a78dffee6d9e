"""Training pairs: every query of a split joined with its tile's pixels, per modality."""

from __future__ import annotations

from pathlib import Path

import pytest

from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.corpus.prepare import prepare
from gleam.corpus.reader import open_corpus
from gleam.training.pairs import PAIR_COLUMNS, pair_datasets
from tests.support.corpora import bad_input_corpus

pytestmark = pytest.mark.integration


def test_pairs_join_every_query_with_its_tile(ray_cluster, tmp_path: Path, experiment_name: str) -> None:
    raw, _ = bad_input_corpus(tmp_path / "raw")
    config = load_config(
        PrepareConfig,
        None,
        [
            "name=pairs",
            f"output={tmp_path / 'out'}",
            "sources.0.kind=manifest",
            f"sources.0.uri={raw.write_manifest()}",
            "split.test_fraction=0.0",
            "split.val_fraction=0.0",
            f"tracking.experiment={experiment_name}",
        ],
    )
    corpus = open_corpus(prepare(config).corpus_uri)
    tiles = {r["tile_id"]: r["image"] for r in corpus.read("tiles", ["tile_id", "image"]).to_pylist()}
    queries = {r["query_id"]: r for r in corpus.read("queries").to_pylist()}
    modalities = sorted(corpus.manifest["counts"]["queries"])

    datasets = pair_datasets(corpus, "train", modalities, partitions=2)
    for modality in modalities:
        rows = datasets[modality].take_all()
        assert len(rows) == corpus.manifest["counts"]["queries"][modality]
        for row in rows:
            assert set(row) == set(PAIR_COLUMNS) and row["modality"] == modality
            assert row["query_image"] == queries[row["query_id"]]["image"]
            assert row["tile_image"] == tiles[queries[row["query_id"]]["tile_id"]]
    assert pair_datasets(corpus, "test", ["drone"], partitions=2)["drone"].count() == 0
    with pytest.raises(ValueError, match="no satellite queries"):
        pair_datasets(corpus, "train", ["satellite"])
