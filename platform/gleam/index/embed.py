"""Embed satellite tiles with a Ray Data actor pool: each actor loads the encoder once, then streams.

Actors, not tasks, because loading an encoder (and moving it to a GPU) costs far more than a batch; one
actor per GPU with `num_gpus=1` when the cluster has GPUs, CPU actors otherwise. Each batch goes through
`gleam.model.embedding.embed_images`, the path evaluation and serving use too, under its precision
policy (auto: bf16 autocast on GPUs with bf16, fp16 on older GPUs, fp32 on CPU). The driver collects
`tile_id, sha256, vector` (small next to the images) because FAISS needs every vector in one process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from gleam import storage
from gleam.corpus.reader import PreparedCorpus
from gleam.corpus.schema import Modality
from gleam.index.config import EmbedConfig
from gleam.model.embedding import EncoderActor, embed_images, encoder_actor_kwargs
from gleam.resources import pool_options, size_pool

EMBEDDING_COLUMNS = ("tile_id", "sha256", "vector")


def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("tile_id", pa.string(), nullable=False),
            pa.field("sha256", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


@dataclass(frozen=True)
class EmbedStats:
    tiles: int
    seconds: float
    actors: int
    num_gpus: float
    precision: str

    @property
    def tiles_per_second(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0


class TileEmbedder(EncoderActor):
    """A Ray Data actor: JPEG tiles in, unit vectors out (`embed_images`, the path every stage shares)."""

    def __init__(
        self, encoder_uri: str, fingerprint: str, settings: dict[str, str], precision: str, threads: int
    ) -> None:
        super().__init__(encoder_uri, fingerprint, settings, precision, threads)
        self.dim = self.encoder.embedding_dim

    def __call__(self, batch: pa.Table) -> pa.Table:
        images = batch.column("image").to_pylist()
        vectors = embed_images(self.encoder, self.spec, images, Modality.SATELLITE, self.precision)
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        return pa.Table.from_arrays(
            [batch["tile_id"], batch["sha256"], pa.FixedSizeListArray.from_arrays(flat, self.dim)],
            schema=embeddings_schema(self.dim),
        )


def embed_tiles(
    corpus: PreparedCorpus,
    tile_ids: Sequence[str],
    encoder_uri: str,
    fingerprint: str,
    dim: int,
    config: EmbedConfig,
) -> tuple[pa.Table, EmbedStats]:
    """`tile_id, sha256, vector` of the given tiles (any order), embedded by the actor pool."""
    import ray
    import ray.data
    from ray.data.expressions import col

    wanted = sorted(set(tile_ids))
    if not wanted:
        return embeddings_schema(dim).empty_table(), EmbedStats(0, 0.0, 0, 0.0, "none")
    pool = size_pool(config.num_gpus, config.actors)
    precision = pool.cpu_precision(config.precision)
    actor_kwargs = encoder_actor_kwargs(encoder_uri, fingerprint, precision, config.num_cpus)
    fs, _ = storage.resolve(corpus.uri)
    paths = [storage.resolve(u)[1] for u in corpus.files("tiles")]
    started = time.perf_counter()
    # only the image bytes of wanted tiles travel further (the filter is applied to Arrow blocks). Read
    # tasks ask for half a CPU: reading JPEG bytes is I/O, and a whole CPU per read task can leave a
    # small node where actors (or a Serve application) hold fractions with none to start one on.
    dataset = (
        ray.data.read_parquet(paths, filesystem=fs, columns=["tile_id", "sha256", "image"], num_cpus=0.5)
        .filter(expr=col("tile_id").is_in(wanted))
        .map_batches(
            TileEmbedder,
            **pool_options(pool, config.num_cpus, config.batch_size, actor_kwargs),
        )
    )
    parts = [batch for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None)]
    table = (
        pa.concat_tables(parts).cast(embeddings_schema(dim))
        if parts
        else embeddings_schema(dim).empty_table()
    )
    seconds = time.perf_counter() - started
    if table.num_rows != len(wanted):
        missing = sorted(set(wanted) - set(table["tile_id"].to_pylist()))[:5]
        raise RuntimeError(f"embedded {table.num_rows} of {len(wanted)} tiles; missing e.g. {missing}")
    return table, EmbedStats(table.num_rows, seconds, pool.actors, pool.num_gpus, precision)
