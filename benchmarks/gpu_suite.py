"""Every GPU figure of the platform in one short run: training step, largest batch, index embedding,
FAISS IVF build, Serve encoder latency. Self-contained: synthetic data, random-init weights, no network.

    python benchmarks/gpu_suite.py --out gpu-results            # one GPU, under 8 minutes
    python benchmarks/gpu_suite.py --quick --out gpu-results    # a smaller first look
    python benchmarks/gpu_suite.py --out gpu-results --record   # also append to docs/benchmarks.md
    python benchmarks/gpu_suite.py --smoke --out /tmp/smoke     # every code path, tiny, on the CPU

Without a GPU (and without --smoke) it prints one line and exits 0. Figures go to DIR/gpu_suite.json and
to a table on stdout; docs/gpu.md says what each row measures and how to read it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from report import append_section, command, markdown_table

PARTS = ("training", "capacity", "embedding", "faiss", "serving")
GOAL_SPEEDUP = 1.5  # platform step vs the Sample4Geo-style loop, images/s
GOAL_MFU = 0.40  # on an H100/H200-class GPU


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-suite-results"), help="folder for the JSON")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer steps, 200k vectors, 512 tiles")
    size.add_argument(
        "--smoke", action="store_true", help="tiny sizes; runs on the CPU when no GPU is present"
    )
    parser.add_argument("--record", action="store_true", help="append the tables to docs/benchmarks.md")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak dense bf16 TFLOP/s")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile row")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {PARTS}")
    if args.record and args.smoke:
        parser.error("--record writes benchmark figures; a smoke run's are not (leave out --smoke)")
    return args


def fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


# --- tables ---------------------------------------------------------------------------------------------


def training_table(result: dict[str, Any], peak: str) -> str:
    header = [
        "mode",
        "images/s",
        "x Sample4Geo",
        "ms/step",
        "peak memory GiB",
        "MFU",
        "first step s",
        "spread",
    ]
    rows = [
        [
            r["mode"],
            fmt(r["images_per_s"]),
            fmt(r["x_sample4geo"], 2),
            fmt(r["step_ms"]),
            fmt(r["peak_memory_gib"], 2),
            pct(r["mfu"]),
            fmt(r["first_step_s"]),
            pct(r["spread"]),
        ]
        for r in result["rows"]
    ]
    compiled = result["compile_x_eager"]
    verdict = (
        "not measured (--no-compile)"
        if compiled is None
        else f"{compiled:.2f}x eager: {'it pays' if result['compile_pays'] else 'it does not pay here'}"
    )
    return (
        f"`{result['backbone']}` at {result['image_px']} px, random init, {result['pairs_per_step']} "
        f"query/tile pairs ({2 * result['pairs_per_step']} images) per step, one device. FLOPs per image "
        f"(forward+backward, FlopCounterMode with a grouped-convolution backward fix): "
        f"{result['flops_per_image'] / 1e9:.4g} GFLOP; peak: {peak}. torch.compile: {verdict}.\n\n"
        + markdown_table(header, rows)
    )


def capacity_table(result: dict[str, Any]) -> str:
    header = ["largest batch (pairs)", "images", "first failing (pairs)", "limited by", "images/s there",
              "peak memory GiB", "tries", "search s"]  # fmt: skip
    row = [
        result["largest_pairs"] or "none fit",
        result["largest_images"] or "-",
        result["first_failing_pairs"] or "-",
        result["limited_by"],
        fmt(result["images_per_s_at_largest"]),
        fmt(result["peak_memory_gib_at_largest"], 2),
        len(result["trials"]),
        fmt(result["seconds"]),
    ]
    return f"{result['step']}; cap {result['cap_pairs']} pairs.\n\n" + markdown_table(header, [row])


def embedding_table(result: dict[str, Any]) -> str:
    pool = result["pool"]
    header = ["what", "tiles/s", "note"]
    rows = [
        [
            f"actor pool (embed_tiles), {pool['actors']} actor(s) x {pool['gpus_per_actor']:g} GPU",
            fmt(pool["tiles_per_s"]),
            f"{result['tiles']} tiles in {pool['seconds']:.1f} s, {pool['precision']}",
        ],
        [
            "actor pool past its fixed costs",
            fmt(pool["tiles_per_s_past_fixed_costs"]),
            f"fixed costs {fmt(pool['fixed_seconds'])} s (Ray Data start, actor start, model load)"
            if pool["tiles_per_s_past_fixed_costs"]
            else "one call only (smoke run): no split",
        ],
        ["decode + eval transform alone, one thread", fmt(result["decode_tiles_per_s_one_thread"]), "CPU"],
        [
            "encoder forward alone on ready tensors",
            fmt(result["forward_tiles_per_s"]),
            "the device's ceiling",
        ],
    ]
    return (
        f"`{result['backbone']}` at {result['tile_px']} px, random init, batches of {result['batch']}; "
        f"{pool['cpus_per_actor']:g} CPUs per actor; synthetic world corpus built in "
        f"{result['corpus_seconds']:.0f} s (not counted).\n\n" + markdown_table(header, rows)
    )


def faiss_table(result: dict[str, Any]) -> str:
    header = ["build", "train s", "add s", "total s", "x CPU", "recall@10"]
    rows = [
        [r["build"], fmt(r["train_s"], 2), fmt(r["add_s"], 2), fmt(r["total_s"], 2), fmt(r["x_cpu"], 2),
         fmt(r["recall_at_10"], 3)]
        for r in result["rows"]
    ]  # fmt: skip
    skipped = f" GPU rows skipped: {result['gpu_skipped']}." if result["gpu_skipped"] else ""
    return (
        f"{result['n']:,} x {result['dim']} clustered unit vectors, key `{result['key']}` (the planner's), "
        f"trained on {result['train_size']:,}, recall at nprobe {result['nprobe']}; faiss "
        f"{result['faiss']}.{skipped}\n\n" + markdown_table(header, rows)
    )


def serving_table(result: dict[str, Any]) -> str:
    header = ["batch", "p50 ms", "p90 ms", "ms per image", "images/s", "forward alone p50 ms"]
    rows = [
        [r["batch"], fmt(r["p50_ms"], 2), fmt(r["p90_ms"], 2), fmt(r["ms_per_image"], 2),
         fmt(r["images_per_s"]), fmt(r["forward_p50_ms"], 2)]
        for r in result["rows"]
    ]  # fmt: skip
    return (
        f"QueryEncoder's batch body (decode, transform, forward, fusion), `{result['backbone']}` at "
        f"{result['image_px']} px, {result['precision']}, one image per request.\n\n"
        + markdown_table(header, rows)
    )


TITLES = {
    "training": "Training step: platform vs Sample4Geo-style loop",
    "capacity": "Largest batch that fits",
    "embedding": "Index embedding with the actor pool",
    "faiss": "FAISS IVF build: CPU vs GPU",
    "serving": "Serve QueryEncoder batch latency",
}


# --- goals ----------------------------------------------------------------------------------------------


def goals(results: dict[str, Any], device: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's two goals, judged only where they apply (a GPU run; MFU on H100/H200 class)."""
    from gpu.device import hopper_class

    training = results.get("training")
    if not isinstance(training, dict) or "rows" not in training:
        return [{"goal": "training goals", "met": None, "why": "training part not run or failed"}]
    on_gpu = device["type"] == "cuda"
    speed = training["best_x_sample4geo"]
    mfu = training["best_mfu"]
    speed_goal = {
        "goal": f"platform step >= {GOAL_SPEEDUP}x the Sample4Geo-style loop's images/s",
        "value": round(speed, 3),
        "met": speed >= GOAL_SPEEDUP if on_gpu else None,
        "why": f"best platform row: {training['best_platform']}" if on_gpu else "not judged on a CPU",
    }
    if not on_gpu:
        mfu_why, mfu_met = "not judged on a CPU", None
    elif not hopper_class(str(device.get("name", ""))):
        mfu_why, mfu_met = "the goal is for H100/H200-class GPUs; reported, not judged", None
    elif mfu is None:
        mfu_why, mfu_met = "no peak FLOP/s for this device (--peak-tflops)", None
    else:
        mfu_why, mfu_met = f"best platform row: {training['best_platform']}", mfu >= GOAL_MFU
    mfu_goal = {
        "goal": f"platform step >= {GOAL_MFU:.0%} MFU on H100/H200-class",
        "value": None if mfu is None else round(mfu, 4),
        "met": mfu_met,
        "why": mfu_why,
    }
    return [speed_goal, mfu_goal]


