"""Embed the chosen queries with the index's own encoder, in a Ray Data actor pool.

The vectors must be the ones the index would be searched with, so each batch goes through
`gleam.model.embedding.embed_images` (the path evaluation, indexing and serving share), one call per
modality (each has its own eval transform), with weights checked against the index's fingerprint.
Actors, not tasks: loading an encoder costs far more than a batch. One per GPU when there are GPUs.
A few queries on a cluster without GPUs (`embed.in_driver_below`) are embedded in the driver instead:
starting an actor (a process importing torch) would cost more than embedding them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gleam import storage
from gleam.corpus.reader import PreparedCorpus
from gleam.explain.dataset.config import EmbedSettings
from gleam.model.embedding import EncoderActor, embed_images, encoder_actor_kwargs
from gleam.resources import pool_options, size_pool


class QueryEmbedder(EncoderActor):
    """A Ray Data actor: query JPEGs of any modality in, unit vectors out (`embed_images`)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        return embed_batch(self.encoder, self.spec, batch, self.precision)


def embed_batch(encoder: Any, spec: Any, batch: pa.Table, precision: str) -> pa.Table:
    """query_id, vector for a batch of query_id, modality, image rows (one `embed_images` per modality)."""
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    for modality in sorted(set(batch["modality"].to_pylist())):
        rows = batch.filter(pc.equal(batch["modality"], modality))
        ids.extend(rows["query_id"].to_pylist())
        chunks.append(embed_images(encoder, spec, rows["image"].to_pylist(), modality, precision))
    vectors = np.concatenate(chunks)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return pa.table({"query_id": ids, "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})


def embed_queries(
    corpus: PreparedCorpus,
    query_ids: Sequence[str],
    encoder_uri: str,
    fingerprint: str,
    settings: EmbedSettings,
) -> dict[str, np.ndarray]:
    """query_id -> unit float32 vector for the given queries."""
    import ray
    import ray.data
    from ray.data.expressions import col

    wanted = sorted(set(query_ids))
    if not wanted:
        return {}
    pool = size_pool(settings.num_gpus, settings.actors)
    if len(wanted) < settings.in_driver_below and not pool.num_gpus:
        return _collect([_embed_here(corpus, wanted, encoder_uri, fingerprint, settings)], wanted)
    precision = pool.cpu_precision(settings.precision)
    actor_kwargs = encoder_actor_kwargs(encoder_uri, fingerprint, precision, settings.num_cpus)
    fs, _ = storage.resolve(corpus.uri)
    paths = [storage.resolve(u)[1] for u in corpus.files("queries")]
    dataset = (
        ray.data.read_parquet(paths, filesystem=fs, columns=["query_id", "modality", "image"], num_cpus=0.5)
        .filter(expr=col("query_id").is_in(wanted))
        .map_batches(
            QueryEmbedder,
            **pool_options(pool, settings.num_cpus, settings.batch_size, actor_kwargs),
        )
    )
    return _collect(dataset.iter_batches(batch_format="pyarrow", batch_size=None), wanted)


def _embed_here(
    corpus: PreparedCorpus, wanted: list[str], encoder_uri: str, fingerprint: str, settings: EmbedSettings
) -> pa.Table:
    """A few queries in this process: the same `embed_batch`, without starting an actor (and its torch)."""
    from gleam.model import weights

    encoder, spec, _ = weights.load(encoder_uri, expect_fingerprint=fingerprint)
    precision = "fp32" if settings.precision == "auto" else settings.precision
    where = pc.field("query_id").isin(wanted)
    parts = [
        embed_batch(encoder, spec, batch, precision)
        for batch in corpus.read("queries", ["query_id", "modality", "image"], where).to_batches(
            max_chunksize=settings.batch_size
        )
        if batch.num_rows
    ]
    return pa.concat_tables(parts) if parts else pa.table({"query_id": pa.array([], pa.string())})


def _collect(batches: Iterable[pa.Table | pa.RecordBatch], wanted: list[str]) -> dict[str, np.ndarray]:
    vectors: dict[str, np.ndarray] = {}
    for batch in batches:
        if not batch.num_rows:
            continue
        flat = batch["vector"].combine_chunks() if isinstance(batch, pa.Table) else batch["vector"]
        matrix = flat.flatten().to_numpy(zero_copy_only=False).reshape(batch.num_rows, -1)
        vectors.update(zip(batch["query_id"].to_pylist(), matrix.astype(np.float32), strict=True))
    if len(vectors) != len(wanted):
        missing = sorted(set(wanted) - set(vectors))[:5]
        raise RuntimeError(f"embedded {len(vectors)} of {len(wanted)} queries; missing e.g. {missing}")
    return vectors
