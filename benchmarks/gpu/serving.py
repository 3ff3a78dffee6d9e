"""(d) The Serve QueryEncoder's batch latency on the device at batch 1/8/32.

The replica class is constructed in-process (`QueryEncoder.func_or_class`, as the embedding-path test
does) and its batch body (`embed`, unwrapped from `@serve.batch`) answers b one-image requests at once:
decode and eval transform of every JPEG, one forward, per-request fusion. The forward alone on ready
tensors, at the same batch, separates the device's share from the CPU's.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gleam.model.spec import EncoderSpec
from gpu.device import release, sync
from gpu.embedding import save_encoder
from gpu.sizes import Sizes


def photo_jpegs(count: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """Smooth noise plus grain, photo-like in JPEG size (white noise would decode slower)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        smooth = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize(
            size, Image.BICUBIC
        )
        grain = np.asarray(smooth, dtype=np.int16) + rng.integers(-12, 13, (size[1], size[0], 3))
        buffer = io.BytesIO()
        Image.fromarray(grain.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure_serving(sizes: Sizes, device: torch.device, workdir: Path) -> dict[str, Any]:
    from serve.encoder import QueryEncoder

    spec = EncoderSpec.tiny(backbone=sizes.backbone, size=sizes.image)
    uri, fingerprint, _ = save_encoder(spec, workdir / "query-encoder")
    largest = max(sizes.serve_batches)
    replica = QueryEncoder.func_or_class(uri, fingerprint, {"max_batch_size": largest})
    answer_batch = QueryEncoder.func_or_class.embed.__wrapped__
    jpegs = photo_jpegs(largest, spec.size("drone"))
    loop = asyncio.new_event_loop()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(replica.precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    rows = []
    try:
        for batch in sizes.serve_batches:
            requests = [("drone", [jpeg]) for jpeg in jpegs[:batch]]
            latencies = []
            for call in range(2 + sizes.serve_calls):  # two warm-up calls per batch size
                started = time.perf_counter()
                vectors = loop.run_until_complete(answer_batch(replica, requests))
                if call >= 2:
                    latencies.append(1000 * (time.perf_counter() - started))
            assert len(vectors) == batch
            width, height = spec.size("drone")
            ready = torch.randn(batch, 3, height, width, device=device)
            forward = []
            with torch.inference_mode(), autocast():
                for call in range(2 + sizes.serve_calls):
                    sync(device)
                    started = time.perf_counter()
                    replica.encoder.encode(ready, "drone")
                    sync(device)
                    if call >= 2:
                        forward.append(1000 * (time.perf_counter() - started))
            p50 = statistics.median(latencies)
            rows.append(
                {
                    "batch": batch,
                    "p50_ms": p50,
                    "p90_ms": percentile(latencies, 90),
                    "ms_per_image": p50 / batch,
                    "images_per_s": 1000 * batch / p50,
                    "forward_p50_ms": statistics.median(forward),
                }
            )
            print(f"  batch {batch}: p50 {p50:.1f} ms", flush=True)
    finally:
        loop.close()
    precision = replica.precision
    del replica
    release(device)
    return {"backbone": sizes.backbone, "image_px": sizes.image, "precision": precision, "rows": rows}
