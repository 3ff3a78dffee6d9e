"""What the suite runs on: the device, its description for the record, and its peak bf16 FLOP/s.

Model-FLOP utilisation needs the device's peak; GPUs do not report it, so it comes from a table of
datasheet figures (dense bf16 tensor-core TFLOP/s, no sparsity) matched on the name torch gives, or
from `--peak-tflops`. A GPU that is not in the table gets no MFU rather than a guessed one.
"""

from __future__ import annotations

import gc
import platform
import re
import subprocess

import torch

# (pattern on torch.cuda.get_device_name(), dense bf16 TFLOP/s, what the figure is); first match wins,
# so the specific names come before the general ones.
PEAK_BF16_TFLOPS: tuple[tuple[str, float, str], ...] = (
    (r"\bGH200\b", 989.0, "GH200 (H100 SXM-class tensor cores)"),
    (r"\bH200\b", 989.0, "H200"),
    (r"\bH100\b.*\bNVL\b", 835.0, "H100 NVL"),
    (r"\bH100\b.*\bPCIe\b", 756.0, "H100 PCIe"),
    (r"\bH100\b", 989.0, "H100 SXM"),
    (r"\bH800\b", 989.0, "H800 SXM"),
    (r"\bB200\b", 2250.0, "B200"),
    (r"\bA100\b", 312.0, "A100"),
    (r"\bA800\b", 312.0, "A800"),
    (r"\bL40S\b", 362.0, "L40S"),
    (r"\bL40\b", 181.0, "L40"),
    (r"\bL4\b", 121.0, "L4"),
    (r"\bA10\b", 125.0, "A10"),
)
HOPPER_CLASS = re.compile(r"\b(GH200|H200|H100|H800)\b")


def pick_device(smoke: bool) -> torch.device | None:
    """CUDA when present; the CPU only for a smoke run; None: nothing to measure here."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if smoke else None


def peak_tflops(name: str, given: float | None) -> tuple[float | None, str]:
    """(dense bf16 TFLOP/s, where it came from) for a device name; `given` (--peak-tflops) wins."""
    if given:
        return given, "given with --peak-tflops"
    for pattern, tflops, label in PEAK_BF16_TFLOPS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return tflops, f"datasheet, {label}, dense bf16"
    return None, f"unknown device {name!r}: pass --peak-tflops for MFU"


def hopper_class(name: str) -> bool:
    """H100/H200-class: where the suite's MFU goal applies."""
    return bool(HOPPER_CLASS.search(name))


def nvidia_driver() -> str:
    """The driver version nvidia-smi reports, or 'unknown' where it is not installed."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def describe(device: torch.device) -> dict[str, object]:
    """The device for the record: name, memory, driver, CUDA and torch versions."""
    info: dict[str, object] = {
        "type": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=torch.cuda.get_device_name(device),
            memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            driver=nvidia_driver(),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            gpus=torch.cuda.device_count(),
        )
    else:
        info.update(name=f"CPU ({platform.machine()}), {torch.get_num_threads()} torch threads")
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    """Drop what the last measurement left, so the next one starts from an empty device."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """torch.cuda.max_memory_allocated since the last `release`, in GiB (None on CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30
