"""Config sections both Ray Train jobs share (GLEAM-C training and the GLEAM-X fine-tune): the worker
group, the checkpoint policy and Adam's betas. One definition, so a field means the same in both files."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from gleam.config import StrictModel


def _betas_in_range(value: tuple[float, float]) -> tuple[float, float]:
    if not all(0 <= b < 1 for b in value):
        raise ValueError(f"betas must be in [0, 1), got {value}")
    return value


Betas = Annotated[tuple[float, float], AfterValidator(_betas_in_range)]


class ScalingSection(StrictModel):
    """How many Ray Train workers and what each reserves."""

    workers: int = Field(
        1, ge=1, description="data-parallel workers (one process each; one GPU each on GPUs)"
    )
    use_gpu: bool | Literal["auto"] = Field("auto", description="auto: GPUs when the cluster has them")
    cpus_per_worker: float = Field(1.0, gt=0, description="fractions leave CPUs to Ray Data on small hosts")


class CheckpointSection(StrictModel):
    every: int = Field(
        100, ge=1, description="optimiser steps between checkpoints (the last step always has one)"
    )
    keep: int = Field(2, ge=1, description="how many recent checkpoints to keep")
    max_failures: int = Field(3, ge=-1, description="worker-group restarts from the last checkpoint; -1: any")
