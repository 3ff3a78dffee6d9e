"""Pairs/s of the platform's training step vs a plain single-process Sample4Geo loop, side by side.

Every mode trains the same encoder init on the same pre-built batch at the same precision; warm-up is
excluded and the modes run interleaved (A/B/C, A/B/C, ...) so a noisy machine's drift hits them alike.
Rows: the plain loop (one forward of all queries, one of all tiles, symmetric cross-entropy with label
smoothing 0.1 and a learnable logit scale, AdamW, clipping; no all-gather, no masking); `train_step`
on that very batch (the platform's overhead); `train_step` on the batch split over `--modalities`
(panoramas are 2x wide: compare Mpx/s); with `--with-decode`, TrainTransform on JPEG bytes alone and
in front of the step (the data cost per pair when loading is not overlapped).

    .venv/bin/python benchmarks/train_step.py                      # CPU: test_convnext, 64 px
    .venv/bin/python benchmarks/train_step.py --backbone convnext_base --size 384 --batch 64 \\
        --precision bf16 --channels-last --fp16-baseline          # GPU: Sample4Geo's fp16 vs ours
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from report import append_section, markdown_table
from torch import nn
from torch.amp import GradScaler
from torch.optim import Optimizer

from gleam.model.encoder import GleamEncoder
from gleam.model.loss import SymmetricInfoNCE
from gleam.model.spec import EncoderSpec
from gleam.model.transforms import TrainTransform
from gleam.training.step import ContrastiveModel, MicroBatch, train_step

Step = Callable[[], object]
Batch = dict[str, MicroBatch]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_encoder(spec: EncoderSpec, device: torch.device, channels_last: bool) -> GleamEncoder:
    """A fresh encoder with the same random init every call, so every mode trains the same model."""
    torch.manual_seed(0)
    spec = spec.model_copy(update={"channels_last": channels_last})
    return GleamEncoder(spec, load_pretrained=False).to(device)


def split(batch: int, modalities: list[str]) -> dict[str, list[str]]:
    """`batch` distinct tile ids (strings, as in the corpus: the loss hashes them) split over modalities."""
    ids, k = [f"tile-{i:06d}" for i in range(batch)], len(modalities)
    return {m: ids[i * batch // k : (i + 1) * batch // k] for i, m in enumerate(modalities)}


def build_inputs(
    spec: EncoderSpec, batch: int, modalities: list[str], device: torch.device, channels_last: bool
) -> Batch:
    """Random normalised images on the device, so the timed figure is the step and not the decoding."""
    gen, (sw, sh) = torch.Generator().manual_seed(0), spec.size("satellite")
    out = {}
    for m, ids in split(batch, modalities).items():
        queries = torch.randn(len(ids), 3, spec.size(m)[1], spec.size(m)[0], generator=gen)
        tiles = torch.randn(len(ids), 3, sh, sw, generator=gen)
        out[m] = MicroBatch(queries, tiles, ids).to(device, channels_last)
    return out


def plain_step(
    encoder: nn.Module,
    scale: nn.Parameter,
    optimizer: Optimizer,
    scaler: GradScaler,
    batch: MicroBatch,
    dtype: Any,
) -> float:
    """Sample4Geo's step (train.py + InfoNCE loss): the reference, with no platform machinery."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(batch.queries.device.type, dtype=dtype, enabled=dtype is not None):
        q, t = encoder(batch.queries), encoder(batch.tiles)
        logits = scale.exp() * q @ t.T
        ce = partial(F.cross_entropy, target=torch.arange(len(q), device=q.device), label_smoothing=0.1)
        loss = (ce(logits) + ce(logits.T)) / 2
    scaler.scale(loss).backward()  # a disabled GradScaler passes through: plain backward and step
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
    scaler.step(optimizer)
    scaler.update()
    return loss.item()  # Sample4Geo logs every step, as train_step does: one sync each


