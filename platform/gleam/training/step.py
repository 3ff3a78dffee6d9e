"""One GLEAM-C optimisation step over a multi-modal batch.

Each modality's queries are encoded as their own micro-batch at their own image size (panoramas are
wide), the tiles of every modality together in one pass at the satellite size, and the loss is taken
once over the concatenation: the contrastive negatives of a drone query include the tiles of the
panorama pairs in the same step, exactly as in a single mixed batch.

`ContrastiveModel` holds the encoder *and* the loss (whose logit scale is a parameter) and does the
whole forward in one call, so DDP wraps it once: one forward per step, and the logit scale's gradient
is averaged over workers like every other parameter (see gleam.model.loss for why that is exact).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gleam.model.weights import unwrap_as


@dataclass
class MicroBatch:
    """The pairs of one modality in a step: query images, tile images, and the tiles' ids."""

    queries: torch.Tensor  # (n, 3, H_modality, W_modality)
    tiles: torch.Tensor  # (n, 3, H_satellite, W_satellite)
    tile_ids: Sequence[Any]

    def to(self, device: torch.device | str, channels_last: bool = False) -> MicroBatch:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return MicroBatch(
            self.queries.to(device, non_blocking=True, memory_format=fmt),
            self.tiles.to(device, non_blocking=True, memory_format=fmt),
            self.tile_ids,
        )


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast where asked (GPU, or CPU for tests); fp32 otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"unknown precision {precision!r}: expected bf16 or fp32")


def forward_loss(
    encoder: nn.Module, loss_fn: nn.Module, batch: Mapping[str, MicroBatch], channels_last: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Encode every micro-batch with the one shared encoder and return (loss, stats)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    modalities = [m for m in sorted(batch) if len(batch[m].tile_ids)]
    if not modalities:
        raise ValueError("a training step needs at least one pair")
    query_embeddings = [encoder(batch[m].queries.contiguous(memory_format=memory_format)) for m in modalities]
    tiles = torch.cat([batch[m].tiles for m in modalities]).contiguous(memory_format=memory_format)
    tile_embeddings = encoder(tiles)
    tile_ids = [t for m in modalities for t in batch[m].tile_ids]
    return loss_fn(torch.cat(query_embeddings), tile_embeddings, tile_ids)


class ContrastiveModel(nn.Module):
    """Encoder + loss as one module: `model(batch)` -> (loss, stats). Wrap this in DDP, not the encoder."""

    def __init__(self, encoder: nn.Module, loss_fn: nn.Module, channels_last: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss_fn = loss_fn
        self.channels_last = channels_last

    def forward(self, batch: Mapping[str, MicroBatch]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return forward_loss(self.encoder, self.loss_fn, batch, self.channels_last)


def unwrap_model(model: nn.Module) -> ContrastiveModel:
    """The ContrastiveModel inside DDP and torch.compile wrappers."""
    return unwrap_as(model, ContrastiveModel)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, MicroBatch],
    *,
    precision: str = "fp32",
    grad_clip: float | None = 1.0,
    scheduler: Any = None,
) -> dict[str, float]:
    """Forward, backward, clip, step; returns plain floats for logging.

    `model` is a ContrastiveModel, possibly wrapped in DDP or torch.compile.
    """
    device = next(model.parameters()).device
    optimizer.zero_grad(set_to_none=True)
    with autocast_for(device, precision):
        loss, stats = model(batch)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip else None
    optimizer.step()
    loss_fn = unwrap_model(model).loss_fn
    if hasattr(loss_fn, "clamp_logit_scale_"):
        loss_fn.clamp_logit_scale_()
    if scheduler is not None:
        scheduler.step()
    out = {k: float(v) for k, v in stats.items()}
    out["lr"] = float(optimizer.param_groups[0]["lr"])
    if grad_norm is not None:
        out["grad_norm"] = float(grad_norm)
    out["pairs"] = float(sum(len(b.tile_ids) for b in batch.values()))
    return out
