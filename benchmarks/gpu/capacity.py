"""(b) The largest batch of the platform's step that fits on the device, found by trying.

Batches double from a start until one runs out of memory, then bisect between the last that fit and
the first that did not, down to a resolution, within a time cap; each try is a fresh model, optimizer
and batch, and two steps (the first allocates the optimizer state, the second is the steady peak).
Out of memory is `torch.cuda.OutOfMemoryError`, or the RuntimeError cuDNN/cuBLAS raise when their
workspace cannot be allocated; after one, everything of the try is dropped and the cache emptied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from train_step import build_inputs, make_platform, time_loop

from gleam.model.spec import EncoderSpec
from gpu.device import peak_gib, release, sync
from gpu.sizes import Sizes

OOM_MARKERS = ("out of memory", "ALLOC_FAILED")


@dataclass
class Trial:
    pairs: int
    fits: bool
    seconds: float  # wall time of the try, model build included
    images_per_s: float | None = None  # of the timed step(s), when it fit
    peak_memory_gib: float | None = None
    error: str = ""


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or any(m in str(exc) for m in OOM_MARKERS)


def try_batch(spec: EncoderSpec, device: torch.device, pairs: int, timed_steps: int = 1) -> Trial:
    """Build, step once, then time `timed_steps` more; out of memory anywhere -> fits=False."""
    release(device)
    started = time.perf_counter()
    error = ""
    rate = None
    try:
        batch = build_inputs(spec, pairs, ["drone"], device, channels_last=True)
        step = make_platform(spec, batch, "bf16", True, device)
        step()
        sync(device)
        rate = 2 * pairs * timed_steps / time_loop(step, timed_steps, device)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
        if not is_oom(exc):
            raise
        error = str(exc).splitlines()[0][:160]
    batch = step = None  # drop the try's tensors before the cache is emptied
    peak = peak_gib(device)
    release(device)
    return Trial(pairs, not error, time.perf_counter() - started, rate, peak, error)


def search_largest(
    fits: Callable[[int], Trial],
    start: int,
    cap: int,
    granularity: int,
    time_cap_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Doubling from `start` (at most `cap`), then bisection to `granularity`, while time is left.

    `limited_by` says what ended the search: "oom" (bracketed to the resolution), "cap" (everything
    up to `cap` fit) or "time" (the cap ran out first: the largest is a lower bound).
    """
    began = clock()
    trials: list[Trial] = []

    def attempt(pairs: int) -> bool:
        trial = fits(pairs)
        trials.append(trial)
        return trial.fits

    def out_of_time() -> bool:
        return clock() - began > time_cap_s

    low, high = 0, None  # largest that fit, smallest that did not
    pairs = max(1, min(start, cap))
    while True:
        if attempt(pairs):
            low = pairs
            if pairs >= cap:
                break
            pairs = min(2 * pairs, cap)
        else:
            high = pairs
            break
        if out_of_time():
            break
    while high is not None and high - low > granularity and not out_of_time():
        middle = (low + high) // 2
        if granularity > 1:
            middle = max(low + 1, middle - middle % granularity)
        if attempt(middle):
            low = middle
        else:
            high = middle
    if high is None:
        limited_by = "cap" if low >= cap else "time"
    else:
        limited_by = "oom" if high - low <= granularity else "time"
    best = next((t for t in trials if t.fits and t.pairs == low), None)
    return {
        "largest_pairs": low or None,
        "largest_images": 2 * low if low else None,
        "first_failing_pairs": high,
        "limited_by": limited_by,
        "images_per_s_at_largest": best.images_per_s if best else None,
        "peak_memory_gib_at_largest": best.peak_memory_gib if best else None,
        "seconds": clock() - began,
        "trials": [asdict(t) for t in trials],
    }


def measure_capacity(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """The search on the platform's eager bf16 + channels_last step at the suite's backbone and size."""
    spec = EncoderSpec.tiny(backbone=sizes.backbone, size=sizes.image)
    result = search_largest(
        lambda pairs: try_batch(spec, device, pairs),
        sizes.capacity_start,
        sizes.capacity_cap,
        sizes.capacity_granularity,
        sizes.capacity_seconds,
    )
    for trial in result["trials"]:
        print(f"  {trial['pairs']} pairs: {'fits' if trial['fits'] else 'out of memory'}", flush=True)
    result.update(step="platform train_step, bf16 + channels_last, eager", cap_pairs=sizes.capacity_cap)
    return result
