"""The train job's config: phases as data, every mistake named by its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gleam.config import ConfigError, load_config, parse_config
from gleam.corpus.schema import Modality
from gleam.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
BASE = {"name": "run", "corpus": "/c", "modalities": ["drone", "panorama"], "steps": 10}


def test_defaults_are_a_uniform_mixture_and_the_phase_alias() -> None:
    config = parse_config(TrainConfig, dict(BASE))
    assert config.weights() == {"drone": 1.0, "panorama": 1.0}
    assert config.aliases() == ["phase1"]
    champion = parse_config(TrainConfig, {**BASE, "phase": "phase2", "registry": {"champion": True}})
    assert champion.aliases() == ["phase2", "champion"]


def test_mixture_weights_are_kept_and_missing_modalities_get_zero() -> None:
    config = parse_config(TrainConfig, {**BASE, "mixture": {"drone": 3}})
    assert config.weights() == {"drone": 3.0, "panorama": 0.0}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"steps": None}, "<root>", "exactly one of steps and epochs"),
        ({"epochs": 2}, "<root>", "exactly one of steps and epochs"),
        ({"init": "models:/gleam-c@phase1", "encoder": {"backbone": "test_convnext"}}, "<root>", "not both"),
        ({"mixture": {"ground": 1}}, "<root>", "not in `modalities`"),
        ({"mixture": {"drone": 0}}, "mixture", "at least one weight"),
        ({"modalities": ["satellite"]}, "modalities", "reference gallery"),
        ({"modalities": []}, "modalities", "at least 1"),
        ({"batch_size": 1}, "batch_size", "greater than or equal to 2"),
        ({"optimizer": {"lr": 0}}, "optimizer.lr", "greater than 0"),
        ({"scaling": {"workers": 0}}, "scaling.workers", "greater than or equal to 1"),
        ({"name": "no spaces"}, "name", "pattern"),
        ({"precision": "fp16"}, "precision", "bf16"),
        ({"optimiser": {}}, "optimiser", "Extra inputs"),
        ({"batching": {"radius_m": 500}}, "batching", "batching.radius_m applies to GPS"),
        ({"batching": {"mode": "similarity", "radius_m": 500}}, "batching", "batching.radius_m"),
        ({"batching": {"mode": "gps", "mine_every_steps": 5}}, "batching", "batching.mine_every_steps"),
        ({"batching": {"mode": "gps", "first": "gps"}}, "batching", "batching.first applies"),
        ({"batching": {"mode": "nearest"}}, "batching.mode", "'random', 'gps' or 'similarity'"),
        ({"batching": {"neighbours": 1}}, "batching.neighbours", "greater than or equal to 2"),
    ],
)
def test_bad_configs_name_the_field(change: dict, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(TrainConfig, {**BASE, **change})
    text = str(info.value)
    assert f"  {field}:" in text and message in text, text


def test_batching_defaults_to_random_and_names_what_gps_needs() -> None:
    assert parse_config(TrainConfig, dict(BASE)).batching.mode == "random"
    similar = parse_config(TrainConfig, {**BASE, "batching": {"mode": "similarity", "first": "gps"}})
    assert similar.batching.uses_gps() and similar.batching.neighbours == 8
    assert not parse_config(TrainConfig, {**BASE, "batching": {"mode": "similarity"}}).batching.uses_gps()
    for batching in ({}, {"mode": "gps", "radius_m": 300}, {"mode": "similarity", "first": "gps"}):
        config = parse_config(TrainConfig, {**BASE, "batching": batching})
        assert TrainConfig.model_validate(config.model_dump(mode="json")) == config  # what workers get


def test_repository_phase_configs_validate() -> None:
    phase1 = load_config(TrainConfig, REPO / "jobs/configs/train_phase1.yaml")
    phase2 = load_config(TrainConfig, REPO / "jobs/configs/train_phase2.yaml")
    assert phase1.modalities == [Modality.PANORAMA] and phase1.encoder is not None
    assert phase2.init == "models:/gleam-c@phase1" and len(phase2.modalities) == 4
    for demo in ("train_demo_phase1.yaml", "train_demo_phase2.yaml"):
        config = load_config(TrainConfig, REPO / "jobs/configs" / demo)
        assert config.steps is not None and config.scaling.workers == 2
