"""The one sizing rule of model-running actor pools, and the trainers' precision setting."""

from __future__ import annotations

import pytest

from gleam.resources import PoolSize, size_pool, train_precision


@pytest.mark.parametrize(
    ("num_gpus", "actors", "gpus", "expected"),
    [
        (None, None, 0.0, PoolSize(1, 0.0)),  # a CPU cluster: one actor, no GPU
        (None, None, 4.0, PoolSize(4, 1.0)),  # one actor per GPU
        (0.5, None, 4.0, PoolSize(8, 0.5)),  # fractional GPUs: more actors
        (None, 2, 4.0, PoolSize(2, 1.0)),  # a configured count wins
        (0.0, None, 4.0, PoolSize(1, 0.0)),  # GPUs declined: one CPU actor
    ],
)
def test_pools_take_one_actor_per_gpu_or_one_on_cpu(num_gpus, actors, gpus, expected) -> None:
    assert size_pool(num_gpus, actors, gpus) == expected


def test_auto_precision_is_fp32_without_a_gpu_and_kept_otherwise() -> None:
    assert PoolSize(1, 0.0).cpu_precision("auto") == "fp32"
    assert PoolSize(1, 1.0).cpu_precision("auto") == "auto"  # the actor resolves it on its device
    assert PoolSize(1, 0.0).cpu_precision("bf16") == "bf16"
    assert train_precision("auto", "cuda") == "bf16" and train_precision("auto", "cpu") == "fp32"
    assert train_precision("fp16", "cuda") == "fp16"
