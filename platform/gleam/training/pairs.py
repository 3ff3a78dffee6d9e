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


def _select(batch: pa.Table, modality: str, split: str) -> pa.Table:
    mask = pc.and_(pc.equal(batch["modality"], modality), pc.equal(batch["split"], split))
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
    """modality -> ray.data.Dataset with PAIR_COLUMNS, for the queries of `split`."""
    import ray.data

    fs, _ = storage.resolve(corpus.uri)
    tile_paths = [storage.resolve(u)[1] for u in corpus.files("tiles")]
    query_paths = [storage.resolve(u)[1] for u in corpus.files("queries")]
    tiles = ray.data.read_parquet(tile_paths, filesystem=fs, columns=["tile_id", "image"]).map_batches(
        _tile_columns, batch_format="pyarrow"
    )
    available = corpus.manifest["counts"]["queries"]
    out: dict[str, object] = {}
    for modality in (Modality(m).value for m in modalities):
        if not available.get(modality):
            raise ValueError(f"corpus {corpus.uri} has no {modality} queries (has: {sorted(available)})")
        queries = ray.data.read_parquet(
            query_paths, filesystem=fs, columns=["query_id", "modality", "tile_id", "image", "split"]
        ).map_batches(_select, batch_format="pyarrow", fn_kwargs={"modality": modality, "split": split})
        out[modality] = queries.join(
            tiles, "inner", num_partitions=partitions, on=("tile_id",)
        ).select_columns(PAIR_COLUMNS)
    return out
