"""The multi-modal training step: shapes per modality, one loss, and it actually learns."""

from __future__ import annotations

import pytest
import torch

from gleam.model.encoder import GleamEncoder
from gleam.model.loss import SymmetricInfoNCE
from gleam.model.spec import EncoderSpec
from gleam.training.step import ContrastiveModel, MicroBatch, forward_loss, train_step


@pytest.fixture
def encoder() -> GleamEncoder:
    torch.manual_seed(0)
    spec = EncoderSpec.tiny(size=32, embed_dim=16)
    return GleamEncoder(spec, load_pretrained=False)


def batch(seed: int = 0) -> dict[str, MicroBatch]:
    g = torch.Generator().manual_seed(seed)
    # panoramas are wide (32x64), drone square; tiles always at the satellite size
    return {
        "panorama": MicroBatch(
            torch.randn(3, 3, 32, 64, generator=g), torch.randn(3, 3, 32, 32, generator=g), [1, 2, 3]
        ),
        "drone": MicroBatch(
            torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g), [4, 5]
        ),
    }


def test_forward_loss_mixes_modalities_into_one_loss(encoder: GleamEncoder) -> None:
    loss_fn = SymmetricInfoNCE()
    loss, stats = forward_loss(encoder, loss_fn, batch())
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"acc_q2s", "acc_s2q", "logit_scale"} <= set(stats)
    # 5 pairs in one softmax: chance accuracy is 1/5, and the loss is near log(5) at random init
    assert abs(float(loss.detach()) - torch.log(torch.tensor(5.0)).item()) < 1.5
    with pytest.raises(ValueError, match="at least one pair"):
        forward_loss(encoder, loss_fn, {})


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_repeated_steps_overfit_a_fixed_batch(encoder: GleamEncoder, precision: str) -> None:
    loss_fn = SymmetricInfoNCE()
    params = list(encoder.parameters()) + list(loss_fn.parameters())
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    fixed = batch(1)
    model = ContrastiveModel(encoder, loss_fn, channels_last=True)
    first = train_step(model, optimizer, fixed, precision=precision)
    for _ in range(25):
        last = train_step(model, optimizer, fixed, precision=precision)
    assert last["loss"] < 0.6 * first["loss"]
    assert last["pairs"] == 5 and last["grad_norm"] >= 0 and last["lr"] == pytest.approx(3e-3)


def test_gradient_clipping_bounds_the_update(encoder: GleamEncoder) -> None:
    loss_fn = SymmetricInfoNCE()
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.0)
    stats = train_step(ContrastiveModel(encoder, loss_fn), optimizer, batch(2), grad_clip=1e-6)
    total = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in encoder.parameters() if p.grad is not None))
    assert stats["grad_norm"] > 1e-6 and float(total) <= 1e-6 * 1.01


def test_unknown_precision_is_refused(encoder: GleamEncoder) -> None:
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="precision"):
        train_step(ContrastiveModel(encoder, SymmetricInfoNCE()), optimizer, batch(), precision="fp8")


def test_a_compiled_model_trains_like_the_eager_one(encoder: GleamEncoder) -> None:
    """torch.compile wraps the model (the `compile: true` path); aot_eager keeps the test fast on CPU."""
    twin = GleamEncoder(encoder.spec, load_pretrained=False)
    twin.load_state_dict(encoder.state_dict())
    eager, compiled = (
        ContrastiveModel(encoder, SymmetricInfoNCE()),
        ContrastiveModel(twin, SymmetricInfoNCE()),
    )
    wrapped = torch.compile(compiled, backend="aot_eager")
    opt_a = torch.optim.SGD(eager.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(compiled.parameters(), lr=0.1)
    a = train_step(eager, opt_a, batch(3))
    b = train_step(wrapped, opt_b, batch(3))  # unwrap_model finds the loss through the compile wrapper
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    assert torch.allclose(encoder.proj.weight, twin.proj.weight, atol=1e-6)
