"""Evaluation through a published index (Flat and a forced IVF) next to exact search, on real Ray/MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.corpus.prepare import prepare
from gleam.corpus.reader import open_corpus
from gleam.corpus.schema import Modality
from gleam.corpus.world import WorldConfig, generate_world
from gleam.evaluation.config import EvaluateConfig
from gleam.evaluation.evaluate import evaluate
from gleam.index.catalog import EncoderMismatchError, open_index
from gleam.index.config import IndexBuildConfig
from gleam.index.job import build_index
from gleam.model import weights
from gleam.model.embedding import embed_images
from gleam.retrieval.metrics import one_percent_rank, retrieval_metrics
from gleam_cli.main import app
from tests.support.console import own_output
from tests.support.training import tiny_encoder

pytestmark = pytest.mark.integration

SIZES = [f"sizes.{m}=[64,64]" for m in ("satellite", "drone", "streetmap", "ground")] + [
    "sizes.panorama=[128,64]"
]
MODALITIES = ("drone", "ground", "panorama", "streetmap")


@pytest.fixture(scope="module")
def corpus(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """14 places + 4 distractor tiles at 64 px; about half of the places in the test split."""
    root = tmp_path_factory.mktemp("eval-index-world")
    generate_world(
        WorldConfig(
            output=str(root / "raw"), locations=14, distractors=4, tile_size=64, query_size=64, seed=7
        )
    )
    overrides = [
        "name=world",
        f"output={root / 'prepared'}",
        "sources.0.kind=world",
        f"sources.0.uri={root / 'raw'}",
        "batch_size=16",
        "tracking.enabled=false",
        "split.test_fraction=0.5",
        "split.val_fraction=0",
        *SIZES,
    ]
    return prepare(load_config(PrepareConfig, None, overrides)).corpus_uri


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("eval-index-encoders")
    return tiny_encoder(root / "a", 0, embed_dim=32), tiny_encoder(root / "b", 1, embed_dim=32)


@pytest.fixture(scope="module")
def store(corpus: str, encoders: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two indexes of every tile with encoder a: `flat` (chosen by size) and `ivf` (forced, nprobe 1)."""
    root = str(tmp_path_factory.mktemp("eval-index-store"))
    common = {"corpus": corpus, "encoder": encoders[0], "store": root, "tracking": {"enabled": False}}
    common["embed"] = {"batch_size": 16, "actors": 1, "num_cpus": 0.5}
    assert build_index(IndexBuildConfig(name="flat", **common)).meta["index_key"] == "Flat"
    ivf = build_index(IndexBuildConfig(name="ivf", index_key="IVF4,Flat", recall={"floor": 0.0}, **common))
    assert ivf.meta["search_params"] == {"nprobe": 1}
    return root


def _config(corpus: str, encoder: str, store: str, *extra: str) -> EvaluateConfig:
    base = [f"corpus={corpus}", f"encoder={encoder}", f"store={store}", "batch_size=16", "grid_queries=0"]
    return load_config(EvaluateConfig, None, [*base, *extra])


def _independent(corpus: str, encoder: str, store: str, name: str) -> tuple[dict, list[str], np.ndarray]:
    """Test-split query vectors by modality (embedded here); the index's tile ids and vectors (Parquet)."""
    model, spec, _ = weights.load(encoder)
    queries = open_corpus(corpus).read("queries", ["query_id", "tile_id", "modality", "split", "image"])
    by_modality = {}
    for modality in MODALITIES:
        rows = sorted(
            (r for r in queries.to_pylist() if r["split"] == "test" and r["modality"] == modality),
            key=lambda r: r["query_id"],
        )
        vectors = embed_images(model, spec, [r["image"] for r in rows], Modality(modality))
        by_modality[modality] = ([r["tile_id"] for r in rows], vectors)
    folder = Path(store) / "indexes" / name / open_index(store, name).version / "embeddings"
    table = pq.read_table(folder).sort_by("tile_id")
    vectors = np.asarray(table["vector"].to_pylist(), dtype=np.float32)
    return by_modality, table["tile_id"].to_pylist(), vectors


