"""Symmetric InfoNCE: hand-checked values, same-tile masking, the scale clamp, bf16, and 2-process gloo."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from gleam.model.loss import SymmetricInfoNCE

EPS = 0.1


def numpy_loss(q: np.ndarray, t: np.ndarray, scale: float, eps: float = EPS) -> float:
    """InfoNCE with label smoothing written out per row, for distinct tiles (no masking)."""

    def direction(logits: np.ndarray) -> float:
        total = 0.0
        for i, row in enumerate(logits):
            log_p = row - np.log(np.exp(row).sum())
            total += -(1 - eps) * log_p[i] - eps / len(row) * log_p.sum()
        return total / len(logits)

    logits = scale * q @ t.T
    return (direction(logits) + direction(logits.T)) / 2


def test_identity_embeddings_closed_form() -> None:
    # q = t = I (3x3): every row's logits are s on the diagonal and 0 elsewhere, in both directions, so
    # -log p_ii = log(e^s + 2) - s, -log p_ij = log(e^s + 2), and per row
    # loss = (1 - eps) * (log(e^s + 2) - s) + eps * (log(e^s + 2) - s / 3).
    s = 1 / 0.07
    expected = (1 - EPS) * (math.log(math.exp(s) + 2) - s) + EPS * (math.log(math.exp(s) + 2) - s / 3)
    loss, stats = SymmetricInfoNCE()(
        torch.eye(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64), [1, 2, 3]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["logit_scale"].item() == pytest.approx(s, rel=1e-6)
    assert stats["acc_q2s"].item() == stats["acc_s2q"].item() == 1.0


def test_random_3x3_matches_numpy_by_hand() -> None:
    rng = np.random.default_rng(0)
    q, t = (rng.standard_normal((3, 4)) for _ in range(2))
    q, t = q / np.linalg.norm(q, axis=1, keepdims=True), t / np.linalg.norm(t, axis=1, keepdims=True)
    loss, _ = SymmetricInfoNCE()(torch.from_numpy(q), torch.from_numpy(t), torch.tensor([4, 5, 6]))
    assert loss.item() == pytest.approx(numpy_loss(q, t, 1 / 0.07), rel=1e-6)


def _embeddings(
    n: int, d: int = 8, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    t = F.normalize(q + 0.5 * torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    return q, t


def test_unique_tiles_equal_torch_cross_entropy_with_label_smoothing() -> None:
    q, t = _embeddings(6)
    loss_fn = SymmetricInfoNCE()
    logits = loss_fn.scale().double() * q @ t.T
    target = torch.arange(6)
    expected = (
        F.cross_entropy(logits, target, label_smoothing=EPS)
        + F.cross_entropy(logits.T, target, label_smoothing=EPS)
    ) / 2
    loss, _ = loss_fn(q, t, list(range(6)))
    torch.testing.assert_close(loss, expected)


def test_other_copies_of_the_positive_tile_are_not_negatives() -> None:
    q, t = _embeddings(5)
    ids = [7, 3, 7, 9, 7]  # rows 0, 2 and 4 share tile 7
    loss_fn = SymmetricInfoNCE()
    logits = loss_fn.scale().double() * q @ t.T
    expected = 0.0
    for direction in (logits, logits.T):
        for i in range(5):
            # The row's other copies of tile 7 are dropped from its softmax (column removed), and
            # label smoothing is spread over the remaining columns only.
            keep = [j for j in range(5) if j == i or ids[j] != ids[i]]
            row = direction[i, keep][None, :]
            expected += F.cross_entropy(row, torch.tensor([keep.index(i)]), label_smoothing=EPS) / 10
    loss, stats = loss_fn(q, t, ids)
    torch.testing.assert_close(loss, expected)
    unmasked, _ = loss_fn(q, t, list(range(5)))
    assert not torch.isclose(unmasked, expected)
    # String ids (hashed stably) give the same masking as integer ids.
    torch.testing.assert_close(loss_fn(q, t, ["a", "b", "a", "c", "a"])[0], loss)
    assert 0.0 <= stats["acc_q2s"].item() <= 1.0


def test_identical_duplicates_are_not_penalised() -> None:
    # Two rows that are exact copies (same tile twice): with masking both are perfect matches.
    q = torch.eye(3, dtype=torch.float64)[[0, 0, 1]]
    loss_fn = SymmetricInfoNCE(label_smoothing=0.0)
    masked, stats = loss_fn(q, q.clone(), [10, 10, 11])
    unmasked, _ = loss_fn(q, q.clone(), [10, 12, 11])
    assert stats["acc_q2s"].item() == 1.0
    assert masked.item() < 1e-5 < unmasked.item()


def test_logit_scale_is_clamped() -> None:
    loss_fn = SymmetricInfoNCE(max_logit_scale=100.0)
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(1000.0))
    q, t = _embeddings(4)
    loss, stats = loss_fn(q, t, [0, 1, 2, 3])
    assert stats["logit_scale"].item() == pytest.approx(100.0)
    loss.backward()
    assert loss_fn.logit_scale.grad.item() == 0.0  # clamped: no gradient until the clamp is applied
    loss_fn.clamp_logit_scale_()
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(100.0))
    assert loss_fn.scale().item() == pytest.approx(100.0)


def test_gradients_reach_embeddings_and_logit_scale() -> None:
    q, t = (x.requires_grad_() for x in _embeddings(5))
    loss_fn = SymmetricInfoNCE()
    loss, _ = loss_fn(q, t, [1, 2, 1, 3, 4])
    loss.backward()
    for grad in (q.grad, t.grad, loss_fn.logit_scale.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gradcheck_with_masking() -> None:
    q, t = (x.requires_grad_() for x in _embeddings(4, d=3))
    loss_fn = SymmetricInfoNCE(temperature=0.5).double()
    assert torch.autograd.gradcheck(lambda a, b: loss_fn(a, b, [1, 2, 1, 3])[0], (q, t))


def test_bf16_autocast_computes_logits_in_float32() -> None:
    layer = torch.nn.Linear(8, 8)
    x, y = torch.randn(6, 8), torch.randn(6, 8)
    loss_fn = SymmetricInfoNCE(max_logit_scale=1000.0)
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(1000.0))  # large logits: bf16 logits would lose the ranking
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, t = F.normalize(layer(x), dim=1), F.normalize(layer(y), dim=1)
        assert q.dtype == torch.bfloat16
        loss, _ = loss_fn(q, t, list(range(6)))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    reference, _ = loss_fn(q.float(), t.float(), list(range(6)))
    torch.testing.assert_close(loss, reference)
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all()


# --- two processes over gloo ----------------------------------------------------------------------

WORLD = 2
D_IN, D_EMB = 5, 4
# Each scenario: global tile ids and the local batch sizes. Tile 5 appears on both ranks, tile 3
# twice on rank 0; the second scenario has unequal local batches and string ids.
SCENARIOS: dict[str, tuple[list, list[int]]] = {
    "equal": ([3, 5, 3, 8, 5, 9], [3, 3]),
    "unequal": (["a", "b", "c", "b", "d", "a"], [4, 2]),
}


def _scenario_inputs(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query inputs, tile inputs and a shared linear encoder, the same in every process."""
    g = torch.Generator().manual_seed(len(name))
    n = len(SCENARIOS[name][0])
    xq, xt = (
        torch.randn(n, D_IN, generator=g, dtype=torch.float64),
        torch.randn(n, D_IN, generator=g, dtype=torch.float64),
    )
    return xq, xt, torch.randn(D_IN, D_EMB, generator=g, dtype=torch.float64)


