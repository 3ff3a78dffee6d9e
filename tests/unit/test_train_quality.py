"""The GPU recipe (jobs/configs/train_phase{1,2}.yaml) and `benchmarks/train_quality.py --real`'s pieces
that need no cluster: every recipe number names its source, overrides reach the right phase, and the
report keeps this run apart from the published figures."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from gleam.config import load_config
from gleam.errors import InvalidInputError
from gleam.evaluation.result import EvaluationResult
from gleam.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import real_recipe  # noqa: E402
import train_quality  # noqa: E402

PHASE_FILES = {p: REPO / "jobs" / "configs" / f"train_{p}.yaml" for p in real_recipe.PHASES}
# The fields that make the recipe (what a published table depends on); operational ones are exempt.
RECIPE_KEYS = {
    "modalities", "backbone", "pretrained", "satellite", "drone", "streetmap", "panorama", "ground",
    "epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "min_lr_ratio", "temperature",
    "label_smoothing", "flip_p", "rotate_p", "mode", "neighbours", "candidates", "first",
    "mine_every_steps", "precision", "grad_clip", "loader_threads", "init",
}  # fmt: skip
SOURCE = re.compile(r"#.*\b(S4G(-[UVA])?|GLEAM|platform)\b")


@pytest.mark.parametrize("phase", real_recipe.PHASES)
def test_every_recipe_number_names_its_source(phase: str) -> None:
    lines = PHASE_FILES[phase].read_text().splitlines()
    keys = [(i, m.group(1)) for i, line in enumerate(lines) if (m := re.match(r"\s*(\w+):\s*\S", line))]
    recipe = [(i, key) for i, key in keys if key in RECIPE_KEYS]
    assert len(recipe) >= 20, recipe
    unsourced = [lines[i] for i, _ in recipe if not SOURCE.search(lines[i])]
    assert unsourced == []


def test_the_recipe_is_sample4geos_where_it_publishes_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLEAM_TRAIN_WORKERS", raising=False)
    monkeypatch.delenv("GLEAM_PRETRAINED", raising=False)
    phase1, phase2 = (load_config(TrainConfig, PHASE_FILES[p]) for p in real_recipe.PHASES)
    assert phase1.encoder is not None and phase1.encoder.backbone == "convnext_base.fb_in22k_ft_in1k_384"
    assert phase1.encoder.pretrained == "hub"
    for config in (phase1, phase2):  # Sample4Geo: 128 pairs a step, smoothing 0.1, clip 100, 1/0.07
        assert config.batch_size * config.scaling.workers == 128
        assert (config.loss.label_smoothing, config.loss.temperature, config.grad_clip) == (0.1, 0.07, 100.0)
        assert config.batching.mode == "similarity" and config.batching.candidates == 128
    assert (phase1.optimizer.lr, phase1.epochs, phase1.batching.first) == (0.001, 40, "gps")
    assert phase2.init == "models:/gleam-c@phase1" and phase2.optimizer.lr < phase1.optimizer.lr


def test_overrides_are_routed_by_prefix_and_steps_replace_epochs() -> None:
    routed = real_recipe.route_overrides(
        ["phase1.optimizer.lr=0.01", "encoder.backbone=resnet18", "steps=5", "evaluate.one_percent=platform",
         "prepare.limits.min_side=8", "phase2.epochs=2"]
    )  # fmt: skip
    assert routed["phase1"] == ["optimizer.lr=0.01", "encoder.backbone=resnet18", "steps=5", "epochs=null"]
    assert routed["phase2"] == ["steps=5", "epochs=null", "epochs=2", "steps=null"]
    assert routed["evaluate"] == ["one_percent=platform"] and routed["prepare"] == ["limits.min_side=8"]
    with pytest.raises(ValueError, match=r"key\.path=value"):
        real_recipe.route_overrides(["steps"])


def _fitted(routed: dict[str, list[str]], available: set[str]) -> dict[str, TrainConfig]:
    """The benchmark's phase configs for a corpus with train pairs of `available` modalities only."""
    recipe = {p: load_config(TrainConfig, PHASE_FILES[p], routed[p]) for p in real_recipe.PHASES}
    fitted = real_recipe.corpus_overrides(recipe, available, routed)
    own = {p: real_recipe.phase_overrides(p, "q", fitted[p], routed[p]) for p in real_recipe.PHASES}
    return {p: load_config(TrainConfig, PHASE_FILES[p], ["corpus=/c", *own[p]]) for p in real_recipe.PHASES}


