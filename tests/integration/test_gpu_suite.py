"""benchmarks/gpu_suite.py works before it first meets a GPU: its smoke run takes every code path on the
CPU at tiny sizes (training modes with torch.compile, FLOP count and MFU, the batch search, the Ray Data
actor pool on a local Ray, the FAISS build, the QueryEncoder's batch body), and the pieces its figures
rest on (the batch search's bisection, the grouped-convolution FLOP fix) give the right answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from gpu.capacity import Trial, search_largest  # noqa: E402
from gpu.device import hopper_class, peak_tflops  # noqa: E402
from gpu.flops import conv_backward_flop  # noqa: E402

pytestmark = pytest.mark.integration


def test_the_batch_search_doubles_then_bisects_to_the_largest_that_fits() -> None:
    tried: list[int] = []

    def fits(pairs: int) -> Trial:
        tried.append(pairs)
        return Trial(pairs, pairs <= 37, 0.0, images_per_s=float(pairs) if pairs <= 37 else None)

    found = search_largest(fits, start=4, cap=1024, granularity=1, time_cap_s=60)
    assert (found["largest_pairs"], found["first_failing_pairs"], found["limited_by"]) == (37, 38, "oom")
    assert tried[:5] == [4, 8, 16, 32, 64]  # doubling until the first failure, then bisection
    assert found["images_per_s_at_largest"] == 37.0

    coarse = search_largest(fits, start=4, cap=1024, granularity=8, time_cap_s=60)
    assert coarse["limited_by"] == "oom" and 37 - 8 < coarse["largest_pairs"] <= 37
    assert search_largest(fits, 4, 16, 1, 60)["limited_by"] == "cap"
    assert search_largest(fits, 64, 1024, 1, 60)["largest_pairs"] == 37  # the start itself too large
    clock = iter(range(0, 1000, 10))
    timed_out = search_largest(fits, 4, 1024, 1, time_cap_s=15, clock=lambda: next(clock))
    assert timed_out["limited_by"] == "time" and timed_out["largest_pairs"] < 37


def test_a_depthwise_convolution_backward_costs_twice_its_forward() -> None:
    """torch's own formula ignores `groups` (x channels for a depthwise conv); the suite's does not."""
    conv = torch.nn.Conv2d(64, 64, 7, padding=3, groups=64)
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    with FlopCounterMode(display=False) as forward:
        conv(x)
    fixed = FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop}
    )
    with fixed:
        conv(x).sum().backward()
    assert fixed.get_total_flops() == 3 * forward.get_total_flops()


@pytest.mark.parametrize(
    ("name", "tflops", "hopper"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0, True),
        ("NVIDIA H100 PCIe", 756.0, True),
        ("NVIDIA H100 NVL", 835.0, True),
        ("NVIDIA H200", 989.0, True),
        ("NVIDIA GH200 480GB", 989.0, True),
        ("NVIDIA A100-SXM4-80GB", 312.0, False),
        ("NVIDIA A10", 125.0, False),
        ("NVIDIA L40S", 362.0, False),
        ("NVIDIA L4", 121.0, False),
        ("NVIDIA GeForce RTX 3060", None, False),
    ],
)
def test_the_peak_comes_from_the_gpu_name(name: str, tflops: float | None, hopper: bool) -> None:
    assert peak_tflops(name, None)[0] == tflops
    assert hopper_class(name) is hopper
    assert peak_tflops(name, 123.0) == (123.0, "given with --peak-tflops")


def test_the_smoke_run_measures_every_part_on_the_cpu(tmp_path: Path) -> None:
    env = os.environ | {"GLEAM_HOME": str(tmp_path / "home"), "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--smoke", "--out", str(tmp_path / "out"),
               "--peak-tflops", "0.5"]  # fmt: skip
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads((tmp_path / "out" / "gpu_suite.json").read_text())
    results = figures["results"]
    assert set(results) == {"training", "capacity", "embedding", "faiss", "serving"}
    assert not [part for part, result in results.items() if "error" in result]

    training = results["training"]
    assert training["flops_per_image"] > 0
    assert len(training["rows"]) == 3  # Sample4Geo-style, platform eager, platform compiled
    for row in training["rows"]:
        assert row["images_per_s"] > 0 and 0 < row["mfu"] < 1
    assert training["compile_x_eager"] > 0 and training["best_x_sample4geo"] > 0

    capacity = results["capacity"]
    assert capacity["largest_pairs"] == 8 and capacity["limited_by"] == "cap"  # the smoke cap
    assert capacity["images_per_s_at_largest"] > 0

    embedding = results["embedding"]
    assert embedding["pool"]["tiles_per_s"] > 0 and embedding["tiles"] == 24
    assert embedding["decode_tiles_per_s_one_thread"] > 0 and embedding["forward_tiles_per_s"] > 0

    faiss = results["faiss"]
    assert faiss["n"] == 10_000 and faiss["rows"][0]["total_s"] > 0
    assert faiss["rows"][0]["recall_at_10"] > 0.3
    assert "no GPU support" in faiss["gpu_skipped"]  # faiss-cpu: the GPU rows say why they are missing

    serving = results["serving"]
    assert [r["batch"] for r in serving["rows"]] == [1, 8, 32]
    assert all(r["p50_ms"] > 0 and r["images_per_s"] > 0 for r in serving["rows"])

    assert figures["device"]["type"] == "cpu" and [g["met"] for g in figures["goals"]] == [None, None]
    assert "### Goals" in run.stdout and "not judged on a CPU" in run.stdout


def test_without_a_gpu_it_says_so_and_exits_zero(tmp_path: Path) -> None:
    env = os.environ | {"CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--out", str(tmp_path)]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0
    assert run.stdout.strip().splitlines() == [
        "gpu_suite: no CUDA GPU here; nothing measured (use --smoke to run its code paths on the CPU)"
    ]
    assert not (tmp_path / "gpu_suite.json").exists()