def goals_table(items: list[dict[str, Any]]) -> str:
    verdict = {True: "met", False: "NOT met", None: "not judged"}
    rows = [
        [g["goal"], "n/a" if g.get("value") is None else g["value"], verdict[g["met"]], g["why"]]
        for g in items
    ]
    return markdown_table(["goal", "value", "verdict", "note"], rows)


# --- run ------------------------------------------------------------------------------------------------


def run_parts(args: argparse.Namespace, device: Any, sizes: Any, peak: float | None, workdir: Path) -> dict:
    from gpu.capacity import measure_capacity
    from gpu.device import release
    from gpu.embedding import measure_embedding
    from gpu.faiss_build import measure_faiss
    from gpu.serving import measure_serving
    from gpu.training import measure_training

    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "training": lambda: measure_training(sizes, device, peak, compile_step=not args.no_compile),
        "capacity": lambda: measure_capacity(sizes, device),
        "embedding": lambda: measure_embedding(sizes, device, workdir / "embedding"),
        "faiss": lambda: measure_faiss(sizes, workdir),
        "serving": lambda: measure_serving(sizes, device, workdir / "serving"),
    }
    results: dict[str, Any] = {}
    for part in args.parts:
        print(f"[{part}] ...", flush=True)
        started = time.perf_counter()
        try:
            results[part] = runners[part]()
        except Exception as exc:  # one failed part must not cost the GPU slot's other figures
            traceback.print_exc()
            results[part] = {"error": f"{type(exc).__name__}: {exc}"}
        release(device)  # whatever a part (or its failure) left on the device is not the next one's
        results[part]["part_seconds"] = time.perf_counter() - started
        print(f"[{part}] {results[part]['part_seconds']:.1f} s", flush=True)
    return results


