"""Composing global batches from neighbourhoods of places: hard negatives for the contrastive loss.

InfoNCE learns from the other pairs of the batch, and random batches are mostly easy negatives. As in
Sample4Geo, a batch is built from neighbourhoods: an unused anchor pair at random, then pairs of up to
`group - 1` of its neighbour places (nearest by GPS, or most similar by the current encoder), then the
next anchor, until the batch is full. The mixture's guarantees are kept:

- each global batch's modality counts come from the `Allocator` (smooth weighted round robin), exactly
  as in random mode, so shares are exact over any run of steps;
- a tile appears at most once per batch (never two queries of one place), where the data allows;
- nothing is dropped: every modality walks its pairs epoch by epoch, each pair exactly once per epoch of
  that modality (its own permutation, seeded by (seed, modality, epoch)). Epochs of different modalities
  are independent (a small modality cycles faster, as in random mode) and a batch may straddle an epoch
  boundary: the rest of an epoch that cannot fill a batch is completed by the next epoch's first pairs,
  the way the random sampler's endless streams do;
- deterministic: the batches follow from (seed, the pairs, the neighbour lists, the state at the start),
  and the state is plain JSON, so a resumed run composes the same batches.

A global batch is then dealt to the workers slot by slot (`shard`): neighbours are spread over workers,
and the all-gathered loss still sees them as negatives of each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from gleam.training.mixture import Allocator, normalise_weights

Neighbours = Mapping[str, Sequence[str]]
PLAN_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("tile_id", pa.string()),
        pa.field("step", pa.int64()),
        pa.field("rank", pa.int64()),
        pa.field("pos", pa.int64()),  # order of the row in its rank's stream: step * batch + slot
    ]
)


@dataclass(frozen=True)
class Pick:
    """One pair of a composed batch."""

    modality: str
    query_id: str
    tile_id: str


class _ModalityWalk:
    """One modality's pairs, epoch after epoch, each epoch in its own seeded order; takes pairs by order
    (anchors) or by tile (neighbours) and remembers which of the current epoch are used."""

    def __init__(self, pairs: Iterable[tuple[str, str]], seed: int, index: int) -> None:
        self.pairs = sorted(pairs)  # (query_id, tile_id), canonical order whatever the read order was
        if not self.pairs:
            raise ValueError("a modality of the mixture has no pairs")
        self.seed, self.index = seed, index
        self.epoch = 0
        self._start_epoch(set())

    def _start_epoch(self, used: set[int]) -> None:
        rng = np.random.default_rng([self.seed, self.index, self.epoch])
        self.order = rng.permutation(len(self.pairs)).tolist()
        self.used = used
        self.cursor = 0  # everything before it in `order` is used
        self.by_tile: dict[str, list[int]] = {}
        for i in reversed(self.order):  # per tile, unused pairs in epoch order (pop from the end)
            if i not in used:
                self.by_tile.setdefault(self.pairs[i][1], []).append(i)

    def _mark(self, i: int) -> tuple[str, str]:
        self.used.add(i)
        pending = self.by_tile[self.pairs[i][1]]
        pending.remove(i)
        if not pending:
            del self.by_tile[self.pairs[i][1]]
        if len(self.used) == len(self.pairs):
            self.epoch += 1
            self._start_epoch(set())
        return self.pairs[i]

    def anchor(self, taken_tiles: set[str]) -> tuple[str, str]:
        """The next unused pair in this epoch's order whose tile is not in the batch yet (the oldest
        unused one when the data cannot avoid a repeat)."""
        while self.order[self.cursor] in self.used:
            self.cursor += 1
        for i in self.order[self.cursor :]:
            if i not in self.used and self.pairs[i][1] not in taken_tiles:
                return self._mark(i)
        return self._mark(self.order[self.cursor])

    def left(self) -> int:
        """Pairs of the current epoch not used yet."""
        return len(self.pairs) - len(self.used)

    def has_tile(self, tile_id: str) -> bool:
        return tile_id in self.by_tile

    def at_tile(self, tile_id: str) -> tuple[str, str]:
        return self._mark(self.by_tile[tile_id][-1])

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "used": sorted(self.pairs[i][0] for i in self.used)}

    def restore(self, state: Mapping[str, Any]) -> None:
        index = {query_id: i for i, (query_id, _) in enumerate(self.pairs)}
        self.epoch = int(state["epoch"])
        self._start_epoch({index[q] for q in state["used"] if q in index})


class Composer:
    """Global batches of `batch_size` pairs, step after step, from per-modality pairs and neighbour lists.

    `pairs`: modality -> (query_id, tile_id) of its train pairs. `neighbours`: tile_id -> other tile_ids,
    nearest / most similar first (None: random batches, the same guarantees). Each anchor adds up to
    `group - 1` neighbours drawn at random (seeded by the step) from the first `candidates` of its list:
    Sample4Geo's neighbour_select out of neighbour_range.
    """

    def __init__(
        self,
        pairs: Mapping[str, Iterable[tuple[str, str]]],
        weights: Mapping[str, float],
        batch_size: int,
        seed: int,
        neighbours: Neighbours | None = None,
        group: int = 8,
        candidates: int = 16,
    ) -> None:
        shares = normalise_weights(weights)
        missing = sorted(set(shares) - set(pairs))
        if missing:
            raise ValueError(f"no pairs for weighted modalities: {missing}")
        self.allocator = Allocator(shares, batch_size)
        self.walks = {m: _ModalityWalk(pairs[m], seed, i) for i, m in enumerate(sorted(shares))}
        self.seed = seed
        self.neighbours = neighbours or {}
        self.tiles = {tile for walk in self.walks.values() for _, tile in walk.pairs}  # places with pairs
        self.group = group
        self.candidates = candidates
        self.step = 0

    def next_batch(self) -> list[Pick]:
        need = self.allocator.next()
        taken: set[str] = set()
        batch: list[Pick] = []
        rng = np.random.default_rng([self.seed, self.step, 1])

        def take(modality: str, pair: tuple[str, str]) -> None:
            batch.append(Pick(modality, *pair))
            taken.add(pair[1])
            need[modality] -= 1

        while any(need.values()):
            # anchors first from the modality nearest the end of its epoch: its last pairs can then
            # still find tiles not yet in the batch (the others have plenty to choose from)
            modality = min((m for m in need if need[m]), key=lambda m: (self.walks[m].left(), m))
            take(modality, self.walks[modality].anchor(taken))
            listed = self.neighbours.get(batch[-1].tile_id, ())
            pool = [tile for tile in listed if tile in self.tiles][: self.candidates]
            added = 0
            for j in rng.permutation(len(pool)):
                if added == self.group - 1 or not any(need.values()):
                    break
                tile = pool[j]
                if tile in taken:
                    continue
                for other in sorted((m for m in need if need[m]), key=lambda m: (-need[m], m)):
                    if self.walks[other].has_tile(tile):
                        take(other, self.walks[other].at_tile(tile))
                        added += 1
                        break
        self.step += 1
        return batch

    def state(self) -> dict[str, Any]:
        """Plain JSON: with the same pairs, neighbours and seed, `restore` continues exactly here."""
        return {
            "step": self.step,
            "credit": self.allocator.state(),
            "modalities": {m: w.state() for m, w in self.walks.items()},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.allocator.restore(state["credit"])
        for modality, walk in self.walks.items():
            if modality in state["modalities"]:
                walk.restore(state["modalities"][modality])


def shard(batch: Sequence[Pick], world: int) -> list[list[Pick]]:
    """Deal a global batch to `world` workers slot by slot: worker r gets slots r, r + world, ... so an
    anchor's neighbours land on different workers (all of them are negatives under the all-gather)."""
    return [list(batch[r::world]) for r in range(world)]


def compose_plan(composer: Composer, start: int, stop: int, world: int) -> pa.Table:
    """The rows of steps [start, stop) for every worker: (query_id, modality, tile_id, step, rank, pos).

    `composer` must be at step `start`. A worker reads its rows sorted by `pos`."""
    if composer.step != start:
        raise ValueError(f"the composer is at step {composer.step}, the plan starts at {start}")
    columns: dict[str, list[Any]] = {name: [] for name in PLAN_SCHEMA.names}
    for step in range(start, stop):
        for rank, picks in enumerate(shard(composer.next_batch(), world)):
            for slot, pick in enumerate(picks):
                values = (pick.query_id, pick.modality, pick.tile_id, step, rank, step * len(picks) + slot)
                for name, value in zip(PLAN_SCHEMA.names, values, strict=True):
                    columns[name].append(value)
    return pa.table(columns, schema=PLAN_SCHEMA)
