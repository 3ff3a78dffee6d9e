"""ShardStream, the resumable reader both trainers use: endless epochs, and a position that resumes at
exactly the next row."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

from gleam.shard_stream import EmptyShardError, ShardStream


class TableShard:
    """A shard in the shape of ray.data.DataIterator.iter_batches (no local shuffle: order is fixed)."""

    def __init__(self, rows: int) -> None:
        self.table = pa.table({"i": list(range(rows))})

    def iter_batches(self, batch_size: int, batch_format: str, **shuffle: object):
        assert batch_format == "pyarrow" and not shuffle
        yield from self.table.to_batches(max_chunksize=batch_size)


def test_epochs_repeat_and_a_resumed_stream_continues_where_the_position_was() -> None:
    stream = ShardStream(TableShard(5), seed=0, rank=0, read_batch=2)
    first = [row["i"] for row in itertools.islice(stream, 7)]
    assert first == [0, 1, 2, 3, 4, 0, 1]
    assert stream.position() == {"epoch": 1, "consumed": 2}
    resumed = ShardStream(TableShard(5), seed=0, rank=0, read_batch=2, **stream.position())
    assert [row["i"] for row in itertools.islice(resumed, 4)] == [2, 3, 4, 0]
    assert resumed.position() == {"epoch": 2, "consumed": 1}


def test_an_empty_shard_names_what_it_lacks() -> None:
    with pytest.raises(EmptyShardError, match="worker 1 got no drone pairs"):
        next(ShardStream(TableShard(0), seed=0, rank=1, what="drone pairs"))
