"""Pieces of the per-worker loop that need no cluster: schedule, freezing, optimiser groups, state files."""

from __future__ import annotations

import math

import pytest
import torch

from gleam.config import parse_config
from gleam.model.encoder import GleamEncoder
from gleam.model.loss import SymmetricInfoNCE
from gleam.model.spec import EncoderSpec
from gleam.state_io import join_state, load_state, save_state, split_state
from gleam.training.config import TrainConfig
from gleam.training.loop import build_encoder, build_optimizer, freeze, warmup_cosine
from gleam.training.step import ContrastiveModel


def config(**fields: object) -> TrainConfig:
    base = {"name": "r", "corpus": "/c", "modalities": ["drone"], "steps": 10}
    return parse_config(TrainConfig, {**base, **fields})


def test_warmup_then_cosine_to_the_floor() -> None:
    factor = warmup_cosine(total_steps=110, warmup_steps=10, min_ratio=0.1)
    assert [factor(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert factor(9) == pytest.approx(1.0) and factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the cosine
    assert factor(110) == pytest.approx(0.1)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 110))


def test_freeze_patterns_and_a_pattern_that_matches_nothing() -> None:
    encoder = GleamEncoder(EncoderSpec.tiny(size=32, embed_dim=8))
    frozen = freeze(encoder, ["backbone.stem*"])
    stem = [p for n, p in encoder.named_parameters() if n.startswith("backbone.stem")]
    assert frozen == len(stem) > 0 and not any(p.requires_grad for p in stem)
    assert encoder.proj.weight.requires_grad
    with pytest.raises(ValueError, match="matches no parameter"):
        freeze(encoder, ["backbone.nothing_here*"])


def test_optimizer_skips_frozen_and_decays_only_matrices() -> None:
    encoder = GleamEncoder(EncoderSpec.tiny(size=32, embed_dim=8))
    freeze(encoder, ["backbone.stem*"])
    model = ContrastiveModel(encoder, SymmetricInfoNCE())
    optimizer = build_optimizer(model, config(optimizer={"lr": 0.01, "weight_decay": 0.2}))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert any(p is model.loss_fn.logit_scale for p in no_decay["params"])
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(decay["params"]) + len(no_decay["params"]) == trainable


def test_build_encoder_applies_phase_image_sizes_to_saved_weights(tmp_path) -> None:
    from gleam.model import weights

    spec = EncoderSpec.tiny(size=32, embed_dim=8)
    original = GleamEncoder(spec)
    weights.save(original, spec, str(tmp_path / "enc"))
    encoder, new_spec = build_encoder(
        config(init=str(tmp_path / "enc"), image_sizes={"panorama": [96, 48]}), checkpoint_dir=None
    )
    assert new_spec.size("panorama") == (96, 48) and new_spec.size("drone") == (32, 32)
    for (name, a), b in zip(original.state_dict().items(), encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert encoder.training


def test_optimizer_state_round_trips_without_pickle(tmp_path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
    for _ in range(3):
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    save_state(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": 3}, tmp_path, "t"
    )
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in tmp_path.iterdir())
    restored = load_state(tmp_path, "t")

    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    twin_opt = torch.optim.AdamW(twin.parameters(), lr=0.1)
    twin_sched = torch.optim.lr_scheduler.LambdaLR(twin_opt, lambda s: 1.0 / (s + 1))
    twin_opt.load_state_dict(restored["optimizer"])
    twin_sched.load_state_dict(restored["scheduler"])
    assert restored["step"] == 3
    x = torch.randn(2, 4)
    for net, opt, sched in ((model, optimizer, scheduler), (twin, twin_opt, twin_sched)):
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
        sched.step()
    assert torch.equal(model.weight, twin.weight) and twin_opt.param_groups[0]["lr"] == pytest.approx(0.1 / 5)


def test_state_split_keeps_int_keys_and_refuses_objects() -> None:
    skeleton, tensors = split_state({"state": {0: {"m": torch.ones(2)}}, "x": [1, 2.5, None, "a"]})
    back = join_state(skeleton, tensors)
    assert list(back["state"]) == [0] and torch.equal(back["state"][0]["m"], torch.ones(2))
    assert back["x"] == [1, 2.5, None, "a"]
    with pytest.raises(TypeError, match="without pickle"):
        split_state({"f": math.sin})
