"""The prepare job on a real local Ray cluster: bad input, counts, re-runs and crash recovery."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gleam import storage
from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.corpus.prepare import CorpusExistsError, prepare
from gleam.corpus.reader import open_corpus
from tests.support.corpora import bad_input_corpus

pytestmark = pytest.mark.integration

SIZES = ["sizes.satellite=[64,64]", "sizes.drone=[48,48]", "sizes.ground=[48,40]", "sizes.panorama=[96,48]"]


def config_for(manifest: Path | str, output: str, experiment: str, *extra: str) -> PrepareConfig:
    return load_config(
        PrepareConfig,
        None,
        [
            "name=bad",
            f"output={output}",
            "sources.0.kind=manifest",
            f"sources.0.uri={manifest}",
            "batch_size=4",
            "rows_per_shard=10",
            f"tracking.experiment={experiment}",
            *SIZES,
            *extra,
        ],
    )


def outcomes(corpus_uri: str) -> dict[str, str | None]:
    corpus = open_corpus(corpus_uri)
    result: dict[str, str | None] = {}
    for part in ("tiles", "queries"):
        for uri in corpus.read(part, ["source_uri"])["source_uri"].to_pylist():
            result[storage.basename(uri)] = None
    for row in corpus.read("rejects").to_pylist():
        result[storage.basename(row["source_uri"])] = row["reason"]
    return result


@pytest.fixture
def bad_corpus(tmp_path: Path) -> tuple[Path, dict[str, str | None]]:
    corpus, expected = bad_input_corpus(tmp_path / "raw")
    return corpus.write_manifest(), expected


def with_geometry(manifest: Path, gsd_m: dict[str, str], set_ids: dict[str, str]) -> Path:
    """The manifest with the optional gsd_m (by tile file, on its first row) and set_id (by query file)."""
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    seen: set[str] = set()
    for row in rows:
        tile, query = Path(row["tile_uri"]).name, Path(row["query_uri"]).name
        row["gsd_m"] = gsd_m.get(tile, "") if tile not in seen else ""
        row["set_id"] = set_ids.get(query, "")
        seen.add(tile)
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_every_bad_input_is_quarantined_with_its_reason(
    ray_cluster, bad_corpus, tmp_path: Path, experiment_name: str, mlflow_client
) -> None:
    manifest_path, expected = bad_corpus
    # tiles are 80 x 80 px files prepared at 64 x 64: t1's 0.25 m/px becomes 0.3125 m/px
    with_geometry(manifest_path, {"t1.jpg": "0.25"}, {"ok.jpg": "walk", "cmyk.jpg": "walk"})
    config = config_for(manifest_path, str(tmp_path / "out"), experiment_name)
    result = prepare(config)
    counts = result.manifest["counts"]

    assert outcomes(result.corpus_uri) == expected
    assert counts["accepted"] + counts["rejected"] == counts["listed"] == len(expected)
    assert counts["tiles"] == 4
    assert counts["queries"] == {"drone": 3, "ground": 3, "panorama": 1, "streetmap": 1}
    assert sum(counts["rejects"].values()) == sum(1 for v in expected.values() if v)

    corpus = open_corpus(result.corpus_uri)
    queries = {storage.basename(r["source_uri"]): r for r in corpus.read("queries").to_pylist()}
    tiles = {r["tile_id"]: r for r in corpus.read("tiles").to_pylist()}
    # the query of the duplicate tile now points at the kept copy, which exists
    assert queries["to_dup_tile.jpg"]["tile_id"] in tiles
    assert storage.basename(tiles[queries["to_dup_tile.jpg"]["tile_id"]]["source_uri"]) == "t1.jpg"
    for row in queries.values():
        assert row["tile_id"] in tiles
        assert row["split"] in {"train", "val", "test"}
    # images decode at the configured size per modality
    from io import BytesIO

    from PIL import Image

    wanted = {"drone": (48, 48), "ground": (48, 40), "panorama": (96, 48), "streetmap": (384, 384)}
    for row in queries.values():
        image = Image.open(BytesIO(row["image"]))
        assert image.mode == "RGB" and image.size == wanted[row["modality"]] == (row["width"], row["height"])
    for row in tiles.values():
        assert Image.open(BytesIO(row["image"])).size == (64, 64)
    # tile geometry and sets: gsd_m scaled by the resize, set_id carried, null where the manifest is empty
    assert {storage.basename(t["source_uri"]): t["gsd_m"] for t in tiles.values()} == {
        "t1.jpg": 0.3125,
        "t2.jpg": None,
        "t3.jpg": None,
        "t4.jpg": None,
    }
    assert {name: q["set_id"] for name, q in queries.items() if q["set_id"]} == {
        "ok.jpg": "manifest_walk",
        "cmyk.jpg": "manifest_walk",
    }

    run = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name(experiment_name).experiment_id], max_results=5
    )
    assert len(run) == 1
    metrics = run[0].data.metrics
    assert metrics["listed"] == len(expected) and metrics["rejects.decode_error"] == 3
    artifacts = {a.path for a in mlflow_client.list_artifacts(run[0].info.run_id, "contact_sheets")}
    assert "contact_sheets/drone.png" in artifacts


def test_rerun_is_a_no_op_and_a_changed_config_is_refused(
    ray_cluster, bad_corpus, tmp_path: Path, experiment_name: str
) -> None:
    manifest_path, _ = bad_corpus
    config = config_for(manifest_path, str(tmp_path / "out"), experiment_name)
    first = prepare(config)
    again = prepare(config_for(manifest_path, str(tmp_path / "out"), experiment_name, "batch_size=2"))
    assert again.skipped and again.manifest == first.manifest

    changed = config_for(manifest_path, str(tmp_path / "out"), experiment_name, "limits.jpeg_quality=70")
    with pytest.raises(CorpusExistsError, match="overwrite"):
        prepare(changed)
    replaced = prepare(changed.model_copy(update={"overwrite": True}))
    assert not replaced.skipped and replaced.manifest["counts"] == first.manifest["counts"]


def test_rerun_after_a_crash_has_no_duplicates(
    ray_cluster, bad_corpus, tmp_path: Path, experiment_name: str
) -> None:
    manifest_path, expected = bad_corpus
    config = config_for(manifest_path, str(tmp_path / "out"), experiment_name)
    reference = prepare(config)
    corpus_dir = Path(reference.corpus_uri)
    # What a crash before publishing leaves: no manifest, half-written parts, a work area.
    (corpus_dir / "manifest.json").unlink()
    for part in ("tiles", "queries", "_work"):
        (corpus_dir / part).mkdir(exist_ok=True)
        pq.write_table(
            pq.read_table(next((corpus_dir / "tiles").glob("*.parquet"))), corpus_dir / part / "stale.parquet"
        )

    rerun = prepare(config)
    assert not rerun.skipped
    assert rerun.manifest["counts"] == reference.manifest["counts"]
    assert outcomes(rerun.corpus_uri) == expected
    on_disk = sorted(p.name for p in (corpus_dir / "tiles").glob("*.parquet"))
    assert on_disk == rerun.manifest["files"]["tiles"] and "stale.parquet" not in on_disk
    assert not (corpus_dir / "_work").exists()
    tile_ids = open_corpus(rerun.corpus_uri).read("tiles", ["tile_id"])["tile_id"].to_pylist()
    assert len(tile_ids) == len(set(tile_ids)) == 4


def test_reader_refuses_an_unfinished_corpus(tmp_path: Path) -> None:
    from gleam.corpus.reader import CorpusNotReady

    (tmp_path / "c" / "tiles").mkdir(parents=True)
    with pytest.raises(CorpusNotReady, match=r"manifest\.json"):
        open_corpus(str(tmp_path / "c"))


def test_manifest_contract(ray_cluster, bad_corpus, tmp_path: Path, experiment_name: str) -> None:
    manifest_path, _ = bad_corpus
    result = prepare(config_for(manifest_path, str(tmp_path / "out"), experiment_name))
    on_disk = json.loads((Path(result.corpus_uri) / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(result.manifest))
    for key in ("schema_version", "name", "counts", "config_hash", "package_version", "created_at"):
        assert key in on_disk
    assert set(on_disk["counts"]) >= {"tiles", "queries", "rejects", "listed"}
    for part in ("tiles", "queries", "rejects"):
        assert on_disk["files"][part], part
        assert all((Path(result.corpus_uri) / part / name).is_file() for name in on_disk["files"][part])
