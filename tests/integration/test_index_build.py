"""The index build job on a Ray-prepared world, real encoders, real FAISS, MLflow and S3."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from gleam import storage
from gleam.config import load_config
from gleam.corpus.reader import open_corpus
from gleam.index.catalog import open_index, sha256_file
from gleam.index.config import IndexBuildConfig
from gleam.index.job import build_index
from gleam.index.layout import IndexLocation
from gleam.index.publish import read_embeddings
from gleam.index.report import build_table
from gleam.model import weights
from gleam.model.embedding import embed_images
from gleam_cli.main import app
from tests.support.console import own_output
from tests.support.training import collapsed_encoder, tiny_encoder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def corpus(prepared_world) -> str:
    return prepared_world(24)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("index-encoders")
    return tiny_encoder(root / "a", 0, embed_dim=24), tiny_encoder(root / "b", 1, embed_dim=24)


@pytest.fixture(scope="module")
def collapsed(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every tile maps to nearly one vector (mean pairwise cosine ~0.9999, as in the reported demo)."""
    return collapsed_encoder(tmp_path_factory.mktemp("index-collapsed") / "c", 2, embed_dim=24)


def config(corpus: str, encoder: str, store: str, experiment: str, *extra: str) -> IndexBuildConfig:
    overrides = [
        "name=region",
        f"corpus={corpus}",
        f"encoder={encoder}",
        f"store={store}",
        f"tracking.experiment={experiment}",
        "embed.batch_size=8",
        "embed.num_cpus=0.5",
        *extra,
    ]
    return load_config(IndexBuildConfig, None, overrides)


def variant(corpus: str, root: Path) -> tuple[str, dict[str, set[str]]]:
    """The corpus a week later: 2 tiles deleted, 2 re-rendered (new bytes), 2 new ones."""
    tiles = open_corpus(corpus).read("tiles").sort_by("tile_id")
    ids = tiles["tile_id"].to_pylist()
    deleted, changed = set(ids[:2]), set(ids[2:4])
    rows = [row for row in tiles.to_pylist() if row["tile_id"] not in deleted]
    for row in rows:
        if row["tile_id"] in changed:
            row["image"] = _brighter(row["image"])
            row["sha256"] = "changed-" + row["sha256"][8:]
    added = []
    for source in tiles.to_pylist()[-2:]:
        new = {**source, "tile_id": source["tile_id"] + "-new", "image": _brighter(source["image"], 60)}
        new["sha256"] = "new-" + source["sha256"][4:]
        added.append(new["tile_id"])
        rows.append(new)
    folder = root / "prepared" / "week2"
    (folder / "tiles").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=tiles.schema), folder / "tiles" / "part-0.parquet")
    manifest = dict(open_corpus(corpus).manifest)
    manifest["files"] = {"tiles": ["part-0.parquet"], "queries": [], "rejects": []}
    storage.write_json(str(folder / "manifest.json"), manifest)
    return str(folder), {"deleted": deleted, "changed": changed, "added": set(added)}


def _brighter(jpeg: bytes, amount: int = 30) -> bytes:
    with Image.open(io.BytesIO(jpeg)) as image:
        array = np.clip(np.asarray(image.convert("RGB"), dtype=np.int16) + amount, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=92)
    return out.getvalue()


