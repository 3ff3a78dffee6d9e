"""FLOPs of one training step per image, counted by torch's FlopCounterMode on a real forward+backward.

torch's formula for `aten.convolution_backward` (up to at least 2.14) leaves out the convolution's
`groups`, so every depthwise 7x7 convolution of a ConvNeXt is counted as a dense one in the backward:
convnext_base at 384 px comes out at 802 GFLOP per image instead of 271 (forward 90, which the forward
formula gets right). The suite passes a formula that counts each backward product (grad input, grad
weight) at the forward convolution's own count, which is exact for any `groups`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count
from train_step import build_encoder, build_inputs

from gleam.model.loss import SymmetricInfoNCE
from gleam.model.spec import EncoderSpec
from gleam.training.step import ContrastiveModel, autocast_for


def conv_backward_flop(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: int,
    output_mask: list[bool],
    out_shape: Any = None,
    **_: Any,
) -> int:
    """grad input and grad weight each cost the forward's multiply-adds; `w_shape` is per group."""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def step_flops_per_image(spec: EncoderSpec, device: torch.device, precision: str, pairs: int = 2) -> float:
    """FLOPs of the platform's forward+backward per image (queries and tiles alike), at `spec`'s size.

    Counted on a small batch: every op is per image except the loss's pairs x pairs logits, which are
    negligible next to the backbone (and grow with the batch, so they would only flatter a large one).
    """
    batch = build_inputs(spec, pairs, ["drone"], device, channels_last=False)
    model = ContrastiveModel(build_encoder(spec, device, False), SymmetricInfoNCE()).to(device)
    counter = FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop}
    )
    with counter:
        with autocast_for(device, precision):
            loss, _ = model(batch)
        loss.backward()
    return counter.get_total_flops() / (2 * pairs)
