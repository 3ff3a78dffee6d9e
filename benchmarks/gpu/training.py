"""(a) The training step: the platform's `train_step` (bf16 autocast + channels_last, eager and under
torch.compile) vs a Sample4Geo-style loop (AdamW, fp16 autocast, GradScaler, InfoNCE), same batch.

The step factories are benchmarks/train_step.py's, so this measures exactly what that script compares.
Modes run one after another, each alone on the device (the previous one freed), so the peak memory of
a row is its own model, gradients, optimizer state and activations, plus the shared input batch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from train_step import build_inputs, make_plain, make_platform, time_loop

from gleam.model.spec import EncoderSpec
from gpu.device import peak_gib, release, sync
from gpu.flops import step_flops_per_image
from gpu.sizes import Sizes

SAMPLE4GEO = "Sample4Geo-style loop: AdamW, fp16 autocast + GradScaler, NCHW"
EAGER = "platform train_step: bf16 autocast + channels_last"


def compiled_label(backend: str) -> str:
    return f"{EAGER} + torch.compile ({backend})"


def measure_mode(
    label: str, factory: Callable[[], Callable[[], object]], images: int, sizes: Sizes, device: torch.device
) -> dict[str, Any]:
    """Build one mode, run its warm-up (the first step compiles, if it does), then the timed repeats."""
    release(device)
    started = time.perf_counter()
    step = factory()
    step()
    sync(device)
    first_step_s = time.perf_counter() - started
    for _ in range(sizes.warmup - 1):
        step()
    seconds = [time_loop(step, sizes.steps, device) for _ in range(sizes.repeats)]
    peak = peak_gib(device)
    del step
    release(device)
    median = statistics.median(seconds)
    return {
        "mode": label,
        "images_per_step": images,
        "images_per_s": images * sizes.steps / median,
        "step_ms": 1000 * median / sizes.steps,
        "spread": (max(seconds) - min(seconds)) / median,
        "peak_memory_gib": peak,
        "first_step_s": first_step_s,
    }


def measure_training(
    sizes: Sizes, device: torch.device, peak_tflops: float | None, compile_step: bool = True
) -> dict[str, Any]:
    """Rows per mode with images/s, peak memory and MFU; ratios to the Sample4Geo-style loop."""
    spec = EncoderSpec.tiny(backbone=sizes.backbone, size=sizes.image)
    flops = step_flops_per_image(spec, device, "bf16")
    release(device)
    # one batch of random images; the plain loop takes it as Sample4Geo's loader gives it (NCHW), the
    # platform as its MicroBatch.to(device, channels_last=True) does: the same values
    nchw = build_inputs(spec, sizes.pairs, ["drone"], device, channels_last=False)
    nhwc = build_inputs(spec, sizes.pairs, ["drone"], device, channels_last=True)
    images = 2 * sizes.pairs
    modes: dict[str, Callable[[], Callable[[], object]]] = {
        SAMPLE4GEO: lambda: make_plain(spec, nchw["drone"], "fp16", False),
        EAGER: lambda: make_platform(spec, nhwc, "bf16", True, device),
    }
    if compile_step:
        backend = sizes.compile_backend

        def wrap(model: torch.nn.Module) -> torch.nn.Module:
            return torch.compile(model, backend=backend)  # as gleam.training.loop does with `compile`

        modes[compiled_label(backend)] = lambda: make_platform(spec, nhwc, "bf16", True, device, wrap)
    rows = []
    for label, factory in modes.items():
        row = measure_mode(label, factory, images, sizes, device)
        row["mfu"] = row["images_per_s"] * flops / (peak_tflops * 1e12) if peak_tflops else None
        rows.append(row)
        print(f"  {label}: {row['images_per_s']:.1f} images/s", flush=True)
    if compile_step:
        torch._dynamo.reset()  # the compiled graphs hold device memory the next parts may want
    base = rows[0]["images_per_s"]
    for row in rows:
        row["x_sample4geo"] = row["images_per_s"] / base
    platform_rows = rows[1:]
    best = max(platform_rows, key=lambda r: r["images_per_s"])
    eager_rate = platform_rows[0]["images_per_s"]
    compiled = platform_rows[1]["images_per_s"] / eager_rate if compile_step else None
    return {
        "backbone": sizes.backbone,
        "image_px": sizes.image,
        "pairs_per_step": sizes.pairs,
        "flops_per_image": flops,
        "rows": rows,
        "compile_x_eager": compiled,
        "compile_pays": compiled is not None and compiled > 1.02,
        "best_platform": best["mode"],
        "best_x_sample4geo": best["x_sample4geo"],
        "best_mfu": best["mfu"],
    }