def test_a_build_publishes_a_searchable_version_with_its_record(
    corpus: str, encoders: tuple[str, str], tmp_path: Path, experiment_name: str, mlflow_client
) -> None:
    store = str(tmp_path / "store")
    result = build_index(config(corpus, encoders[0], store, experiment_name))
    assert result.status == "published"
    location = IndexLocation(store, "region")
    assert location.current() == result.version
    folder = Path(location.version_uri(result.version))
    assert {p.name for p in folder.iterdir()} == {"index.faiss", "ids.parquet", "embeddings", "meta.json"}

    meta = storage.read_json(location.file_uri(result.version, "meta.json"))
    tiles = open_corpus(corpus).read("tiles").sort_by("tile_id")
    _, _, encoder_info = weights.load(encoders[0])
    assert meta["version"] == result.version and meta["created"]
    assert meta["encoder"] == {
        "uri": encoders[0],
        "fingerprint": encoder_info.fingerprint,
        "model_name": None,
        "model_version": None,
    }
    assert (meta["dim"], meta["metric"], meta["index_key"]) == (24, "inner_product", "Flat")
    assert meta["counts"] == {"vectors": 24, "embedded": 24, "reused": 0, "trained_on": 0}
    assert meta["recall"]["value"] == 1.0 and meta["recall"]["k"] == 10
    assert meta["index_sha256"] == sha256_file(folder / "index.faiss")
    stages = {"embed", "train", "add", "validate", "calibrate", "locate", "publish", "total"}
    assert set(meta["seconds"]) == stages
    assert meta["embedding"]["actors"] == 1 and meta["embedding"]["precision"] == "fp32"
    _check_calibration(meta["calibration"], corpus, encoders[0], tiles)
    _check_location(meta, corpus, encoders[0], tiles)
    spread = meta["spread"]
    assert spread["collapsed"] is False and spread["vectors"] == 24
    assert spread["mean_cosine"] < 0.999 and spread["effective_rank"] > 2

    ids = pq.read_table(folder / "ids.parquet")
    assert ids["id"].to_pylist() == list(range(24))
    assert ids["tile_id"].to_pylist() == tiles["tile_id"].to_pylist()
    assert ids["lat"].to_pylist() == tiles["lat"].to_pylist()
    # the tiles' ground geometry travels with them (gsd_m null where the corpus does not know it)
    assert ids["width"].to_pylist() == tiles["width"].to_pylist()
    assert ids["height"].to_pylist() == tiles["height"].to_pylist()
    gsd = tiles["gsd_m"].to_pylist() if "gsd_m" in tiles.column_names else [None] * 24
    assert ids["gsd_m"].to_pylist() == gsd

    # a tile embedded again (in this process, not by the actor pool) finds itself first
    opened = open_index(store, "region", expect_fingerprint=encoder_info.fingerprint)
    encoder, spec, _ = weights.load(encoders[0])
    vectors = embed_images(encoder, spec, tiles["image"].to_pylist()[:5], "satellite", "fp32")
    scores, found = opened.search(vectors, k=3)
    assert found[:, 0].tolist() == tiles["tile_id"].to_pylist()[:5]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-4)
    first = opened.geometry(0)
    assert (first["width"], first["height"]) == (tiles["width"][0].as_py(), tiles["height"][0].as_py())
    assert first["gsd_m"] == gsd[0] and first["lat"] == tiles["lat"][0].as_py()

    shown = CliRunner().invoke(app, ["index", "show", "region", "--store", store])
    assert shown.exit_code == 0 and f'"version": "{result.version}"' in shown.output
    missing = CliRunner().invoke(app, ["index", "show", "nothing-here", "--store", store])
    assert missing.exit_code == 3 and "no published index 'nothing-here'" in missing.output

    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["built.index_key"] == "Flat" and run.data.params["built.version"] == result.version
    assert run.data.metrics["recall_at_k"] == 1.0 and run.data.metrics["vectors"] == 24
    assert run.data.tags["gleam.index.published"] == "true"
    assert {"seconds.embed", "seconds.train", "seconds.add", "index_bytes"} <= set(run.data.metrics)
    assert run.data.metrics["spread.mean_cosine"] == pytest.approx(spread["mean_cosine"])
    assert run.data.metrics["spread.collapsed"] == 0.0 and "calibration.at_chance" in run.data.metrics


