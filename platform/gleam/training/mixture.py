"""Modality-balanced batches: GLEAM-C's answer to datasets of very different sizes.

Each step's batch is split across modalities by the phase's mixture weights, not by how much data each
modality has, so 30k drone pairs are not drowned by 500k panoramas. Shares are allocated with carried
remainders (smooth weighted round robin), so over any run of steps every modality gets its exact share
and no step is left to chance. Within a batch a tile is used once where the data allows: a repeated
tile would be a false negative for the contrastive loss, so such a pair waits in a small look-ahead
pool for a later batch.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]


def normalise_weights(weights: Mapping[str, float]) -> dict[str, float]:
    if not weights:
        raise ValueError("a mixture needs at least one modality")
    bad = {k: v for k, v in weights.items() if not (v >= 0 and math.isfinite(v))}
    if bad:
        raise ValueError(f"mixture weights must be finite and >= 0, got {bad}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("mixture weights must not all be zero")
    return {k: v / total for k, v in sorted(weights.items()) if v > 0}


@dataclass
class Allocator:
    """Splits `batch_size` slots per step among modalities, carrying fractional remainders."""

    weights: Mapping[str, float]
    batch_size: int
    credit: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.weights = normalise_weights(self.weights)
        self.credit = {m: 0.0 for m in self.weights}

    def next(self) -> dict[str, int]:
        for modality, share in self.weights.items():
            self.credit[modality] += share * self.batch_size
        counts = {m: max(0, math.floor(c + 1e-9)) for m, c in self.credit.items()}
        left = self.batch_size - sum(counts.values())
        # hand the remaining slots to the largest remainders (ties by name: deterministic)
        for modality in sorted(self.credit, key=lambda m: (-(self.credit[m] - counts[m]), m))[:left]:
            counts[modality] += 1
        for modality, n in counts.items():
            self.credit[modality] -= n
        return {m: n for m, n in counts.items() if n}

    def state(self) -> dict[str, float]:
        return dict(self.credit)

    def restore(self, credit: Mapping[str, float]) -> None:
        self.credit = {m: float(credit.get(m, 0.0)) for m in self.weights}


class MixtureSampler:
    """Draws each step's per-modality micro-batches from endless per-modality row streams.

    `streams` yield rows with at least `tile_id`; they repeat (epochs) and are shuffled by the caller
    (Ray Data shards). Each modality keeps a look-ahead pool of `lookahead` rows: a step pulls exactly
    as many new rows as it serves, then serves the oldest pooled rows whose tile is not yet in the
    batch (the oldest at all when the data cannot avoid a repeat). So nothing is dropped, nothing
    starves, and every worker consumes its shards at the same fixed rate: Ray Data's split iterators
    start an epoch only when every worker asks for it, and a worker that ran ahead would wait there
    while the others wait for it in the gradient all-reduce.
    """

    def __init__(
        self,
        streams: Mapping[str, Iterator[Row]],
        weights: Mapping[str, float],
        batch_size: int,
        unique_tiles: bool = True,
        lookahead: int | None = None,
    ) -> None:
        missing = set(normalise_weights(weights)) - set(streams)
        if missing:
            raise ValueError(f"no data stream for weighted modalities: {sorted(missing)}")
        self.allocator = Allocator(weights, batch_size)
        self.streams = dict(streams)
        self.unique_tiles = unique_tiles
        self.lookahead = batch_size if lookahead is None else lookahead
        self.pools: dict[str, deque[Row]] | None = None

    def _fill(self) -> dict[str, deque[Row]]:
        if self.pools is None:
            self.pools = {
                m: deque(next(self.streams[m]) for _ in range(self.lookahead)) for m in self.allocator.weights
            }
        return self.pools

    def _take(self, modality: str, count: int, used: set[Any]) -> list[Row]:
        pool = self._fill()[modality]
        pool.extend(next(self.streams[modality]) for _ in range(count))
        chosen: list[int] = []
        for index, row in enumerate(pool):
            if len(chosen) == count:
                break
            if not self.unique_tiles or row["tile_id"] not in used:
                chosen.append(index)
                used.add(row["tile_id"])
        for index in range(len(pool)):  # the data cannot avoid a repeat: the oldest rows go first
            if len(chosen) == count:
                break
            if index not in chosen:
                chosen.append(index)
        picked = set(chosen)
        rows = [pool[i] for i in sorted(picked)]
        kept = [row for i, row in enumerate(pool) if i not in picked]
        pool.clear()
        pool.extend(kept)
        return rows

    def next_batch(self) -> dict[str, list[Row]]:
        used: set[Any] = set()
        return {m: self._take(m, count, used) for m, count in self.allocator.next().items()}

    def state(self) -> dict[str, Any]:
        """Allocator credit and the pooled rows: with the streams' positions, the sampler's exact state."""
        return {
            "credit": self.allocator.state(),
            "pools": {m: list(p) for m, p in (self.pools or {}).items()},
        }

    def restore(self, credit: Mapping[str, float], pools: Mapping[str, list[Row]] | None) -> None:
        self.allocator.restore(credit)
        self.pools = None if pools is None else {m: deque(pools.get(m, [])) for m in self.allocator.weights}

    def __iter__(self) -> Iterator[dict[str, list[Row]]]:
        while True:
            yield self.next_batch()


class PlannedSampler:
    """Each step's rows straight from a stream the driver composed and sorted by (step, slot) (the `gps`
    and `similarity` batch modes, gleam.training.plan): no shuffle, no look-ahead, so a resumed step
    starts at its exact row. A row of another step means the stream and the plan disagree: an error,
    never a silently different batch."""

    def __init__(self, stream: Iterator[Row], batch_size: int, step: int, segment: int) -> None:
        self.stream = stream
        self.batch_size = batch_size
        self.step = step
        self.segment = segment
        self.last: list[str] = []

    def next_batch(self) -> dict[str, list[Row]]:
        rows = [next(self.stream) for _ in range(self.batch_size)]
        stray = sorted({int(row["step"]) for row in rows} - {self.step})
        if stray:
            raise RuntimeError(f"planned batches out of order: step {self.step} read rows of steps {stray}")
        self.step += 1
        self.last = [row["query_id"] for row in rows]
        batch: dict[str, list[Row]] = {}
        for row in rows:
            batch.setdefault(row["modality"], []).append(row)
        return batch

    def state(self) -> dict[str, Any]:
        """No credit or pools (the plan holds them); the segment and the query ids of the last batch."""
        return {"credit": {}, "pools": {}, "segment": self.segment, "last_batch": list(self.last)}