def test_the_smoke_preset_on_a_corpus_without_panoramas_makes_valid_phases() -> None:
    """University-1652 has drone and ground pairs only: phase 1 (panoramas) falls back to them."""
    configs = _fitted(real_recipe.route_overrides(["batch_size=2"], smoke=True), {"drone", "ground"})
    phase1, phase2 = configs["phase1"], configs["phase2"]
    assert phase1.name == "q-phase1" and phase1.registry.name == real_recipe.BENCH_REGISTRY
    assert phase1.encoder is not None and phase1.encoder.backbone == "test_convnext"
    assert phase1.encoder.pretrained is None and phase1.encoder.size("panorama") == (128, 64)
    assert (phase1.steps, phase1.epochs, phase1.batch_size, phase1.batching.mode) == (2, None, 2, "random")
    for config in (phase1, phase2):
        assert [m.value for m in config.modalities] == ["drone", "ground"]
    assert phase2.image_sizes is None and not phase2.registry.champion and phase2.scaling.workers == 1


def test_phase_one_without_its_modalities_batches_like_phase_two_and_the_user_wins() -> None:
    """The recipe's GPS start needs coordinates a University-1652 corpus lacks: phase 2's batching instead."""
    u1652 = {"drone", "ground"}
    configs = _fitted(real_recipe.route_overrides([]), u1652)
    assert configs["phase1"].batching == configs["phase2"].batching
    assert (configs["phase1"].batching.mode, configs["phase1"].batching.first) == ("similarity", "random")
    assert configs["phase1"].optimizer.lr == 0.001  # the rest of phase 1 stays phase 1's
    mine = _fitted(
        real_recipe.route_overrides(["phase1.modalities=[ground]", "phase1.batching.first=random"]), u1652
    )
    assert [m.value for m in mine["phase1"].modalities] == ["ground"] and mine[
        "phase1"
    ].batching.neighbours == 65
    full = _fitted(real_recipe.route_overrides([]), {"drone", "ground", "panorama", "streetmap"})
    assert full["phase1"].batching.first == "gps" and [m.value for m in full["phase1"].modalities] == [
        "panorama"
    ]
    with pytest.raises(InvalidInputError, match="no train pairs of phase 2"):
        _fitted(real_recipe.route_overrides([]), {"satellite"})


def test_a_mixture_keeps_only_the_corpus_modalities() -> None:
    routed = real_recipe.route_overrides(["phase2.mixture={drone: 2.0, panorama: 1.0}"])
    recipe = {p: load_config(TrainConfig, PHASE_FILES[p], routed[p]) for p in real_recipe.PHASES}
    fitted = real_recipe.corpus_overrides(recipe, {"drone"}, {**routed, "phase2": []})
    assert fitted["phase2"] == ['modalities=["drone"]', 'mixture={"drone": 2.0}']
    assert real_recipe.default_name("s3://bucket/prepared/University 1652/") == "quality-University-1652"


def test_real_options_need_real() -> None:
    assert train_quality.parse_args(["--real", "/c", "--set", "steps=2"]).set == ["steps=2"]
    with pytest.raises(SystemExit) as info:
        train_quality.parse_args(["--set", "steps=2"])
    assert info.value.code == 2


def _report(metrics: dict[str, dict[str, float]]) -> str:
    configs = _fitted(real_recipe.route_overrides([], smoke=True), {"drone"})
    runs = {
        p: real_recipe.PhaseRun(["drone"], 2, 12.3, f"/enc/{p}", p == "phase2") for p in real_recipe.PHASES
    }
    result = EvaluationResult(metrics, 701, {m: 37855 for m in metrics}, None, "test", "f" * 16)
    return real_recipe.real_report(
        dataset="s3://b/u1652", corpus_uri="s3://b/prepared/u1652", phase1=configs["phase1"],
        phase2=configs["phase2"], runs=runs, result=result, one_percent="official", prepare_seconds=None,
        cluster="Ray cluster: 8 GPU (H100), 128 CPU",
    )  # fmt: skip


def test_the_report_sets_this_run_apart_from_the_published_figures() -> None:
    figures = {"R@1": 80.123, "R@5": 90.0, "R@10": 95.0, "R@1%": 96.5, "AP": 83.0}
    body = _report({"drone": figures, "ground": dict(figures, **{"R@1": 10.0})})
    this_run, published = body.split("**Published references (not this run)**")
    assert "| drone | 37855 | 701 | 80.12 | 90.00 | 95.00 | 96.50 | 83.00 |" in this_run
    assert "`official` convention" in this_run and "8 GPU (H100)" in this_run
    assert "phase 2: drone; 2 steps of 4 x 1 workers = 4 pairs" in this_run and "reused" in this_run
    row = next(line for line in published.splitlines() if "Sample4Geo" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:] == ["drone", "92.65", "not reported", "not reported", "not reported", "93.81"]
    assert "92.65" not in this_run


def test_no_published_table_without_a_matching_modality() -> None:
    body = _report({"panorama": {"R@1": 1.0, "R@5": 2.0, "R@10": 3.0, "R@1%": 4.0, "AP": 5.0}})
    assert "Published references" not in body and "| panorama |" in body
