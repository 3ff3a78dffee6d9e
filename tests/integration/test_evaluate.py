"""The evaluation job on a real Ray-prepared corpus, a saved encoder and the session's MLflow store."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.corpus.prepare import prepare
from gleam.corpus.reader import CorpusNotReady, open_corpus
from gleam.corpus.world import WorldConfig, generate_world
from gleam.evaluation.config import EvaluateConfig
from gleam.evaluation.evaluate import evaluate
from gleam.evaluation.report import metrics_table
from gleam.evaluation.split import EmptySplitError
from gleam.model import weights
from gleam.model.encoder import GleamEncoder
from gleam.model.spec import EncoderSpec
from gleam_cli.main import app
from tests.support.corpora import RawCorpus

pytestmark = pytest.mark.integration

SIZES = [f"sizes.{m}=[64,64]" for m in ("satellite", "drone", "streetmap", "ground")] + [
    "sizes.panorama=[128,64]"
]
QUERY_MODALITIES = {"drone", "streetmap", "panorama", "ground"}


def _prepare(source: str, uri: str, output: Path, *extra: str) -> str:
    config = load_config(
        PrepareConfig,
        None,
        [
            "name=eval",
            f"output={output}",
            f"sources.0.kind={source}",
            f"sources.0.uri={uri}",
            "batch_size=8",
            "tracking.enabled=false",
            *SIZES,
            *extra,
        ],
    )
    return prepare(config).corpus_uri


@pytest.fixture(scope="module")
def world_corpus(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """12 places + 3 distractor tiles; half of the places (by hash) in the test split."""
    root = tmp_path_factory.mktemp("eval-world")
    world = WorldConfig(
        output=str(root / "raw"), locations=12, distractors=3, tile_size=64, query_size=64, seed=3
    )
    generate_world(world)
    return _prepare(
        "world", str(root / "raw"), root / "prepared", "split.test_fraction=0.5", "split.val_fraction=0"
    )


@pytest.fixture(scope="module")
def encoder_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random-weight encoder saved as safetensors, at the prepared corpus's sizes."""
    torch.manual_seed(0)
    spec = EncoderSpec.tiny("test_convnext", size=64, embed_dim=32)
    path = tmp_path_factory.mktemp("encoder") / "tiny"
    weights.save(GleamEncoder(spec), spec, str(path))
    return str(path)


def _config(corpus: str, encoder: str, experiment: str, *extra: str) -> EvaluateConfig:
    overrides = [
        f"corpus={corpus}",
        f"encoder={encoder}",
        f"tracking.experiment={experiment}",
        "batch_size=8",
    ]
    return load_config(EvaluateConfig, None, [*overrides, *extra])


def test_metrics_per_modality_are_logged_with_a_grid(
    world_corpus: str, encoder_uri: str, experiment_name: str, mlflow_client
) -> None:
    result = evaluate(_config(world_corpus, encoder_uri, experiment_name, "grid_queries=4"))

    test_tiles = open_corpus(world_corpus).read("tiles", ["split"])["split"].to_pylist().count("test")
    assert result.gallery_size == test_tiles > 1
    assert set(result.metrics) == QUERY_MODALITIES
    for modality, metrics in result.metrics.items():
        for name in ("R@1", "R@5", "R@10", "R@1%", "AP"):
            assert 0.0 <= metrics[name] <= 100.0, (modality, name, metrics[name])
        assert metrics["R@10"] >= metrics["R@5"] >= metrics["R@1"]
        assert metrics["queries"] == result.query_counts[modality] > 0
        assert metrics["queries_without_match"] == 0  # every test query's tile is in the test gallery
    assert result.chance_r1 == pytest.approx(100.0 / test_tiles)
    assert result.spread is not None and result.spread.vectors == test_tiles
    assert not result.spread.collapsed and result.spread.mean_cosine < 0.999

    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["drone.R_at_1"] == pytest.approx(result.metrics["drone"]["R@1"])
    assert run.data.metrics["ground.AP"] == pytest.approx(result.metrics["ground"]["AP"])
    assert run.data.metrics["gallery_size"] == test_tiles
    assert run.data.metrics["spread.mean_cosine"] == pytest.approx(result.spread.mean_cosine)
    assert run.data.metrics["spread.effective_rank"] == pytest.approx(result.spread.effective_rank)
    assert run.data.params["split"] == "test"
    # distance errors: the world knows every photo's position and every tile's ground size, so each
    # modality has the top tile's error and the fused estimate's, with a cross-fitted radius
    assert result.location_fit is not None and "cross-fitting" in result.location_fit
    for modality, found in (result.distances or {}).items():
        assert found.skipped == {"queries_without_coordinates": 0, "top_tile_without_coordinates": 0}
        assert found.measured == result.query_counts[modality]
        assert set(found.methods) == {"top1", "fused"}  # refined: only when asked for
        top1 = found.methods["top1"]
        assert top1["queries"] == result.query_counts[modality] and top1["median_m"] >= 0
        assert top1["within_25m"] <= top1["within_50m"] <= top1["within_100m"] <= top1["within_500m"]
        assert 0.0 <= top1["coverage"] <= 100.0 and found.coverage_target == 0.68
    assert set(result.distances or {}) == QUERY_MODALITIES
    drone = result.distances["drone"].methods["fused"]
    assert run.data.metrics["drone.distance.fused.median_m"] == pytest.approx(drone["median_m"])
    assert "drone.distance.unknown_pct" in run.data.metrics
    grids = {a.path for a in mlflow_client.list_artifacts(result.run_id, "retrieval_grid")}
    assert grids == {f"retrieval_grid/{m}.png" for m in QUERY_MODALITIES}
    local = mlflow_client.download_artifacts(result.run_id, "retrieval_grid/panorama.png")
    with Image.open(local) as grid:
        assert grid.format == "PNG" and grid.width > 5 * 64 and grid.height > 4 * 64


