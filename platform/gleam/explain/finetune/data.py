"""The fine-tuning samples as Ray Datasets: set rows (one per language) joined with the corpus images.

The set holds ids, not pixels (`gleam.explain.explanation_set`): the driver turns its rows into samples
(`samples.sample_rows`, small: text only), then Ray Data joins the samples of every split used with the
query images and the tile images of the corpus the manifest names (two hash joins, spilled to disk
when large, reading only the images the set uses), sorts them by sample id so every run of the same
config sees the same order (a resumed worker skips to the exact row), and materialises the result
once in the object store: epochs do not repeat the joins, and each split is a filter of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from gleam import storage
from gleam.corpus.reader import open_corpus
from gleam.errors import RefusedError
from gleam.explain.explanation_set import ExplanationSet
from gleam.explain.finetune.samples import sample_rows

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("language", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("evidence", pa.string()),
    ]
)
COLUMNS = [*SAMPLE_SCHEMA.names, "query_image", "tile_image"]
ROWS_PER_PARTITION = 20_000


class NoSamplesError(RefusedError, ValueError):
    """The split has no usable rows (none at all, or none with a rationale in the languages asked for)."""


@dataclass(frozen=True)
class SplitSamples:
    """One split's samples (text only) and what was left out of it."""

    split: str
    table: pa.Table
    pairs: int
    skipped: dict[str, int] = field(default_factory=dict)  # language -> rows without a rationale in it

    @property
    def count(self) -> int:
        return self.table.num_rows


def split_samples(
    explanations: ExplanationSet, split: str, languages: list[str], share_evidence: bool
) -> SplitSamples:
    """The split's samples, sorted by sample id; NoSamplesError when there are none."""
    rows = explanations.read("pairs", filter=pc.field("split") == split).to_pylist()
    calibration = explanations.manifest.get("calibration")
    samples, skipped = sample_rows(rows, languages, calibration, share_evidence)
    if not samples:
        raise NoSamplesError(
            f"explanation set {explanations.uri} has no {split} samples in {', '.join(languages)} "
            f"({len(rows)} {split} pairs; rows without a rationale: {skipped})"
        )
    ordered = sorted(({**s, "split": split} for s in samples), key=lambda s: s["sample_id"])
    return SplitSamples(split, pa.Table.from_pylist(ordered, schema=SAMPLE_SCHEMA), len(rows), skipped)


def sample_datasets(splits: list[SplitSamples], corpus_uri: str) -> dict[str, Any]:
    """split -> ray.data.Dataset with COLUMNS: each sample with its query's and its tile's image bytes."""
    import ray.data

    table = pa.concat_tables([s.table for s in splits])
    partitions = max(1, min(64, table.num_rows // ROWS_PER_PARTITION + 1))
    corpus = open_corpus(corpus_uri)
    fs, _ = storage.resolve(corpus.uri)

    def images(part: str, key: str, name: str) -> Any:
        wanted = pa.array(sorted(set(table[key].to_pylist())))
        files = [storage.resolve(u)[1] for u in corpus.files(part)]
        return (
            ray.data.read_parquet(files, filesystem=fs, columns=[key, "image"])
            .map_batches(_keep, batch_format="pyarrow", fn_kwargs={"key": key, "ids": wanted})
            .rename_columns({"image": name})
        )

    joined = (
        ray.data.from_arrow(table)
        .join(images("queries", "query_id", "query_image"), "inner", partitions, on=("query_id",))
        .join(images("tiles", "tile_id", "tile_image"), "inner", partitions, on=("tile_id",))
        .select_columns(COLUMNS)
        .sort("sample_id")
        .materialize()
    )
    found = joined.count()
    if found != table.num_rows:
        raise NoSamplesError(
            f"{table.num_rows - found} of {table.num_rows} samples name a query or tile that is not in "
            f"corpus {corpus.uri}: the set was built from another corpus version"
        )
    return {
        s.split: joined.map_batches(_only, batch_format="pyarrow", fn_kwargs={"split": s.split}).materialize()
        for s in splits
    }


def _keep(batch: pa.Table, key: str, ids: pa.Array) -> pa.Table:
    """Only the images the samples use (the corpus may be far larger than the set)."""
    return batch.filter(pc.is_in(batch[key], ids))


def _only(batch: pa.Table, split: str) -> pa.Table:
    return batch.filter(pc.equal(batch["split"], split))
