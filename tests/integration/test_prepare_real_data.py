"""Real pixels from S3: the University-1652 and CVACT samples, uploaded to the test S3 server."""

from __future__ import annotations

from io import BytesIO

import pytest
from PIL import Image

from gleam import storage
from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.corpus.prepare import prepare
from gleam.corpus.reader import open_corpus
from tests.support.paths import shared_dataset

pytestmark = pytest.mark.integration


def test_university1652_from_s3(ray_cluster, s3_bucket: str, experiment_name: str, mlflow_client) -> None:
    raw = f"{s3_bucket}/raw/University-1652"
    uploaded = storage.upload_tree(shared_dataset("university1652-mini"), raw)
    assert uploaded >= 1760
    config = load_config(
        PrepareConfig,
        None,
        [
            "name=u1652-mini",
            f"output={s3_bucket}/prepared",
            "sources.0.kind=university1652",
            f"sources.0.uri={raw}",
            "sizes.satellite=[96,96]",
            "sizes.drone=[80,80]",
            "sizes.ground=[64,96]",
            f"tracking.experiment={experiment_name}",
        ],
    )
    result = prepare(config)
    assert result.corpus_uri == f"{s3_bucket}/prepared/u1652-mini"
    manifest = result.manifest
    assert manifest["counts"] == {
        "tiles": 400,
        "queries": {"drone": 400, "ground": 720},
        "rejects": {},
        "listed": 1520,
        "accepted": 1520,
        "rejected": 0,
    }
    assert manifest["splits"] == {
        "tiles": {"test": 80, "train": 320},
        "queries": {"drone": {"test": 80, "train": 320}, "ground": {"test": 80, "train": 640}},
    }
    assert storage.read_json(storage.join(result.corpus_uri, "manifest.json"))["counts"] == manifest["counts"]

    corpus = open_corpus(result.corpus_uri)
    queries = corpus.read("queries", ["query_id", "modality", "image", "tile_id", "split"]).to_pylist()
    tiles = {r["tile_id"]: r for r in corpus.read("tiles", ["tile_id", "image", "split"]).to_pylist()}
    sizes = {"drone": (80, 80), "ground": (64, 96)}
    for row in queries[::37]:
        assert Image.open(BytesIO(row["image"])).size == sizes[row["modality"]]
        assert tiles[row["tile_id"]]["split"] == row["split"]  # a place never straddles splits
    for tile in list(tiles.values())[::41]:
        assert Image.open(BytesIO(tile["image"])).size == (96, 96)

    runs = mlflow_client.search_runs([mlflow_client.get_experiment_by_name(experiment_name).experiment_id])
    assert runs[0].data.metrics["listed"] == 1520
    assert runs[0].data.tags["gleam.corpus_uri"] == result.corpus_uri


def test_cvact_sample_locally(ray_cluster, tmp_path, experiment_name: str) -> None:
    config = load_config(
        PrepareConfig,
        None,
        [
            "name=cvact-mini",
            f"output={tmp_path}",
            "sources.0.kind=cvact",
            f"sources.0.uri={shared_dataset('cvact-mini')}",
            "sizes.panorama=[128,64]",
            "sizes.satellite=[64,64]",
            f"tracking.experiment={experiment_name}",
        ],
    )
    counts = prepare(config).manifest["counts"]
    assert counts["tiles"] == 12 and counts["queries"] == {"panorama": 12} and counts["rejected"] == 0