def _smooth_image(seed: int, quality: int) -> bytes:
    """A distinct smooth colour field per seed (random 4x4 colours, upsampled), as JPEG."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    small.resize((64, 64), Image.BICUBIC).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_oracle_queries_that_are_their_tiles_score_100(
    ray_cluster, encoder_uri: str, tmp_path: Path, experiment_name: str
) -> None:
    """Control: each query is its own tile re-encoded, so even random weights must rank it first."""
    raw = RawCorpus(tmp_path / "raw")
    for i in range(10):
        raw.file(f"sat/t{i}.jpg", _smooth_image(i, quality=95))
        raw.file(f"drone/q{i}.jpg", _smooth_image(i, quality=70))  # other bytes: not a duplicate
        raw.row(f"drone/q{i}.jpg", "drone", f"sat/t{i}.jpg", f"loc{i}", split="test")
    # sets: places 0-2 get a second copy of their own view and a photo of another place (the odd one out)
    for i in range(3):
        raw.file(f"set/q{i}b.jpg", _smooth_image(i, quality=80))
        raw.file(f"set/q{i}x.jpg", _smooth_image(i + 5, quality=75))
        raw.row(f"set/q{i}b.jpg", "drone", f"sat/t{i}.jpg", f"loc{i}", split="test", set_id=f"s{i}")
        raw.row(f"set/q{i}x.jpg", "drone", f"sat/t{i}.jpg", f"loc{i}", split="test", set_id=f"s{i}")
        raw.rows[i]["set_id"] = f"s{i}"
    corpus = _prepare("manifest", str(raw.write_manifest()), tmp_path / "prepared")

    result = evaluate(_config(corpus, encoder_uri, experiment_name, "grid_queries=0"))
    assert result.gallery_size == 10 and result.query_counts == {"drone": 16}
    # every photo of its own place ranks its tile first; the 3 odd ones out show another place
    assert result.metrics["drone"]["R@1"] == pytest.approx(100.0 * 13 / 16)
    # scored as sets, agreement fusion discounts the odd photo out and finds every set's place
    sets = result.sets["drone"]
    assert sets["sets"] == 3 and sets["agreement"]["R@1"] == 100.0
    assert sets["agreement"]["AP"] >= sets["mean"]["AP"]
    # a manifest without lat/lon: no distance figure, every query skipped and counted, no crash
    drone = result.distances["drone"]
    assert drone.methods == {} and drone.skipped["queries_without_coordinates"] == 16
    console = Console(width=200, record=True)
    console.print(metrics_table(result))
    printed = console.export_text()
    assert "drone: 0 measured, 16 without lat/lon" in printed
    assert "sets of photos" in printed and "100.00 /" in printed


def _vigor_oracle(root: Path, places: int = 6) -> Path:
    """A same-area VIGOR city whose panorama i shows tile i + 1, its semi-positive (tile 0 for the last).

    Panorama 0 shows its own positive instead (the control), so R@1 is 1/places and the hit rate 100.
    The other two semi-positive names of each label line are absent satellites (dropped by the source).
    """
    city = root / "Chicago"
    (city / "panorama").mkdir(parents=True)
    (city / "satellite").mkdir()
    (root / "splits" / "Chicago").mkdir(parents=True)
    sats = [f"satellite_41.88{i}_-87.63{i}.png" for i in range(places)]
    lines = []
    for i, sat in enumerate(sats):
        Image.open(io.BytesIO(_smooth_image(i, quality=95))).save(city / "satellite" / sat, format="PNG")
        shown = 0 if i == 0 else (i + 1) % places
        pano = f"p{i},41.88{i},-87.63{i},.jpg"  # p0 and the last show tile 0: other qualities, other bytes
        (city / "panorama" / pano).write_bytes(_smooth_image(shown, quality=80 if i == 0 else 70))
        semi = sats[(i + 1) % places]
        lines.append(f"{pano} {sat} 0 0 {semi} 1 1 satellite_0_0.png 2 2 satellite_1_1.png 3 3")
    (root / "splits/Chicago/same_area_balanced_test.txt").write_text("\n".join(lines) + "\n")
    return root


def test_vigor_semi_positives_flow_from_prepare_to_the_hit_rate(
    ray_cluster, encoder_uri: str, tmp_path: Path, experiment_name: str, mlflow_client
) -> None:
    """Prepare keeps each panorama's semi-positives; evaluation reports the hit rate beside R@k."""
    corpus = _prepare("vigor", str(_vigor_oracle(tmp_path / "VIGOR")), tmp_path / "prepared")
    semi = open_corpus(corpus).read("queries", ["query_id", "semi_positives"]).to_pylist()
    assert {r["query_id"]: r["semi_positives"] for r in semi}["vigor_pano_Chicago_p5"] == [
        "vigor_Chicago_satellite_41.880_-87.630"
    ]

    result = evaluate(_config(corpus, encoder_uri, experiment_name, "grid_queries=0"))
    panorama = result.metrics["panorama"]
    assert panorama["R@1"] == pytest.approx(100 / 6) and panorama["hit_rate"] == 100.0
    run = mlflow_client.get_run(result.run_id)
    assert run.data.metrics["panorama.hit_rate"] == 100.0
    console = Console(width=200, record=True)
    console.print(metrics_table(result))
    assert "hit rate" in console.export_text()


