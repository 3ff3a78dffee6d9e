"""A Ray Train worker's dataset shard read epoch after epoch, with a position a checkpoint can record.

The position is (epoch, rows consumed in that epoch). Shards are deterministic when their datasets run
with `preserve_order` (Ray Data's split then hands blocks out in a fixed order), and the local shuffle is
seeded by (seed, epoch, rank), so a resumed worker that skips the consumed rows continues with exactly
the rows it would have seen. GLEAM-C training (one stream per modality) and the GLEAM-X fine-tune (one
stream of samples) both read their shards through this.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Row = dict[str, Any]


class EmptyShardError(RuntimeError):
    """A worker's shard holds no rows: fewer rows than workers."""


class ShardStream:
    """Rows of one shard, forever, with a resumable position (epoch, consumed)."""

    def __init__(
        self,
        shard: Any,  # ray.data.DataIterator
        seed: int,
        rank: int,
        shuffle_buffer: int = 0,
        epoch: int = 0,
        consumed: int = 0,
        *,
        what: str = "rows",  # named in the error when the shard is empty: "drone pairs", "samples"
        read_batch: int = 64,
    ) -> None:
        self.shard = shard
        self.seed = seed
        self.rank = rank
        self.shuffle_buffer = shuffle_buffer
        self.epoch = epoch
        self.consumed = consumed
        self.what = what
        self.read_batch = read_batch
        self._rows: Iterator[Row] | None = None

    def __iter__(self) -> ShardStream:
        return self

    def __next__(self) -> Row:
        while True:
            if self._rows is None:
                self._rows = self._epoch_rows(skip=self.consumed)
            row = next(self._rows, None)
            if row is not None:
                self.consumed += 1
                return row
            if self.consumed == 0:
                raise EmptyShardError(
                    f"worker {self.rank} got no {self.what}: there are fewer of them than workers"
                )
            self.epoch, self.consumed, self._rows = self.epoch + 1, 0, None

    def _epoch_rows(self, skip: int) -> Iterator[Row]:
        shuffle: dict[str, Any] = {}
        if self.shuffle_buffer:
            shuffle = {
                "local_shuffle_buffer_size": self.shuffle_buffer,
                "local_shuffle_seed": (self.seed * 1_000_003 + self.epoch * 7_919 + self.rank) % 2**31,
            }
        seen = 0
        batches = self.shard.iter_batches(batch_size=self.read_batch, batch_format="pyarrow", **shuffle)
        for batch in batches:
            if seen + batch.num_rows <= skip:
                seen += batch.num_rows
                continue
            start = max(0, skip - seen)
            seen += batch.num_rows
            yield from batch.to_pylist()[start:]

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}