def report_body(results: dict[str, Any], device: dict[str, Any], peak_text: str, goal_items: list) -> str:
    tables = {
        "training": lambda r: training_table(r, peak_text),
        "capacity": capacity_table,
        "embedding": embedding_table,
        "faiss": faiss_table,
        "serving": serving_table,
    }
    gpu = (
        f"{device['name']}, {device.get('memory_gib')} GiB, driver {device.get('driver')}, CUDA "
        f"{device.get('cuda')}, torch {device['torch']}"
        if device["type"] == "cuda"
        else f"{device['name']}, torch {device['torch']}"
    )
    sections = [f"Device: {gpu}. Wall time of the suite: {results['_wall_s']:.0f} s."]
    for part, title in TITLES.items():
        if part not in results:
            continue
        result = results[part]
        body = f"failed: {result['error']}" if "error" in result else tables[part](result)
        sections.append(f"### {title} ({result['part_seconds']:.0f} s)\n\n{body}")
    sections.append("### Goals\n\n" + goals_table(goal_items))
    return "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gpu.device import describe, peak_tflops, pick_device
    from gpu.sizes import FULL, QUICK, SMOKE

    device = pick_device(args.smoke)
    if device is None:
        print("gpu_suite: no CUDA GPU here; nothing measured (use --smoke to run its code paths on the CPU)")
        return 0
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    if device.type == "cpu":
        import torch

        torch.set_num_threads(1)  # a shared CPU: more threads than free cores stall in OpenMP
    info = describe(device)
    peak, peak_text = peak_tflops(str(info["name"]), args.peak_tflops)
    if device.type == "cpu" and not args.peak_tflops:
        peak, peak_text = None, "no peak for a CPU: pass --peak-tflops for MFU"
    print(f"gpu_suite ({sizes.name}) on {info['name']}; peak {peak_text}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="gleam-gpu-suite-"))
    started = time.perf_counter()
    try:
        results = run_parts(args, device, sizes, peak, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["_wall_s"] = time.perf_counter() - started
    goal_items = goals(results, info)
    body = report_body(results, info, peak_text, goal_items)
    print(body)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {
        "command": command(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "sizes": asdict(sizes),
        "device": info,
        "peak_tflops": peak,
        "peak_source": peak_text,
        "wall_seconds": results.pop("_wall_s"),
        "results": results,
        "goals": goal_items,
    }
    out = args.out / "gpu_suite.json"
    out.write_text(json.dumps(figures, indent=2, default=str))
    print(f"figures: {out}")
    if args.record:
        append_section(f"GPU suite ({sizes.name}): {info['name']}", body)
    failed = [p for p, r in results.items() if "error" in r]
    if failed:
        print(f"gpu_suite: parts failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