def test_errors_name_what_is_missing(world_corpus: str, encoder_uri: str, tmp_path: Path) -> None:
    with pytest.raises(CorpusNotReady, match=r"manifest\.json"):
        evaluate(_config(str(tmp_path / "nowhere"), encoder_uri, "unused"))
    with pytest.raises(EmptySplitError, match="'val'"):
        evaluate(_config(world_corpus, encoder_uri, "unused", "split=val"))


def test_cli_rejects_a_bad_config_naming_the_field(world_corpus: str, encoder_uri: str) -> None:
    args = ["evaluate", "--set", f"corpus={world_corpus}", "--set", f"encoder={encoder_uri}"]
    result = CliRunner().invoke(app, [*args, "--set", "batch_size=0"])
    assert result.exit_code == 2, result.output
    assert "batch_size" in result.output
    missing = CliRunner().invoke(app, ["evaluate", "--set", f"corpus={world_corpus}"])
    assert missing.exit_code == 2 and "encoder" in missing.output


def test_cli_prints_metrics_next_to_chance(world_corpus: str, encoder_uri: str, experiment_name: str) -> None:
    args = ["--set", f"corpus={world_corpus}", "--set", f"encoder={encoder_uri}"]
    only_drone = ["--set", "modalities=[drone]", "--set", "tracking.enabled=false", "--set", "refine=true"]
    result = CliRunner().invoke(app, ["evaluate", *args, *only_drone])
    assert result.exit_code == 0, result.output
    assert "chance R@1" in result.output and "drone" in result.output and "tracking disabled" in result.output
    # the distance table under it, with the refined estimate asked for (heatmaps on the top tiles)
    assert "distance to each photo's own position" in result.output and "refined" in result.output
    assert "tile embeddings: mean cosine" in result.output and "(ok)" in result.output
    empty = CliRunner().invoke(app, ["evaluate", *args, "--set", "split=val"])
    assert empty.exit_code == 3 and "val" in empty.output


def test_shipped_demo_config_is_valid() -> None:
    config = load_config(
        EvaluateConfig, Path(__file__).resolve().parents[2] / "jobs/configs/evaluate_demo.yaml"
    )
    assert config.split == "test" and config.modalities is None and config.ks == [1, 5, 10]
