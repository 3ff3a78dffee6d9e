"""Training pairs from a prepared corpus: one Ray Dataset of (query, tile) rows per modality.

Queries name their tile by id; the pixels of both are needed in one row, so each modality's queries
are joined with the tiles by a Ray Data hash join (distributed, spills to disk when the
corpus is larger than memory) rather than by a tile table broadcast to every worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from gleam import storage
from gleam.corpus.reader import PreparedCorpus
from gleam.corpus.schema import Modality

PAIR_COLUMNS = ["query_id", "modality", "tile_id", "query_image", "tile_image"]


def _select(batch: pa.Table, modalities: list[str], split: str) -> pa.Table:
    mask = pc.and_(pc.is_in(batch["modality"], pa.array(modalities)), pc.equal(batch["split"], split))
    kept = batch.filter(mask)
    return kept.select(["query_id", "modality", "tile_id", "image"]).rename_columns(
        ["query_id", "modality", "tile_id", "query_image"]
    )


def _tile_columns(batch: pa.Table) -> pa.Table:
    """All tiles, whatever their split: a query's tile may sit in another split (VIGOR same-area)."""
    return batch.select(["tile_id", "image"]).rename_columns(["tile_id", "tile_image"])


def pair_datasets(
    corpus: PreparedCorpus, split: str, modalities: Sequence[Modality | str], partitions: int = 8
) -> dict[str, object]:
    """modality -> ray.data.Dataset with PAIR_COLUMNS, for the queries of `split`.

    One join serves every modality (a join is a shuffle: doing it once per modality would repeat
    the tile side each time); the joined pairs are materialised in the object store (spilling to
    disk when large) and each modality is a filter of them.
    """
    import ray.data

    names = [Modality(m).value for m in modalities]
    available = corpus.manifest["counts"]["queries"]
    for modality in names:
        if not available.get(modality):
            raise ValueError(f"corpus {corpus.uri} has no {modality} queries (has: {sorted(available)})")
    fs, _ = storage.resolve(corpus.uri)
    tile_paths = [storage.resolve(u)[1] for u in corpus.files("tiles")]
    query_paths = [storage.resolve(u)[1] for u in corpus.files("queries")]
    tiles = ray.data.read_parquet(tile_paths, filesystem=fs, columns=["tile_id", "image"]).map_batches(
        _tile_columns, batch_format="pyarrow"
    )
    queries = ray.data.read_parquet(
        query_paths, filesystem=fs, columns=["query_id", "modality", "tile_id", "image", "split"]
    ).map_batches(_select, batch_format="pyarrow", fn_kwargs={"modalities": names, "split": split})
    joined = queries.join(tiles, "inner", num_partitions=partitions, on=("tile_id",)).select_columns(
        PAIR_COLUMNS
    )
    pairs = joined.materialize()
    return {
        m: pairs.map_batches(_only, batch_format="pyarrow", fn_kwargs={"modality": m}).materialize()
        for m in names
    }


def _only(batch: pa.Table, modality: str) -> pa.Table:
    return batch.filter(pc.equal(batch["modality"], modality))
