"""Symmetric InfoNCE for GLEAM-C, negatives gathered from every worker (architecture.md, GLEAM-C blocks).

Conventions (each one is tested in tests/unit/test_loss.py):

- Inputs are L2-normalised embeddings; logits = scale * q @ t.T, computed in float32 (float64 kept)
  with autocast disabled, so bf16 training cannot overflow the softmax.
- The scale is exp(log_scale), log_scale initialised to log(1 / 0.07) as in CLIP, clamped to
  `max_logit_scale` in the forward pass (no gradient while clamped). Call `clamp_logit_scale_()`
  after each optimiser step, as CLIP does, so the raw parameter cannot drift above the cap and stay
  stuck there with a zero gradient.
- Same-tile masking: a row's logits against the *other* copies of its positive tile id in the global
  batch (other queries of the same place, or duplicated tiles) are set to -inf, in both directions;
  the diagonal positive stays. Such a row is a softmax over its valid columns only, and label
  smoothing spreads `label_smoothing / K` over its K valid columns (positive included, like
  `F.cross_entropy(label_smoothing=...)`), so with no duplicates it equals torch's cross-entropy.
- Distributed: embeddings and tile ids are all-gathered (unequal local batch sizes allowed). Rank r
  computes its local queries against the global tiles and its local tiles against the global
  queries, and returns loss_r = W / (2N) * sum of its rows' cross-entropies (W ranks, N global rows;
  with equal local batches this is the local mean). Hence mean_r(loss_r) is the single-process loss
  on the concatenated batch, and since the all-gather's backward sums the gradients of every rank's
  loss, each local embedding's gradient is W times the single-process gradient; DDP's averaging of
  parameter gradients over ranks (logit scale included: keep the loss module inside the DDP model or
  all-reduce-mean its gradient) then yields exactly the single-process gradients.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Sequence
from numbers import Integral

import torch
import torch.distributed as dist
from torch import nn

TileIds = torch.Tensor | Sequence[Hashable]


def _stable_id(value: Hashable) -> int:
    """A 64-bit hash of repr(value) that is the same in every process (unlike hash(), which is salted)."""
    digest = hashlib.blake2b(repr(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def tile_ids_to_tensor(tile_ids: TileIds, n: int, device: torch.device) -> torch.Tensor:
    """Tile ids as an int64 tensor: integers as they are, any other hashable through a stable hash."""
    if isinstance(tile_ids, torch.Tensor):
        ids = tile_ids.to(device=device, dtype=torch.long).reshape(-1)
    else:
        values = list(tile_ids)
        if not all(isinstance(v, Integral) for v in values):
            values = [_stable_id(v) for v in values]
        ids = torch.tensor([int(v) for v in values], dtype=torch.long, device=device)
    if ids.numel() != n:
        raise ValueError(f"expected {n} tile ids, got {ids.numel()}")
    return ids


def _world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    """(rank, world size), or (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def _gather_sizes(n: int, device: torch.device, group: dist.ProcessGroup | None) -> list[int]:
    """Every rank's local batch size, so ranks may hold unequal batches (e.g. a last partial one)."""
    world = dist.get_world_size(group)
    local = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(sizes, local, group=group)
    return [int(s.item()) for s in sizes]


def _all_gather_padded(x: torch.Tensor, sizes: list[int], group: dist.ProcessGroup | None) -> torch.Tensor:
    """Concatenate every rank's `x` (row counts `sizes`) in rank order; no autograd."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the gradient from every rank's loss and keeps the local slice."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        sizes: list[int],
        rank: int,
        group: dist.ProcessGroup | None,
    ) -> torch.Tensor:
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group  # type: ignore[attr-defined]
        return _all_gather_padded(x, sizes, group)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)  # type: ignore[attr-defined]
        start = sum(ctx.sizes[: ctx.rank])  # type: ignore[attr-defined]
        return grad[start : start + ctx.sizes[ctx.rank]], None, None, None  # type: ignore[attr-defined]


def all_gather_with_grad(
    x: torch.Tensor, sizes: list[int], rank: int, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """Differentiable all-gather along dim 0 (every rank must call it and later call backward)."""
    return _AllGatherWithGrad.apply(x, sizes, rank, group)  # type: ignore[no-any-return]


def smoothed_cross_entropy(
    logits: torch.Tensor, positives: torch.Tensor, invalid: torch.Tensor, smoothing: float
) -> torch.Tensor:
    """Per-row cross-entropy over the valid columns only, smoothing spread over those columns."""
    log_prob = logits.masked_fill(invalid, float("-inf")).log_softmax(dim=1)
    nll = -log_prob.gather(1, positives[:, None]).squeeze(1)
    valid_count = (~invalid).sum(dim=1)
    uniform = -log_prob.masked_fill(invalid, 0.0).sum(dim=1) / valid_count  # no 0 * -inf = nan
    return (1.0 - smoothing) * nll + smoothing * uniform


def same_tile_mask(
    local_ids: torch.Tensor, global_ids: torch.Tensor, positives: torch.Tensor
) -> torch.Tensor:
    """True where a column holds another copy of the row's positive tile: not a negative, masked."""
    mask = local_ids[:, None] == global_ids[None, :]
    mask[torch.arange(local_ids.numel(), device=mask.device), positives] = False
    return mask


class SymmetricInfoNCE(nn.Module):
    """Symmetric InfoNCE (query->satellite and satellite->query) over the global batch."""

    def __init__(
        self,
        temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        label_smoothing: float = 0.1,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.max_log_scale = math.log(max_logit_scale)
        self.label_smoothing = label_smoothing
        self.process_group = process_group

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the raw parameter in place; call after optimiser steps (CLIP's recipe)."""
        self.logit_scale.clamp_(max=self.max_log_scale)

    def scale(self) -> torch.Tensor:
        """The multiplicative logit scale, clamped to its maximum."""
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    def forward(
        self, query_emb: torch.Tensor, tile_emb: torch.Tensor, tile_ids: TileIds
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of this rank (see the module docstring for its scaling) and detached global stats.

        Stats: `loss` (the global mean loss), `acc_q2s`, `acc_s2q` (global top-1 accuracy over the
        masked logits) and `logit_scale`, as 0-dim tensors so logging decides when to sync a GPU.
        """
        if query_emb.ndim != 2 or query_emb.shape != tile_emb.shape:
            raise ValueError(f"need two (B, D) tensors of one shape, got {query_emb.shape}, {tile_emb.shape}")
        n, device = query_emb.shape[0], query_emb.device
        ids = tile_ids_to_tensor(tile_ids, n, device)
        rank, world = _world(self.process_group)
        dtype = torch.promote_types(query_emb.dtype, torch.float32)
        with torch.autocast(device_type=device.type, enabled=False):
            local = torch.cat([query_emb.to(dtype), tile_emb.to(dtype)], dim=1)
            if world > 1:
                sizes = _gather_sizes(n, device, self.process_group)
                both = all_gather_with_grad(local, sizes, rank, self.process_group)
                global_ids = _all_gather_padded(ids, sizes, self.process_group)
            else:
                sizes, both, global_ids = [n], local, ids
            queries, tiles = local.chunk(2, dim=1)
            all_queries, all_tiles = both.chunk(2, dim=1)
            positives = sum(sizes[:rank]) + torch.arange(n, device=device)
            invalid = same_tile_mask(ids, global_ids, positives)
            scale = self.scale().to(dtype)
            logits_q2s = scale * queries @ all_tiles.T
            logits_s2q = scale * tiles @ all_queries.T
            ce_q2s = smoothed_cross_entropy(logits_q2s, positives, invalid, self.label_smoothing)
            ce_s2q = smoothed_cross_entropy(logits_s2q, positives, invalid, self.label_smoothing)
            total = sum(sizes)
            loss = (ce_q2s.sum() + ce_s2q.sum()) * (world / (2.0 * total))
        stats = self._stats(ce_q2s, ce_s2q, logits_q2s, logits_s2q, invalid, positives, world)
        stats["logit_scale"] = scale.detach().float()
        return loss, stats

    @torch.no_grad()
    def _stats(
        self,
        ce_q2s: torch.Tensor,
        ce_s2q: torch.Tensor,
        logits_q2s: torch.Tensor,
        logits_s2q: torch.Tensor,
        invalid: torch.Tensor,
        positives: torch.Tensor,
        world: int,
    ) -> dict[str, torch.Tensor]:
        """Global loss and accuracies, summed over ranks in one small all-reduce."""

        def hits(logits: torch.Tensor) -> torch.Tensor:
            return (logits.masked_fill(invalid, float("-inf")).argmax(dim=1) == positives).sum()

        sums = torch.stack(
            [
                ce_q2s.sum() + ce_s2q.sum(),
                hits(logits_q2s).to(ce_q2s.dtype),
                hits(logits_s2q).to(ce_q2s.dtype),
                torch.tensor(float(ce_q2s.numel()), dtype=ce_q2s.dtype, device=ce_q2s.device),
            ]
        ).float()
        if world > 1:
            dist.all_reduce(sums, group=self.process_group)
        total = sums[3]
        return {"loss": sums[0] / (2 * total), "acc_q2s": sums[1] / total, "acc_s2q": sums[2] / total}