def test_flat_index_has_no_gap_and_equals_the_full_ranking(
    corpus: str, encoders: tuple[str, str], store: str, experiment_name: str, mlflow_client
) -> None:
    extra = [f"tracking.experiment={experiment_name}", "index=flat", "grid_queries=2"]
    result = evaluate(_config(corpus, encoders[0], store, *extra))

    assert result.index is not None and result.index.index_key == "Flat"
    all_tiles = open_corpus(corpus).read("tiles", ["tile_id"]).num_rows
    assert result.gallery_size == all_tiles > 10  # every split: the index's gallery, not the split's
    assert result.index.depth == all_tiles  # the whole gallery fits in the list
    queries, gallery_ids, gallery = _independent(corpus, encoders[0], store, "flat")
    assert result.spread is not None and result.spread.vectors == all_tiles  # of the index's own vectors
    for modality in MODALITIES:
        assert all(v == 0.0 for v in result.index.gap[modality].values()), result.index.gap[modality]
        assert result.metrics[modality] == result.index.exact[modality]
        labels, vectors = queries[modality]
        full = retrieval_metrics(vectors @ gallery.T, labels, gallery_ids, (1, 5, 10))
        for name, value in full.items():
            assert result.metrics[modality][name] == pytest.approx(value, abs=1e-9), (modality, name)
        assert result.metrics[modality]["beyond_depth"] == 0

    run = mlflow_client.get_run(result.run_id)
    metrics, params = run.data.metrics, run.data.params
    assert metrics["index.drone.R_at_1"] == pytest.approx(result.metrics["drone"]["R@1"])
    assert metrics["exact.ground.AP"] == pytest.approx(result.index.exact["ground"]["AP"])
    assert metrics["gap.panorama.R_at_1pct"] == 0.0 and metrics["gallery_size"] == all_tiles
    assert metrics["spread.mean_cosine"] == pytest.approx(result.spread.mean_cosine)
    assert params["index.name"] == "flat" and params["index.key"] == "Flat"
    assert params["index.version"] == result.index.version == run.data.tags["gleam.index.version"]
    grids = {a.path for a in mlflow_client.list_artifacts(result.run_id, "retrieval_grid")}
    assert grids == {f"retrieval_grid/{m}.png" for m in MODALITIES}
    _check_distances(result, corpus, store, queries, gallery)
    assert (
        metrics["index.drone.distance.top1.median_m"] == result.distances["drone"].methods["top1"]["median_m"]
    )

    # a list cut short of the gallery: R@k still equals the full ranking's (one extra result settles ties)
    cut = evaluate(_config(corpus, encoders[0], store, "index=flat", "ks=[1,2]", "index_depth=1", *_off()))
    assert cut.index is not None and cut.index.depth == 3 < all_tiles
    for modality in MODALITIES:
        labels, vectors = queries[modality]
        full = retrieval_metrics(vectors @ gallery.T, labels, gallery_ids, (1, 2))
        for name in ("R@1", "R@2", "R@1%"):
            assert cut.metrics[modality][name] == pytest.approx(full[name], abs=1e-9), (modality, name)
        assert cut.metrics[modality]["AP"] <= full["AP"] + 1e-9
        assert all(v == 0.0 for v in cut.index.gap[modality].values())


def _check_distances(result, corpus: str, store: str, queries: dict, gallery: np.ndarray) -> None:
    """An index without a fitted radius (this world has no validation split, so no calibration): the top
    tile's error to each photo's own position, computed here by brute force; no fused estimate (nothing
    to weigh candidates by), no radius, and serving would say "unknown" for every query."""
    from gleam import geo

    assert result.location_fit is not None and "no fitted radius" in result.location_fit
    opened = open_index(store, "flat")
    table = open_corpus(corpus).read("queries", ["query_id", "modality", "split", "lat", "lon"]).to_pylist()
    for modality in MODALITIES:
        rows = sorted(
            (r for r in table if r["split"] == "test" and r["modality"] == modality),
            key=lambda r: r["query_id"],
        )
        top = (queries[modality][1] @ gallery.T).argmax(axis=1)  # gallery rows are in index order
        errors = [
            geo.distance_m(r["lat"], r["lon"], opened.lat[t], opened.lon[t])
            for r, t in zip(rows, top, strict=True)
        ]
        found = result.distances[modality]
        assert set(found.methods) == {"top1"} and "radius_m" not in found.methods["top1"]
        assert found.methods["top1"]["median_m"] == pytest.approx(np.median(errors))
        assert found.methods["top1"]["within_500m"] == pytest.approx(100 * np.mean(np.array(errors) <= 500))
        assert found.unknown == found.measured == len(rows)


def _off() -> list[str]:
    return ["tracking.enabled=false"]


