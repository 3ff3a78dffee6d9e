"""Feeding a worker: endless rows from its Ray Data shards, and rows -> augmented micro-batches.

A worker's shard of one modality is read epoch after epoch; the position in it is (epoch, rows
consumed in that epoch), which is what a checkpoint records. Shards are deterministic when the
datasets run with `preserve_order` (Ray Data's split then hands blocks out in a fixed order, see
`phases.py`), so a resumed worker that skips the consumed rows of the epoch continues with exactly
the rows it would have seen. Augmentation draws from a generator seeded by (seed, step, rank, pair),
so a resumed step also gets exactly the same crops and colours, without any RNG state to save.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from gleam.model.spec import EncoderSpec
from gleam.model.transforms import AugmentConfig, TrainTransform
from gleam.training.step import MicroBatch

Row = dict[str, Any]
_READ_BATCH = 64


class EmptyShardError(RuntimeError):
    """A worker's shard of a modality holds no rows: too few pairs for this many workers."""


class ShardStream:
    """Rows of one modality's shard, forever, with a resumable position (epoch, consumed)."""

    def __init__(
        self,
        shard: Any,  # ray.data.DataIterator
        modality: str,
        seed: int,
        rank: int,
        shuffle_buffer: int = 0,
        epoch: int = 0,
        consumed: int = 0,
    ) -> None:
        self.shard = shard
        self.modality = modality
        self.seed = seed
        self.rank = rank
        self.shuffle_buffer = shuffle_buffer
        self.epoch = epoch
        self.consumed = consumed
        self._rows: Iterator[Row] | None = None

    def __iter__(self) -> ShardStream:
        return self

    def __next__(self) -> Row:
        while True:
            if self._rows is None:
                self._rows = self._epoch_rows(skip=self.consumed)
            try:
                row = next(self._rows)
            except StopIteration:
                if self.consumed == 0:
                    raise EmptyShardError(
                        f"worker {self.rank} got no {self.modality} pairs: the corpus has fewer pairs of "
                        "this modality than there are workers"
                    ) from None
                self.epoch, self.consumed, self._rows = self.epoch + 1, 0, None
                continue
            self.consumed += 1
            return row

    def _epoch_rows(self, skip: int) -> Iterator[Row]:
        shuffle: dict[str, Any] = {}
        if self.shuffle_buffer:
            shuffle = {
                "local_shuffle_buffer_size": self.shuffle_buffer,
                "local_shuffle_seed": (self.seed * 1_000_003 + self.epoch * 7_919 + self.rank) % 2**31,
            }
        seen = 0
        for batch in self.shard.iter_batches(batch_size=_READ_BATCH, batch_format="pyarrow", **shuffle):
            if seen + batch.num_rows <= skip:
                seen += batch.num_rows
                continue
            rows = batch.to_pylist()
            start = max(0, skip - seen)
            seen += batch.num_rows
            yield from rows[start:]

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}


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