def make_plain(spec: EncoderSpec, batch: MicroBatch, precision: str, channels_last: bool) -> Step:
    """Sample4Geo's setup: logit scale log(1/0.07), AdamW, GradScaler(2**10) under float16 only."""
    device = batch.queries.device
    encoder = build_encoder(spec, device, channels_last)
    scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07)), device=device))
    optimizer = torch.optim.AdamW([*encoder.parameters(), scale], lr=1e-4)
    scaler = GradScaler(device.type, init_scale=2.0**10, enabled=precision == "fp16")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return lambda: plain_step(encoder, scale, optimizer, scaler, batch, dtype)


def make_platform(
    spec: EncoderSpec,
    batch: Batch | Callable[[], Batch],
    precision: str,
    channels_last: bool,
    device: torch.device,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
) -> Step:
    """The platform's step; `batch` may be a loader called every step, `wrap` is where DDP goes."""
    encoder = build_encoder(spec, device, channels_last)
    model: nn.Module = ContrastiveModel(encoder, SymmetricInfoNCE(), channels_last).to(device)
    model = wrap(model) if wrap else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    get = batch if callable(batch) else lambda: batch
    return lambda: train_step(model, optimizer, get(), precision=precision, grad_clip=1.0)


def make_decode(
    spec: EncoderSpec, batch: int, modalities: list[str], device: torch.device
) -> Callable[[], Batch]:
    """TrainTransform (decode, paired geometry, photometric noise, normalise) in one thread, per step.

    The JPEGs are smooth noise plus grain, photo-like in size (white noise would decode slower)."""
    transform, rng, ids = TrainTransform(spec), np.random.default_rng(0), split(batch, modalities)

    def jpeg(size: tuple[int, int]) -> bytes:
        smooth = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize(
            size, Image.BICUBIC
        )
        grain = np.asarray(smooth, dtype=np.int16) + rng.integers(-12, 13, (size[1], size[0], 3))
        buffer = io.BytesIO()
        Image.fromarray(grain.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()

    sat = spec.size("satellite")
    jpegs = {m: ([jpeg(spec.size(m)) for _ in i], [jpeg(sat) for _ in i]) for m, i in ids.items()}

    def decode() -> Batch:
        tensors = {m: transform.batch(queries, sats, m, rng) for m, (queries, sats) in jpegs.items()}
        return {m: MicroBatch(q, t, ids[m]).to(device, spec.channels_last) for m, (q, t) in tensors.items()}

    return decode


def time_loop(step: Step, steps: int, device: torch.device) -> float:
    """Seconds for `steps` calls, the device drained before and after."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - start


def pairs(batch: Batch) -> int:
    return sum(len(b.tile_ids) for b in batch.values())


def megapixels(batch: Batch) -> float:
    return sum(b.queries[:, 0].numel() + b.tiles[:, 0].numel() for b in batch.values()) / 1e6


def measure_platform(
    spec: EncoderSpec,
    batch: Batch,
    steps: int,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    warmup: int = 3,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
) -> float:
    """Pairs/s of `train_step` on this batch (what a Ray Train worker would report for itself)."""
    device = next(iter(batch.values())).queries.device
    step = make_platform(spec, batch, precision, channels_last, device, wrap)
    time_loop(step, warmup, device)
    return steps * pairs(batch) / time_loop(step, steps, device)


def interleaved(
    modes: dict[str, Step], steps: int, warmup: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per repeat for each mode, run A/B/C, A/B/C, ... after an untimed warm-up of each."""
    for step in modes.values():
        time_loop(step, warmup, device)
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    for r in range(repeats):
        for name, step in modes.items():
            seconds[name].append(time_loop(step, steps, device))
        print(
            f"repeat {r + 1}/{repeats}: " + ", ".join(f"{s[-1]:.2f} s" for s in seconds.values()),
            file=sys.stderr,
        )
    return seconds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="test_convnext", help="timm name; convnext_base on a GPU")
    parser.add_argument("--size", type=int, default=64, help="square side (px); panoramas 2x wide")
    parser.add_argument("--batch", type=int, default=32, help="pairs per step")
    parser.add_argument("--modalities", default="drone,panorama", help="micro-batches; plain gets the first")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per mode before the repeats")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: torch's default")
    parser.add_argument(
        "--fp16-baseline", action="store_true", help="CUDA: plain fp16+GradScaler, ours bf16+NHWC"
    )
    parser.add_argument("--with-decode", action="store_true", help="also time TrainTransform on JPEG bytes")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    return parser.parse_args()


