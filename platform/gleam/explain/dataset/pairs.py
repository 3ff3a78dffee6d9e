"""Which (query, tile) pairs go into an explanation set: balanced queries, their tile, hard negatives.

Queries are chosen per split and modality in a seeded order, the same number for every modality of a
split (the smallest available count caps them all), among queries whose own tile the index holds.
Each query's pairs come from its search in the published index: its own tile (match) and the
top-ranked *wrong* tiles of the query's own split (hard negatives: what the encoder itself confuses),
so no place appears in two splits. `rank` is the tile's 1-based rank in that search (the served rank,
whatever the split of the tiles above it) and `similarity` the index's score.

The index package sits above this one (its calibration uses gleam.explain.evidence), so the job does
not import it: the entrypoint hands in `IndexAccess` (gleam.index.catalog.open_index and friends).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from gleam.explain.explanation_set import pair_id

START_DEPTH = 32
SPARE_SHARE = 0.1  # queries chosen beyond the count, in case a chosen one's tile is not reachable


class SearchIndex(Protocol):
    """What mining needs from a published index (gleam.index.catalog.OpenedIndex has it)."""

    name: str
    version: str
    meta: dict[str, Any]

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def position(self, tile_id: str) -> int | None: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class IndexAccess:
    """gleam.index, handed in by the entrypoint: open a version, and read its evidence facts."""

    open: Callable[[str, str, str | None], SearchIndex]  # (store, name, version or None for CURRENT)
    evidence_facts: Callable[[dict[str, Any], str], dict[str, Any]]  # (meta, modality) -> facts
    quality: Callable[[dict[str, Any] | None, dict[str, Any] | None], dict[str, Any]]  # (spread, calibration)


@dataclass
class Mined:
    """One query's search: its own tile's (rank, similarity) if reached, and its hard negatives."""

    query: dict[str, Any]
    positive: tuple[int, float] | None = None
    negatives: list[tuple[str, int, float]] = field(default_factory=list)


def choose_queries(
    queries: Sequence[Mapping[str, Any]],
    indexed: Callable[[str], bool],
    modalities: Sequence[str],
    counts: Mapping[str, int],
    seed: int,
) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], dict[tuple[str, str], int]]:
    """Candidates per (split, modality) in seeded order, and the count each group should end with.

    `queries`: rows with query_id, modality, tile_id, split; `counts`: split -> wanted per modality.
    The target of a split is min(wanted, the smallest eligible count over its modalities that have
    any); each group gets the target plus a few spares (SPARE_SHARE) in case mining drops one.
    """
    eligible: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in sorted(queries, key=lambda r: r["query_id"]):
        key = (row["split"], row["modality"])
        if row["split"] in counts and row["modality"] in modalities and indexed(row["tile_id"]):
            eligible.setdefault(key, []).append(dict(row))
    chosen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    targets: dict[tuple[str, str], int] = {}
    split_order = sorted(counts)
    for split in split_order:
        present = [m for m in modalities if eligible.get((split, m))]
        if not present:
            continue
        target = min(counts[split], *(len(eligible[(split, m)]) for m in present))
        spare = target + max(1, int(np.ceil(target * SPARE_SHARE)))
        for modality in present:
            rows = eligible[(split, modality)]
            rng = np.random.default_rng([seed, split_order.index(split), sorted(modalities).index(modality)])
            order = rng.permutation(len(rows))[:spare]
            chosen[(split, modality)] = [rows[i] for i in order]
            targets[(split, modality)] = target
    return chosen, targets


def mine(
    index: SearchIndex,
    vectors: np.ndarray,
    queries: Sequence[Mapping[str, Any]],
    tile_split: Mapping[str, str],
    negatives: int,
    start_depth: int = START_DEPTH,
) -> list[Mined]:
    """Search each query deeper and deeper until its own tile and `negatives` wrong tiles of its split
    are found, or the whole index was searched (then it keeps what there is)."""
    found = [Mined(dict(q)) for q in queries]
    pending = np.arange(len(found))
    size = len(index)
    depth = min(size, max(start_depth, 4 * (negatives + 1)))
    while len(pending) and size:
        scores, tiles = index.search(vectors[pending], depth)
        still = []
        for row, i in enumerate(pending):
            mined = _walk(found[i], scores[row], tiles[row], tile_split, negatives)
            if depth < size and (mined.positive is None or len(mined.negatives) < negatives):
                still.append(i)
        if depth >= size:
            break
        pending = np.asarray(still, dtype=np.int64)
        depth = min(size, depth * 4)
    return found


def _walk(
    mined: Mined, scores: np.ndarray, tiles: np.ndarray, tile_split: Mapping[str, str], negatives: int
) -> Mined:
    own, split = mined.query["tile_id"], mined.query["split"]
    mined.positive, mined.negatives = None, []
    for rank, (tile, score) in enumerate(zip(tiles, scores, strict=True), start=1):
        if tile is None:
            continue
        if tile == own:
            mined.positive = (rank, float(score))
        elif len(mined.negatives) < negatives and tile_split.get(tile) == split:
            mined.negatives.append((str(tile), rank, float(score)))
    return mined


def keep_balanced(
    mined: Sequence[Mined], targets: Mapping[tuple[str, str], int]
) -> tuple[list[Mined], dict[str, int]]:
    """Per split, the same number of queries for every modality: the first `target` whose own tile was
    reached (in the seeded order), fewer for all when one modality fell short. Returns what was left
    out, by reason."""
    groups: dict[tuple[str, str], list[Mined]] = {}
    unreached = 0
    for item in mined:
        if item.positive is None:
            unreached += 1
            continue
        groups.setdefault((item.query["split"], item.query["modality"]), []).append(item)
    kept: list[Mined] = []
    for split in sorted({s for s, _ in targets}):
        keys = [k for k in targets if k[0] == split]
        count = min(targets[k] for k in keys)
        count = min(count, *(len(groups.get(k, [])) for k in keys))
        for key in sorted(keys):
            kept.extend(groups.get(key, [])[:count])
    return kept, {"own_tile_not_reached": unreached}


def pair_rows(mined: Sequence[Mined]) -> list[dict[str, Any]]:
    """One row per (query, tile): the match first, then its negatives by rank."""
    rows = []
    for item in mined:
        query = item.query
        assert item.positive is not None  # keep_balanced keeps only reached queries
        chosen = [(query["tile_id"], True, *item.positive)]
        chosen += [(tile, False, rank, score) for tile, rank, score in item.negatives]
        for tile_id, match, rank, similarity in chosen:
            rows.append(
                {
                    "pair_id": pair_id(query["query_id"], tile_id),
                    "query_id": query["query_id"],
                    "tile_id": tile_id,
                    "modality": query["modality"],
                    "match": match,
                    "rank": int(rank),
                    "similarity": float(similarity),
                    "split": query["split"],
                }
            )
    return rows
