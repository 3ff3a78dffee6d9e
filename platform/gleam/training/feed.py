"""Feeding a worker: rows of a step (read from its shards by `gleam.shard_stream.ShardStream`, whose
position a checkpoint records) -> augmented micro-batches. Augmentation draws from a generator seeded
by (seed, step, rank, pair), so a resumed step also gets exactly the same crops and colours, without
any RNG state to save.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from gleam.model.spec import EncoderSpec
from gleam.model.transforms import AugmentConfig, TrainTransform
from gleam.training.step import MicroBatch

Row = dict[str, Any]


class BatchBuilder:
    """Rows of a step -> per-modality MicroBatches, decoded and augmented on a few threads.

    PIL decoding and torchvision's tensor ops release the GIL, so threads give real parallelism here.
    """

    def __init__(
        self, spec: EncoderSpec, augment: AugmentConfig, seed: int, rank: int, threads: int = 4
    ) -> None:
        self.transform = TrainTransform(spec, augment)
        self.seed = seed
        self.rank = rank
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gleam-augment")

    def build(self, rows: Mapping[str, Sequence[Row]], step: int) -> dict[str, MicroBatch]:
        out: dict[str, MicroBatch] = {}
        for m_index, (modality, modality_rows) in enumerate(sorted(rows.items())):
            jobs = [
                (row, np.random.default_rng([self.seed, step, self.rank, m_index, i]))
                for i, row in enumerate(modality_rows)
            ]
            pairs = list(
                self.pool.map(
                    lambda job, m=modality: self.transform.pair(
                        job[0]["query_image"], job[0]["tile_image"], m, job[1]
                    ),
                    jobs,
                )
            )
            out[modality] = MicroBatch(
                self.transform.normalize([p[0] for p in pairs]),
                self.transform.normalize([p[1] for p in pairs]),
                [row["tile_id"] for row in modality_rows],
            )
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def step_seed(seed: int, rank: int, step: int) -> int:
    """torch's seed for one step of one worker (dropout, drop-path): a function of the step, so resumable."""
    return (seed * 1_000_003 + rank * 7_919 + step) % 2**63


def seed_step(seed: int, rank: int, step: int) -> None:
    torch.manual_seed(step_seed(seed, rank, step))