def test_an_unchanged_rebuild_publishes_nothing_and_incremental_embeds_only_the_difference(
    corpus: str, encoders: tuple[str, str], tmp_path: Path, experiment_name: str
) -> None:
    store = str(tmp_path / "store")
    first = build_index(config(corpus, encoders[0], store, experiment_name, "incremental=true"))
    again = build_index(config(corpus, encoders[0], store, experiment_name, "incremental=true"))
    location = IndexLocation(store, "region")
    assert (again.status, again.version, again.run_id) == ("unchanged", first.version, None)
    assert list(location.versions()) == [first.version]

    week2, change = variant(corpus, tmp_path)
    update = build_index(config(week2, encoders[0], store, experiment_name, "incremental=true"))
    assert update.status == "published" and location.current() == update.version != first.version
    assert update.meta["counts"] == {"vectors": 24, "embedded": 4, "reused": 20, "trained_on": 0}
    opened = open_index(store, "region")
    held = set(opened.tile_ids.tolist())
    assert not held & change["deleted"] and change["added"] <= held and change["changed"] <= held

    # the incremental result equals a full rebuild of the same corpus, vector for vector
    full = build_index(config(week2, encoders[0], store, experiment_name, "name=region-full"))
    assert full.meta["counts"]["embedded"] == 24
    incremental = read_embeddings(location, update.version)
    rebuilt = read_embeddings(IndexLocation(store, "region-full"), full.version)
    assert incremental["tile_id"].to_pylist() == rebuilt["tile_id"].to_pylist()
    assert incremental["sha256"].to_pylist() == rebuilt["sha256"].to_pylist()
    a = np.stack(incremental["vector"].to_numpy(zero_copy_only=False))
    b = np.stack(rebuilt["vector"].to_numpy(zero_copy_only=False))
    assert np.allclose(a, b, atol=1e-5)

    # another encoder invalidates every vector: a full rebuild even when asked for an incremental one
    switched = build_index(config(week2, encoders[1], store, experiment_name, "incremental=true"))
    assert switched.meta["counts"]["embedded"] == 24 and switched.meta["counts"]["reused"] == 0
    assert open_index(store, "region").encoder_fingerprint == weights.load(encoders[1])[2].fingerprint


def test_an_index_below_the_recall_floor_is_not_published(
    corpus: str, encoders: tuple[str, str], tmp_path: Path, experiment_name: str
) -> None:
    store = str(tmp_path / "store")
    published = build_index(config(corpus, encoders[0], store, experiment_name))
    coarse = config(corpus, encoders[1], store, experiment_name, "index_key=PQ2x2", "recall.floor=0.99")
    path = tmp_path / "coarse.yaml"
    path.write_text(yaml.safe_dump(coarse.model_dump(mode="json", exclude={"tracking"})))
    result = CliRunner().invoke(app, ["index", "build", "-c", str(path), "--set", "tracking.enabled=false"])
    assert result.exit_code == 3, result.output
    said = " ".join(own_output(result.output).split())  # rich wraps at the terminal's width
    assert re.search(r"PQ2x2, 24 vectors\) reaches recall@10 0\.\d+ < floor 0\.99", said), said
    assert "not published" in said and "Traceback" not in said
    location = IndexLocation(store, "region")
    assert location.current() == published.version and list(location.versions()) == [published.version]
    assert not storage.exists(location.lease_uri)  # released despite the failure


def test_corpus_and_index_on_s3(
    corpus: str, encoders: tuple[str, str], s3_bucket: str, tmp_path: Path, experiment_name: str
) -> None:
    remote_corpus = f"{s3_bucket}/prepared/world"
    storage.upload_tree(storage.resolve(corpus)[1], remote_corpus)
    result = build_index(config(remote_corpus, encoders[0], s3_bucket, experiment_name))
    location = IndexLocation(s3_bucket, "region")
    assert storage.read_text(location.current_uri).strip() == result.version
    opened = open_index(s3_bucket, "region", cache_dir=tmp_path / "cache")
    assert len(opened) == 24 and (tmp_path / "cache" / "region" / result.version / "index.faiss").exists()
    assert not storage.exists(location.lease_uri)