def _run(xq: torch.Tensor, xt: torch.Tensor, weight: torch.Tensor, ids: list) -> dict[str, torch.Tensor]:
    """Encode, compute the loss, backward; return the loss and the gradients."""
    encoder = weight.clone().requires_grad_()
    loss_fn = SymmetricInfoNCE()
    q, t = F.normalize(xq @ encoder, dim=1), F.normalize(xt @ encoder, dim=1)
    q.retain_grad()
    t.retain_grad()
    loss, stats = loss_fn(q, t, ids)
    loss.backward()
    return {
        "loss": loss.detach(),
        "stats_loss": stats["loss"],
        "q_grad": q.grad,
        "t_grad": t.grad,
        "encoder_grad": encoder.grad,
        "scale_grad": loss_fn.logit_scale.grad,
    }


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, (ids, sizes) in SCENARIOS.items():
            start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
            xq, xt, weight = _scenario_inputs(name)
            out = _run(xq[start:stop], xt[start:stop], weight, ids[start:stop])
            for key in ("encoder_grad", "scale_grad"):  # what DDP does to parameter gradients
                dist.all_reduce(out[key])
                out[key] /= WORLD
            results[name] = out
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_loss_and_gradients_equal_single_process(tmp_path: Path) -> None:
    """Scaling: loss_r = W/(2N) * (rank r's rows), so mean_r loss_r = the single-process loss; each
    local embedding gradient = W * its single-process gradient (the all-gather backward sums every
    rank's loss); after DDP's mean over ranks, parameter gradients (encoder, logit scale) are exact."""
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name, (ids, sizes) in SCENARIOS.items():
        xq, xt, weight = _scenario_inputs(name)
        ref = _run(xq, xt, weight, ids)
        unmasked = _run(xq, xt, weight, list(range(len(ids))))
        assert not torch.isclose(ref["loss"], unmasked["loss"])  # the masking matters here
        ranks = [result[name] for result in per_rank]
        torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD, ref["loss"])
        for rank, out in enumerate(ranks):
            rows = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
            torch.testing.assert_close(out["stats_loss"], ref["loss"].float())
            torch.testing.assert_close(out["q_grad"], WORLD * ref["q_grad"][rows])
            torch.testing.assert_close(out["t_grad"], WORLD * ref["t_grad"][rows])
            torch.testing.assert_close(out["encoder_grad"], ref["encoder_grad"])
            torch.testing.assert_close(out["scale_grad"], ref["scale_grad"])