def build_modes(args: argparse.Namespace, device: torch.device) -> dict[str, tuple[Step, Batch]]:
    """Label -> (step, the batch it trains on); the first is the plain loop every ratio refers to."""
    plain_prec, prec = ("fp16", "bf16") if args.fp16_baseline else (args.precision, args.precision)
    cl = args.channels_last or args.fp16_baseline
    spec = EncoderSpec.tiny(backbone=args.backbone, size=args.size)
    mods = [m.strip() for m in args.modalities.split(",") if m.strip()]
    same = build_inputs(spec, args.batch, mods[:1], device, args.channels_last)
    mixed = build_inputs(spec, args.batch, mods, device, cl)
    plain = make_plain(spec, same[mods[0]], plain_prec, args.channels_last)
    modes = {
        f"plain Sample4Geo loop, {mods[0]} ({plain_prec})": (plain, same),
        f"platform train_step, same batch ({prec})": (make_platform(spec, same, prec, cl, device), same),
    }
    if len(mods) > 1:
        label = f"platform train_step, {'+'.join(mods)} micro-batches ({prec})"
        modes[label] = (make_platform(spec, mixed, prec, cl, device), mixed)
    if args.with_decode:
        decode = make_decode(spec.model_copy(update={"channels_last": cl}), args.batch, mods, device)
        modes["TrainTransform decode+augment alone, 1 thread"] = (decode, mixed)
        modes["decode+augment, then platform step"] = (make_platform(spec, decode, prec, cl, device), mixed)
    return modes


def main() -> None:
    args = parse_args()
    if args.threads:  # on a shared CPU, fewer threads than cores avoids OpenMP stalls behind other jobs
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if args.fp16_baseline and device.type != "cuda":
        raise SystemExit("--fp16-baseline needs CUDA (float16 autocast + GradScaler)")
    modes = build_modes(args, device)
    seconds = interleaved({k: v[0] for k, v in modes.items()}, args.steps, args.warmup, args.repeats, device)
    base, table = next(iter(seconds)), []
    for name, (_, batch) in modes.items():
        median = statistics.median(seconds[name])
        rate = statistics.median(pairs(batch) * args.steps / s for s in seconds[name])
        ratio = statistics.median(b / s for b, s in zip(seconds[base], seconds[name], strict=True))
        spread = (max(seconds[name]) - min(seconds[name])) / median
        mpx = megapixels(batch) * args.steps / median
        cells = [f"{rate:.1f}", f"{2 * rate:.1f}", f"{mpx:.2f}", f"{1000 / rate:.2f}", f"{ratio:.2f}"]
        table.append([name, *cells, f"{spread:.0%}"])
    header = ["mode", "pairs/s", "images/s per device", "Mpx/s", "ms per pair", "x plain", "spread"]
    where = (
        f"{torch.get_num_threads()} torch threads" if device.type == "cpu" else torch.cuda.get_device_name()
    )
    body = (
        f"Backbone `{args.backbone}` (random init), squares {args.size} px (panoramas {2 * args.size}x"
        f"{args.size}), {args.batch} pairs per step, {args.steps} timed steps x {args.repeats} interleaved "
        f"repeats after {args.warmup} warm-up steps per mode; {device.type}, {where}. Inputs are pre-built "
        "random tensors unless the row says decode. pairs/s: median over repeats; images/s = 2 x pairs/s "
        "(one process, one device); x plain: median of per-repeat ratios to the plain loop; spread: "
        f"(max - min) / median of the repeats' seconds.\n\n{markdown_table(header, table)}\n"
    )
    if args.no_write:
        print(body)
    else:
        append_section("Training step: platform train_step vs a plain Sample4Geo loop", body)


if __name__ == "__main__":
    main()