def test_a_half_written_version_is_ignored_and_cleaned_by_the_next_build(
    corpus: str,
    encoders: tuple[str, str],
    collapsed: str,
    tmp_path: Path,
    experiment_name: str,
    mlflow_client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """...and that next build, with a collapsed encoder, is published, recorded and loudly warned about."""
    store = str(tmp_path / "store")
    good = build_index(config(corpus, encoders[0], store, experiment_name))
    location = IndexLocation(store, "region")
    # what a build killed while publishing leaves: files of a newer version, no meta.json, CURRENT unmoved
    half = "29990101T000000Z"
    for name in ("index.faiss", "ids.parquet"):
        storage.write_bytes(
            location.file_uri(half, name), storage.read_bytes(location.file_uri(good.version, name))
        )
    assert open_index(store, "region").version == good.version
    with caplog.at_level(logging.WARNING, logger="gleam"):
        rebuilt = build_index(config(corpus, collapsed, store, experiment_name))
    assert half in rebuilt.removed_versions and half not in location.versions()
    assert location.current() == rebuilt.version

    # a collapsed encoder is not refused: recorded in meta.json and MLflow, and warned about
    meta = storage.read_json(location.file_uri(rebuilt.version, "meta.json"))
    assert meta["spread"]["collapsed"] is True and meta["spread"]["mean_cosine"] > 0.999
    assert isinstance(meta["calibration"]["at_chance"], bool)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot tell places apart" in m and "collapsed" in m for m in warned), warned
    run = mlflow_client.get_run(rebuilt.run_id)
    assert run.data.metrics["spread.collapsed"] == 1.0 and run.data.metrics["spread.effective_rank"] < 2
    assert "tile embeddings have collapsed" in run.data.tags["gleam.index.warning"]
    console = Console(record=True, width=200)
    console.print(build_table(rebuilt))
    printed = console.export_text()
    assert "WARNING" in printed and "(COLLAPSED)" in printed and "cannot tell places apart" in printed


def _check_location(meta: dict, corpus: str, encoder_uri: str, tiles: pa.Table) -> None:
    """meta.json's `location`: the top-1 errors equal those computed here (each val query's top tile by
    brute force, its centre's distance to the query's own lat/lon); the radius is their conformal quantile."""
    from gleam import geo
    from gleam.corpus.schema import Modality
    from gleam.index.location import DEFAULT_COVERAGE, conformal_radius

    location = meta["location"]
    assert (location["coverage"], location["k"], location["split"]) == (DEFAULT_COVERAGE, 10, "val")
    encoder, spec, _ = weights.load(encoder_uri)
    vectors = embed_images(encoder, spec, tiles["image"].to_pylist(), Modality.SATELLITE, "fp32")
    queries = open_corpus(corpus).read("queries").filter(pc.field("split") == "val").to_pylist()
    errors = []
    for modality in sorted({q["modality"] for q in queries}):
        group = sorted((q for q in queries if q["modality"] == modality), key=lambda q: q["query_id"])
        top = (
            embed_images(encoder, spec, [q["image"] for q in group], Modality(modality)) @ vectors.T
        ).argmax(1)
        own = [
            geo.distance_m(q["lat"], q["lon"], tiles["lat"][t].as_py(), tiles["lon"][t].as_py())
            for q, t in zip(group, top, strict=True)
        ]
        assert location["by_modality"][modality]["queries"]["top1"] == len(group)
        assert location["by_modality"][modality]["median_error_m"]["top1"] == pytest.approx(np.median(own))
        errors += own
    assert location["queries"]["top1"] == len(queries) and location["left_out"] == {
        "queries_without_coordinates": 0,
        "top_tile_without_coordinates": 0,
    }
    assert location["radius_m"]["top1"] == pytest.approx(conformal_radius(errors, DEFAULT_COVERAGE))


def _check_calibration(calibration: dict, corpus: str, encoder_uri: str, tiles: pa.Table) -> None:
    """meta.json's threshold equals one computed here by brute force on the same validation queries."""
    from gleam.corpus.schema import Modality
    from gleam.explain.evidence import calibrate

    encoder, spec, _ = weights.load(encoder_uri)
    vectors = embed_images(encoder, spec, tiles["image"].to_pylist(), Modality.SATELLITE, "fp32")
    tile_ids = tiles["tile_id"].to_pylist()
    queries = open_corpus(corpus).read("queries").filter(pc.field("split") == "val").to_pylist()
    assert calibration["split"] == "val" and calibration["queries"] == len(queries) > 0
    assert set(calibration["by_modality"]) == {q["modality"] for q in queries}
    for modality, own in calibration["by_modality"].items():
        group = [q for q in queries if q["modality"] == modality]
        embedded = embed_images(encoder, spec, [q["image"] for q in group], Modality(modality))
        sims = embedded @ vectors.T
        mine = np.array([tile_ids.index(q["tile_id"]) for q in group])
        positive = sims[np.arange(len(group)), mine]
        sims[np.arange(len(group)), mine] = -np.inf
        expected = calibrate(positive, sims.max(axis=1))
        assert own["queries"] == len(group)
        assert own["accuracy"] == pytest.approx(expected.accuracy)
        # the stored threshold splits these scores as well as the best one does (ties may pick another)
        negative = sims.max(axis=1)
        at_stored = ((positive >= own["threshold"]).mean() + (negative < own["threshold"]).mean()) / 2
        assert at_stored == pytest.approx(expected.accuracy, abs=1e-6)
