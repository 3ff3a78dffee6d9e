"""Real pixels from S3: the University-1652 and CVACT samples, uploaded to the test S3 server."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from gleam import storage
from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.corpus.prepare import prepare
from gleam.corpus.reader import open_corpus
from tests.support.paths import shared_dataset

pytestmark = pytest.mark.integration


def upload_places(root: Path, uri: str, places: set[str]) -> int:
    """Upload the files of `places` only, in the dataset's own layout (<split>/<view>/<place>/<file>)."""
    count = 0
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and len(relative.parts) == 4 and relative.parts[2] in places:
            storage.write_bytes(storage.join(uri, relative.as_posix()), path.read_bytes())
            count += 1
    return count


def test_university1652_from_s3(ray_cluster, s3_bucket: str, experiment_name: str, mlflow_client) -> None:
    """24 places of the sample (16 train, 8 test) in the native layout on S3: prepared where they lie. The
    whole sample's layout is read locally by the source tests; this is about the s3:// path."""
    local = shared_dataset("university1652-mini")
    train = sorted(p.name for p in (local / "train" / "satellite").iterdir())[:16]
    test = sorted(p.name for p in (local / "test" / "gallery_satellite").iterdir())[:8]
    raw = f"{s3_bucket}/raw/University-1652"
    # one file per view: four views of a train place, six of a test place, all uploaded (used or not)
    assert upload_places(local, raw, set(train) | set(test)) == 16 * 4 + 8 * 6
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
    # a tile and a drone view per place; ground: street + google views in train, the street query in test
    assert manifest["counts"] == {
        "tiles": 24,
        "queries": {"drone": 24, "ground": 2 * 16 + 8},
        "rejects": {},
        "listed": 24 + 24 + 40,
        "accepted": 88,
        "rejected": 0,
    }
    assert manifest["splits"] == {
        "tiles": {"test": 8, "train": 16},
        "queries": {"drone": {"test": 8, "train": 16}, "ground": {"test": 8, "train": 32}},
    }
    assert storage.read_json(storage.join(result.corpus_uri, "manifest.json"))["counts"] == manifest["counts"]

    corpus = open_corpus(result.corpus_uri)
    queries = corpus.read("queries", ["query_id", "modality", "image", "tile_id", "split"]).to_pylist()
    tiles = {r["tile_id"]: r for r in corpus.read("tiles", ["tile_id", "image", "split"]).to_pylist()}
    sizes = {"drone": (80, 80), "ground": (64, 96)}
    for row in queries[::7]:
        assert Image.open(BytesIO(row["image"])).size == sizes[row["modality"]]
        assert tiles[row["tile_id"]]["split"] == row["split"]  # a place never straddles splits
    for tile in list(tiles.values())[::5]:
        assert Image.open(BytesIO(tile["image"])).size == (96, 96)

    runs = mlflow_client.search_runs([mlflow_client.get_experiment_by_name(experiment_name).experiment_id])
    assert runs[0].data.metrics["listed"] == 88
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
