"""Pairs/s of the platform's training step vs a plain single-process Sample4Geo loop, side by side.

Every mode trains the same encoder init on the same pre-built batch at the same precision; warm-up is
excluded and the modes run interleaved (A/B/C, A/B/C, ...) so a noisy machine's drift hits them alike.
Rows: the plain loop (one forward of all queries, one of all tiles, symmetric cross-entropy with label
smoothing 0.1 and a learnable logit scale, AdamW, clipping; no all-gather, no masking); `train_step`
on that very batch (the platform's overhead); `train_step` on the batch split over `--modalities`
(panoramas are 2x wide: compare Mpx/s); with `--with-decode`, TrainTransform on JPEG bytes alone and
in front of the step (the data cost per pair when loading is not overlapped).

With `--ray-workers N` it measures instead what Ray Train costs: the real training job
(`gleam.training.phases.run_training`) with N workers on a small synthetic world corpus, against the
single-process "decode+augment, then platform step" mode on the same global batch with `--threads`.

    .venv/bin/python benchmarks/train_step.py                      # CPU: test_convnext, 64 px
    .venv/bin/python benchmarks/train_step.py --backbone convnext_base --size 384 --batch 64 \\
        --precision bf16 --channels-last --fp16-baseline          # GPU: Sample4Geo's fp16 vs ours
    .venv/bin/python benchmarks/train_step.py --ray-workers 2 --threads 2 --steps 5 --repeats 4 \\
        --ray-steps 40 --ray-warmup 8                             # Ray Train's overhead on 2 cores
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
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
    parser.add_argument(
        "--ray-workers", type=int, default=0, help="N > 0: run_training on N Ray Train workers vs one process"
    )
    parser.add_argument("--ray-steps", type=int, default=60, help="steps of the Ray Train run")
    parser.add_argument("--ray-warmup", type=int, default=10, help="first Ray steps left out of the median")
    parser.add_argument("--locations", type=int, default=200, help="places of the synthetic world corpus")
    parser.add_argument("--loader-threads", type=int, default=1, help="decode threads per Ray worker")
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


# --- --ray-workers: the real training job on Ray Train vs one process -------------------------------------


def ray_environment(root: str) -> None:
    """Everything the job writes (MLflow store, .gleam home) goes under `root`; set before Ray starts."""
    os.environ.update(
        {
            "GLEAM_HOME": f"{root}/home",
            "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    os.environ.pop("GLEAM_STORE", None)


def build_corpus(root: str, locations: int, size: int) -> str:
    """A prepared synthetic world at `size` px (panoramas 2x wide); returns its URI."""
    from gleam.config import load_config
    from gleam.corpus.config import PrepareConfig
    from gleam.corpus.prepare import prepare
    from gleam.corpus.world import WorldConfig, generate_world

    generate_world(
        WorldConfig(output=f"{root}/raw", locations=locations, tile_size=size, query_size=size, seed=1)
    )
    sizes = {m: [size, size] for m in ("satellite", "drone", "streetmap", "ground")} | {
        "panorama": [2 * size, size]
    }
    overrides = [
        "name=bench",
        f"output={root}/prepared",
        "sources.0.kind=world",
        f"sources.0.uri={root}/raw",
        "tracking.enabled=false",
        *(f"sizes.{m}={json.dumps(s)}" for m, s in sizes.items()),
    ]
    return prepare(load_config(PrepareConfig, None, overrides)).corpus_uri


def ray_run(args: argparse.Namespace, spec: EncoderSpec, corpus: str, root: str) -> dict[str, Any]:
    """One run_training; its per-step `pairs_per_s` and step timestamps, read back from MLflow."""
    from mlflow import MlflowClient

    from gleam.tracking import tracking_uri
    from gleam.training.config import TrainConfig
    from gleam.training.phases import run_training

    workers = args.ray_workers
    config = TrainConfig.model_validate(
        {
            "name": "bench-train",
            "corpus": corpus,
            "modalities": [m.strip() for m in args.modalities.split(",") if m.strip()],
            "encoder": spec.model_dump(mode="json"),
            "steps": args.ray_steps,
            "batch_size": args.batch // workers,
            "precision": args.precision,
            "loader_threads": args.loader_threads,
            "scaling": {"workers": workers, "cpus_per_worker": 1},
            "checkpoint": {"every": 10**6},
            "validation": {"enabled": False},
            "registry": {"enabled": False},
            "storage_path": f"{root}/train",
            "tracking": {"experiment": "bench-train"},
        }
    )
    start_wall, start = time.time(), time.perf_counter()
    result = run_training(config)
    wall, end_wall = time.perf_counter() - start, time.time()
    client = MlflowClient(tracking_uri())
    history = sorted(client.get_metric_history(result.run_id, "pairs_per_s"), key=lambda m: m.step)
    params = client.get_run(result.run_id).data.params
    return {
        "wall": wall,
        "start": start_wall,
        "end": end_wall,
        "steps": [m.step for m in history],
        "rates": [m.value for m in history],
        "stamps": [m.timestamp / 1000 for m in history],  # logged right after each step (ms)
        "train_pairs": {k[12:]: int(v) for k, v in params.items() if k.startswith("train_pairs.")},
        "global_batch": config.batch_size * workers,
    }


def ray_section(args: argparse.Namespace) -> str:
    """Corpus, single-process repeats, the Ray Train run, single-process repeats again; the body."""
    workers = args.ray_workers
    if args.batch % workers:
        raise SystemExit(f"--batch {args.batch} must split evenly over {workers} workers")
    if args.ray_steps <= args.ray_warmup + 1:
        raise SystemExit("--ray-steps must exceed --ray-warmup + 1")
    if args.fp16_baseline:
        raise SystemExit("--ray-workers compares bf16/fp32 runs; leave out --fp16-baseline")
    device = torch.device("cpu")
    threads = args.threads or workers
    torch.set_num_threads(threads)
    spec = EncoderSpec.tiny(backbone=args.backbone, size=args.size, channels_last=args.channels_last)
    mods = [m.strip() for m in args.modalities.split(",") if m.strip()]
    root = tempfile.mkdtemp(prefix="gleam-bench-train-")
    ray_environment(root)
    import ray

    from gleam.cluster import init_ray

    init_ray(num_cpus=workers)
    started = time.perf_counter()
    corpus = build_corpus(root, args.locations, args.size)
    corpus_s = time.perf_counter() - started
    print(f"corpus ready in {corpus_s:.1f} s: {corpus}", file=sys.stderr)

    # the reference uses `threads` (the cores the workers get); 1 thread too, as OpenMP may stall on a
    # shared host; interleaved per repeat, half of the repeats before the Ray run and half after
    decode = make_decode(spec, args.batch, mods, device)
    settings = list(dict.fromkeys([threads, 1]))
    steps = {n: make_platform(spec, decode, args.precision, args.channels_last, device) for n in settings}
    single: dict[int, list[float]] = {n: [] for n in settings}

    def repeats(count: int) -> None:
        for n in settings:
            torch.set_num_threads(n)
            time_loop(steps[n], args.warmup, device)
        for _ in range(count):
            for n in settings:
                torch.set_num_threads(n)
                single[n].append(time_loop(steps[n], args.steps, device))
            print("single process: " + ", ".join(f"{s[-1]:.2f} s" for s in single.values()), file=sys.stderr)

    repeats(args.repeats // 2)
    run = ray_run(args, spec, corpus, root)
    repeats(args.repeats - args.repeats // 2)
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)  # corpus, checkpoints, MLflow store

    global_batch = run["global_batch"]
    single_rates = {n: [args.batch * args.steps / s for s in single[n]] for n in settings}
    single_rate = statistics.median(single_rates[threads])
    steady = [r for s, r in zip(run["steps"], run["rates"], strict=True) if s > args.ray_warmup]
    ray_rate = statistics.median(steady)
    # From the log timestamps: every cost of a steady step (MLflow logging, epoch turns, stragglers)
    stamps = {s: t for s, t in zip(run["steps"], run["stamps"], strict=True)}
    last = max(stamps)
    wall_rate = (last - args.ray_warmup) * global_batch / (stamps[last] - stamps[args.ray_warmup])
    first_step = global_batch / run["rates"][0]  # the first step's own time, by its logged rate
    before = stamps[min(stamps)] - run["start"] - first_step
    after = run["end"] - stamps[last]
    steps_s = run["wall"] - before - after

    def spread(rates: list[float]) -> str:
        return f"{(max(rates) - min(rates)) / statistics.median(rates):.0%}"

    header = ["mode", "processes x torch threads", "pairs/s", "x single process", "spread", "timed"]
    rows = [
        [
            "single process: decode+augment (1 thread), then platform step",
            f"1 x {n}",
            f"{statistics.median(single_rates[n]):.1f}",
            f"{statistics.median(single_rates[n]) / single_rate:.2f}",
            spread(single_rates[n]),
            f"{args.steps} steps x {args.repeats} repeats",
        ]
        for n in settings
    ]
    rows += [
        [
            f"Ray Train run_training, {workers} workers: median of logged `pairs_per_s`",
            f"{workers} x 1 (Ray's OMP_NUM_THREADS)",
            f"{ray_rate:.1f}",
            f"{ray_rate / single_rate:.2f}",
            spread(steady),
            f"steps {args.ray_warmup + 1}-{last}",
        ],
        [
            f"Ray Train run_training, {workers} workers: from step timestamps",
            f"{workers} x 1",
            f"{wall_rate:.1f}",
            f"{wall_rate / single_rate:.2f}",
            "",
            f"steps {args.ray_warmup + 1}-{last}",
        ],
    ]
    pairs = ", ".join(f"{m} {n}" for m, n in sorted(run["train_pairs"].items()))
    return (
        f"Backbone `{args.backbone}` (random init), squares {args.size} px (panoramas {2 * args.size}x"
        f"{args.size}), {args.precision}, {global_batch} pairs per global step ({'+'.join(mods)}); cpu. "
        f"Ray side: `run_training` on a synthetic world of {args.locations} places (train pairs: {pairs}), "
        f"{workers} workers x {global_batch // workers} pairs, 1 CPU and {args.loader_threads} loader "
        f"thread(s) each, {args.ray_steps} steps, checkpoint only at the end, no validation, no "
        "registration. `pairs_per_s` is what rank 0 logs per step: global pairs over its own step time "
        "(shard read, decode+augment, train_step with the DDP all-reduce), median over the steps after "
        f"{args.ray_warmup} warm-up steps. The timestamp row divides the pairs of those steps by the time "
        "between their MLflow log timestamps, so it also pays for logging and epoch turns. Single side: "
        f"JPEGs of the same sizes decoded and augmented by TrainTransform in one thread, then `train_step` "
        f"with {' or '.join(map(str, settings))} torch thread(s) on the whole batch (interleaved), "
        f"{args.steps} steps x {args.repeats} repeats, half before and half after the Ray run (median; "
        f"spread: (max - min) / median); x single process: relative to {threads} thread(s).\n\n"
        f"{markdown_table(header, rows)}\n\n"
        f"Fixed costs of the Ray run: {run['wall']:.1f} s wall in all for {last} steps; "
        f"{before:.1f} s before the first step (pair join, trainer and worker-group start, DDP set-up, "
        f"dataset shards), about {steps_s:.1f} s of steps, {after:.1f} s after the last (final checkpoint, "
        f"shutdown). Building the corpus (not counted above) took {corpus_s:.1f} s.\n"
    )


def main() -> None:
    args = parse_args()
    if args.ray_workers:
        body = ray_section(args)
        if args.no_write:
            print(body)
        else:
            append_section(f"Training under Ray Train ({args.ray_workers} workers) vs one process", body)
        return
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