def _list_metrics(scores: np.ndarray, ranked: np.ndarray, labels: list[str], gallery_size: int) -> dict:
    """A per-query loop over top lists (one positive per query): the reference for the index's figures."""
    ranks = []
    for row_scores, row, label in zip(scores, ranked, labels, strict=True):
        listed = [(s, t) for s, t in zip(row_scores, row, strict=True) if t is not None]
        full = len(listed) == len(row) < gallery_size
        hit = next(((s, t) for s, t in listed if t == label), None)
        if hit is None or (full and hit[0] <= listed[-1][0]):
            ranks.append(None)  # a miss beyond the list
        else:
            ranks.append(sum(1 for s, t in listed if t != label and s >= hit[0]))
    cutoffs = {"R@1": 1, "R@5": 5, "R@10": 10, "R@1%": one_percent_rank(gallery_size)}
    out = {name: 100 * np.mean([r is not None and r < k for r in ranks]) for name, k in cutoffs.items()}
    ap = [0.0 if r is None else 1.0 if r == 0 else 0.5 / (r + 1) for r in ranks]
    return out | {"AP": 100 * np.mean(ap), "beyond_depth": sum(r is None for r in ranks)}


def test_approximate_index_figures_equal_an_independent_ranking(
    corpus: str, encoders: tuple[str, str], store: str
) -> None:
    """IVF4 with nprobe 1 returns short lists and loses positives: the gap is whatever was measured."""
    result = evaluate(_config(corpus, encoders[0], store, "index=ivf", *_off()))
    assert result.index is not None and result.index.index_key == "IVF4,Flat"
    assert result.index.search_params == {"nprobe": 1}
    opened = open_index(store, "ivf", expect_fingerprint=result.encoder_fingerprint)
    queries, gallery_ids, gallery = _independent(corpus, encoders[0], store, "ivf")
    short_lists = beyond = 0
    for modality in MODALITIES:
        labels, vectors = queries[modality]
        scores, ranked = opened.search(vectors, result.index.depth)
        short_lists += int((ranked == None).any(axis=1).sum())  # noqa: E711 (elementwise on objects)
        expected = _list_metrics(scores, ranked, labels, len(gallery_ids))
        for name, value in expected.items():
            assert result.metrics[modality][name] == pytest.approx(value, abs=1e-9), (modality, name)
        full = retrieval_metrics(vectors @ gallery.T, labels, gallery_ids, (1, 5, 10))
        for name, value in full.items():  # the list holds the whole gallery: exact is the full ranking
            assert result.index.exact[modality][name] == pytest.approx(value, abs=1e-9), (modality, name)
        for name, value in result.index.gap[modality].items():
            assert value == pytest.approx(result.metrics[modality][name] - full[name], abs=1e-9)
        beyond += int(result.metrics[modality]["beyond_depth"])
    assert short_lists > 0 and beyond > 0  # the index really is approximate here


def test_an_index_of_another_encoder_is_refused_before_any_run(
    corpus: str, encoders: tuple[str, str], store: str, experiment_name: str, mlflow_client
) -> None:
    config = _config(corpus, encoders[1], store, "index=flat", f"tracking.experiment={experiment_name}")
    with pytest.raises(EncoderMismatchError, match="rebuild the index"):
        evaluate(config)
    assert mlflow_client.get_experiment_by_name(experiment_name) is None

    args = ["evaluate", "--set", f"corpus={corpus}", "--set", f"store={store}", "--index", "flat"]
    refused = CliRunner().invoke(app, [*args, "--set", f"encoder={encoders[1]}"])
    assert refused.exit_code == 3, refused.output
    assert "was built with encoder" in refused.output and "Traceback" not in own_output(refused.output)


def test_cli_index_option_prints_index_exact_and_gap(
    corpus: str, encoders: tuple[str, str], store: str
) -> None:
    common = ["--set", f"corpus={corpus}", "--set", f"encoder={encoders[0]}", "--set", f"store={store}"]
    common += ["--set", "modalities=[drone]", "--set", "tracking.enabled=false", "--set", "grid_queries=0"]
    result = CliRunner().invoke(app, ["evaluate", *common, "--index", "flat"])
    assert result.exit_code == 0, result.output
    for text in ("through index flat", "exact", "gap", "+0.00", "beyond depth", "drone", "tile embeddings"):
        assert text in result.output, text
    missing = CliRunner().invoke(app, ["evaluate", *common, "--index", "nowhere"])
    assert missing.exit_code == 3 and "nowhere" in missing.output
    bad = CliRunner().invoke(app, ["evaluate", *common, "--index", "a b"])
    assert bad.exit_code == 2 and "index" in bad.output
    orphan = CliRunner().invoke(app, ["evaluate", *common, "--set", "index_version=20260101T000000Z"])
    assert orphan.exit_code == 2 and "needs an index name" in orphan.output
