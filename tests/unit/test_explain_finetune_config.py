"""The fine-tuning job's config: every mistake named by its field, the shipped recipe, the LoRA targets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gleam.config import ConfigError, load_config, parse_config
from gleam.explain.finetune.config import LANGUAGE_MODEL_LINEARS, FinetuneConfig
from gleam.explain.finetune.loop import lora_targets

REPO = Path(__file__).resolve().parents[2]
BASE = {"name": "x", "explanation_set": "/sets/s", "steps": 10}


def test_defaults_are_a_lora_recipe_on_both_languages() -> None:
    config = parse_config(FinetuneConfig, dict(BASE))
    assert config.method == "lora" and config.languages == ["en", "zh"] and config.freeze_vision
    assert config.registry.name == "gleam-x" and config.registry.save == "adapter"
    assert config.optimizer.lr == 1e-4 and config.share_evidence
    assert config.samples_per_step == config.batch_size * config.grad_accumulation
    tags = parse_config(FinetuneConfig, {**BASE, "languages": ["ZH-cn", "en", "zh"]})
    assert tags.languages == ["zh", "en"]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"steps": None}, "<root>", "exactly one of steps and epochs"),
        ({"epochs": 1}, "<root>", "exactly one of steps and epochs"),
        ({"lora": {"r": 0}}, "lora.r", "greater than or equal to 1"),
        ({"lora": {"target_modules": "(unclosed"}}, "lora.target_modules", "not a valid regular expression"),
        ({"lora": {"target_modules": []}}, "lora.target_modules", "non-empty list"),
        ({"lora": {"rank": 8}}, "lora.rank", "Extra inputs are not permitted"),
        ({"languages": ["fr"]}, "languages", "unsupported language 'fr'"),
        ({"min_pixels": 5000, "max_pixels": 4000}, "<root>", "above max_pixels"),
        ({"max_pixels": 100}, "max_pixels", "greater than or equal to 784"),
        ({"method": "full"}, "<root>", "registry.save: adapter needs method: lora"),
        ({"val_split": "train"}, "<root>", "val_split is the train split"),
        ({"method": "qlora"}, "method", "'lora' or 'full'"),
        ({"registry": {"save": "both"}}, "registry.save", "'adapter' or 'merged'"),
        ({"optimizer": {"warmup_ratio": 1.0}}, "optimizer.warmup_ratio", "less than 1"),
        ({"scaling": {"workers": 0}}, "scaling.workers", "greater than or equal to 1"),
        ({"name": "../up"}, "name", "should match pattern"),
    ],
)
def test_a_bad_field_is_named(change: dict, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(FinetuneConfig, {**BASE, **change}, "finetune.yaml")
    text = str(caught.value)
    assert f"  {field}: " in text and message in text, text


def test_full_fine_tuning_registers_merged_weights() -> None:
    config = parse_config(FinetuneConfig, {**BASE, "method": "full", "registry": {"save": "merged"}})
    assert config.method == "full" and config.registry.save == "merged"


def test_the_shipped_recipe_loads_with_the_public_recipes_defaults() -> None:
    config = load_config(FinetuneConfig, REPO / "jobs" / "configs" / "finetune_explainer.yaml")
    assert config.method == "lora" and 8 <= config.lora.r <= 64
    assert config.optimizer.lr == pytest.approx(1e-4) and config.gradient_checkpointing
    assert 262_144 <= config.max_pixels <= 1_003_520 and config.freeze_vision
    assert config.optimizer.warmup_ratio > 0 and config.precision == "auto"
    assert config.lora.target_modules == LANGUAGE_MODEL_LINEARS  # the language model only
    assert config.registry.name == "gleam-x" and config.registry.alias and config.val_split == "val"


def test_the_default_targets_are_the_language_models_linear_layers_only(tiny_vlm_folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    with torch.device("meta"):  # weightless: what the driver checks before Ray starts
        skeleton = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(tiny_vlm_folder))
    config = parse_config(FinetuneConfig, dict(BASE))
    targets = lora_targets(skeleton, config)
    linears = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
    expected = {f"model.language_model.layers.{layer}.{name}" for layer in (0, 1) for name in linears}
    assert set(targets) == expected
    # the vision tower has gate/up/down_proj too: a plain list of names would adapt it
    names = parse_config(FinetuneConfig, {**BASE, "lora": {"target_modules": ["gate_proj"]}})
    with pytest.raises(ValueError, match=r"vision-tower layers \(e\.g\. model\.visual\.blocks\.0\.mlp"):
        lora_targets(skeleton, names)
    thawed = names.model_copy(update={"freeze_vision": False})
    assert any(re.search(r"\bvisual\b", t) for t in lora_targets(skeleton, thawed))
    nothing = parse_config(FinetuneConfig, {**BASE, "lora": {"target_modules": r".*\.nope$"}})
    with pytest.raises(ValueError, match="matches no linear layer"):
        lora_targets(skeleton, nothing)
