"""Similarity mining: for each place of a split, the other places the current encoder confuses it with.

Dynamic similarity sampling (Sample4Geo's "neighbour" batches) composes batches from places that look
alike, so the contrastive loss sees hard negatives. A place is a tile_id. The split's tiles and its
queries of the phase's modalities are embedded with saved encoder weights on the path every stage
shares: tiles by the index build's Ray Data actor pool (`gleam.index.embed.embed_tiles`), queries by the
explanation set's (`gleam.explain.dataset.embed.embed_queries`, which embeds a few queries on a
GPU-less cluster in the driver rather than start an actor). Both pools are sized by `gleam.resources`:
one actor per GPU when the cluster has GPUs, one CPU actor otherwise.

Similarity is the inner product of L2-normalised vectors (exact FAISS flat search). A place's score for
a candidate tile is the best score any of its queries gives that tile, i.e. how likely a query of the
place is to be mistaken for the candidate. A place with no query in the split (a distractor tile, or a
modality it lacks) is scored from its own tile instead. The place itself is never its own neighbour;
equal scores are ordered by tile_id, so the same vectors always give the same lists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc

from gleam import storage
from gleam.corpus.reader import open_corpus
from gleam.corpus.schema import Modality
from gleam.evaluation.split import EmptySplitError, split_filter
from gleam.explain.dataset.config import EmbedSettings
from gleam.explain.dataset.embed import embed_queries
from gleam.index.config import EmbedConfig
from gleam.index.embed import embed_tiles
from gleam.model import weights
from gleam.model.embedding import unit_rows
from gleam.retrieval.search import flat_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MinedNeighbours:
    """tile_id -> its `k` most similar other tile_ids (most similar first), how long mining took (embedding
    included) and what was mined: places, queries, places_without_queries."""

    neighbours: dict[str, list[str]]
    seconds: float
    counts: dict[str, int]


def mine_similar_places(
    corpus: str,
    encoder: str,
    modalities: Sequence[str],
    k: int,
    split: str = "train",
    batch_size: int = 64,
) -> MinedNeighbours:
    """Embed `split` of the prepared corpus at `corpus` with the encoder saved at `encoder` (a folder or
    store URI, e.g. `<checkpoint>/encoder`) and mine every place's `k` nearest other places.

    Needs a connected Ray cluster. The split holding no tile is an EmptySplitError.
    """
    started = time.perf_counter()
    prepared = open_corpus(corpus)
    where = split_filter(split)
    tile_ids = sorted(prepared.read("tiles", ["tile_id"], filter=where)["tile_id"].to_pylist())
    if not tile_ids:
        raise EmptySplitError(f"split {split!r} of {prepared.uri} has no tiles to mine")
    wanted = sorted({Modality.parse(m).value for m in modalities})
    queries = prepared.read(
        "queries", ["query_id", "tile_id"], filter=where & pc.field("modality").isin(wanted)
    )
    query_ids = queries["query_id"].to_pylist()
    metadata = weights.read_metadata(storage.normalize(encoder))
    fingerprint, dim = str(metadata["fingerprint"]), int(metadata["embedding_dim"])

    tiles, _ = embed_tiles(prepared, tile_ids, encoder, fingerprint, dim, EmbedConfig(batch_size=batch_size))
    tile_vectors = tiles["vector"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
    by_query = embed_queries(prepared, query_ids, encoder, fingerprint, EmbedSettings(batch_size=batch_size))
    query_vectors = np.stack([by_query[q] for q in query_ids]) if query_ids else np.zeros((0, dim))
    embedded = time.perf_counter()

    places = queries["tile_id"].to_pylist()
    neighbours = nearest_places(query_vectors, places, tile_vectors, tiles["tile_id"].to_pylist(), k)
    seconds = time.perf_counter() - started
    counts = {
        "places": len(tile_ids),
        "queries": len(query_ids),
        "places_without_queries": len(set(tile_ids) - set(places)),
    }
    log.info(
        "mined %d nearest places of %d places from %d queries in %.1fs (embedding %.1fs)",
        k,
        counts["places"],
        counts["queries"],
        seconds,
        embedded - started,
    )
    return MinedNeighbours(neighbours, seconds, counts)


def nearest_places(
    query_vectors: np.ndarray,
    query_places: Sequence[str],
    tile_vectors: np.ndarray,
    tile_ids: Sequence[str],
    k: int,
) -> dict[str, list[str]]:
    """tile_id -> the `k` other tiles its queries are most similar to (fewer when there are fewer others).

    A candidate's score is the maximum over the place's queries of the inner product of the normalised
    vectors; a place without queries scores candidates with its own tile's vector. Ties go to the smaller
    tile_id. `query_places[i]` is the tile_id of query i's place, which must be one of `tile_ids`.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    order = np.argsort(np.asarray(tile_ids, dtype=object), kind="stable")
    ids = [tile_ids[i] for i in order]
    if len(set(ids)) != len(ids):
        raise ValueError("tile_ids repeat: a place is one tile")
    if len(query_places) != len(query_vectors):
        raise ValueError(f"{len(query_vectors)} query vectors but {len(query_places)} places")
    position = {tile_id: i for i, tile_id in enumerate(ids)}
    unknown = sorted(set(query_places) - set(position))[:5]
    if unknown:
        raise ValueError(f"queries of places that are no tile here, e.g. {unknown}")
    if not ids:
        return {}
    tiles = unit_rows(np.asarray(tile_vectors)[order])
    owners = np.fromiter((position[p] for p in query_places), dtype=np.int64, count=len(query_places))
    lonely = np.setdiff1d(np.arange(len(ids)), owners)  # places scored from their own tile
    rows = np.concatenate([unit_rows(np.asarray(query_vectors).reshape(-1, tiles.shape[1])), tiles[lonely]])
    owners = np.concatenate([owners, lonely])
    # a place's k best others are among each of its rows' k + 1 best tiles (the place itself may be one)
    row_of, found, scores = _best_tiles(flat_index(tiles), rows, min(k + 1, len(ids)))
    place, tile, score = owners[row_of], found, scores
    keep = place != tile
    place, tile, score = place[keep], tile[keep], score[keep]
    # best score per (place, tile), then per place: score descending, tile_id ascending
    first = np.lexsort((-score, tile, place))
    pair_start = np.ones(len(first), dtype=bool)
    pair_start[1:] = (place[first][1:] != place[first][:-1]) | (tile[first][1:] != tile[first][:-1])
    best = first[pair_start]
    place, tile, score = place[best], tile[best], score[best]
    ranked = np.lexsort((tile, -score, place))
    neighbours: dict[str, list[str]] = {tile_id: [] for tile_id in ids}
    for p, t in zip(place[ranked].tolist(), tile[ranked].tolist(), strict=True):
        if len(neighbours[ids[p]]) < k:
            neighbours[ids[p]].append(ids[t])
    return neighbours


def _best_tiles(index: Any, rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, tile position, score) of each row's `depth` best tiles and of every tile tied with the
    depth-th: the search widens where a tie crosses the cut, so the result never depends on which of
    several equal tiles FAISS happens to return first."""
    total = index.ntotal
    row_of, found, scores = [], [], []
    todo, width = np.arange(len(rows)), depth
    while len(todo):
        columns = min(width + 1, total)
        got_scores, got = index.search(np.ascontiguousarray(rows[todo], dtype=np.float32), columns)
        cut = got_scores[:, depth - 1 : depth]
        done = np.ones(len(todo), dtype=bool) if columns <= width else got_scores[:, width] < cut[:, 0]
        kept = (got_scores[done, :width] >= cut[done]) & (got[done, :width] >= 0)
        row_of.append(np.repeat(todo[done], kept.sum(axis=1)))
        found.append(got[done, :width][kept])
        scores.append(got_scores[done, :width][kept])
        todo, width = todo[~done], width * 2
    return np.concatenate(row_of), np.concatenate(found), np.concatenate(scores)
