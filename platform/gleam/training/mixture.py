"""Modality-balanced batches: GLEAM-C's answer to datasets of very different sizes.

Each step's batch is split across modalities by the phase's mixture weights, not by how much data each
modality has, so 30k drone pairs are not drowned by 500k panoramas. Shares are allocated with carried
remainders (smooth weighted round robin), so over any run of steps every modality gets its exact share
and no step is left to chance. Within a batch a tile is used once where the data allows: a repeated
tile would be a false negative for the contrastive loss, so such a pair waits for a later batch.
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

    `streams` yield rows with at least `tile_id`; they are expected to repeat (epochs) and be shuffled
    by the caller (Ray Data shards). Pairs skipped because their tile is already in the batch are kept
    in a small per-modality backlog and served first next time, so nothing is dropped.
    """

    def __init__(
        self,
        streams: Mapping[str, Iterator[Row]],
        weights: Mapping[str, float],
        batch_size: int,
        unique_tiles: bool = True,
        max_skips: int = 64,
    ) -> None:
        missing = set(normalise_weights(weights)) - set(streams)
        if missing:
            raise ValueError(f"no data stream for weighted modalities: {sorted(missing)}")
        self.allocator = Allocator(weights, batch_size)
        self.streams = dict(streams)
        self.unique_tiles = unique_tiles
        self.max_skips = max_skips
        self.backlog: dict[str, deque[Row]] = {m: deque() for m in self.streams}

    def _next_row(self, modality: str, used: set[Any]) -> Row:
        """The next row whose tile is not in `used`; after max_skips attempts, accept a repeat."""
        backlog = self.backlog[modality]
        for _ in range(len(backlog)):
            row = backlog.popleft()
            if not self.unique_tiles or row["tile_id"] not in used:
                return row
            backlog.append(row)
        skipped = 0
        while True:
            row = next(self.streams[modality])
            if not self.unique_tiles or row["tile_id"] not in used or skipped >= self.max_skips:
                return row
            backlog.append(row)
            skipped += 1

    def next_batch(self) -> dict[str, list[Row]]:
        used: set[Any] = set()
        batch: dict[str, list[Row]] = {}
        for modality, count in self.allocator.next().items():
            rows = []
            for _ in range(count):
                row = self._next_row(modality, used)
                used.add(row["tile_id"])
                rows.append(row)
            batch[modality] = rows
        return batch

    def __iter__(self) -> Iterator[dict[str, list[Row]]]:
        while True:
            yield self.next_batch()
