"""One path from images to vectors: evaluation, the index build and the served QueryEncoder agree.

The same JPEGs go through each stage's own entry point with one tiny random-weight encoder saved to a
folder: the evaluation job's split loop over a prepared corpus (real Parquet in the corpus schema, read
by the corpus reader), the index build's Ray Data actor class `TileEmbedder` called on an Arrow batch,
and the Serve deployment's class constructed in-process, answering one batch of requests. Their vectors
must be equal within float tolerance; on a GPU the three also share the autocast precision.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gleam.corpus.reader import PreparedCorpus, open_corpus
from gleam.corpus.schema import QUERIES_SCHEMA, TILES_SCHEMA, Modality
from gleam.evaluation.split import split_gallery, split_queries
from gleam.index.embed import TileEmbedder
from gleam.model import weights
from serve.encoder import QueryEncoder
from tests.support.bad_images import exif_rotated_jpeg, jpeg
from tests.support.training import tiny_encoder

SPLIT = "test"
# JPEGs of several sizes and aspect ratios (the transform resizes each to the spec's 64x64), one rotated
# by its EXIF tag (decoding must honour it the same way everywhere)
TILES = [jpeg((80, 80), seed=1), jpeg((64, 96), seed=2), jpeg((120, 72), seed=3), exif_rotated_jpeg((96, 48))]
QUERIES = [jpeg((96, 64), seed=11), jpeg((50, 70), seed=12), jpeg((64, 64), seed=13)]


@pytest.fixture(scope="module")
def encoder_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_encoder(tmp_path_factory.mktemp("encoder") / "encoder", seed=7, embed_dim=16, size=64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> PreparedCorpus:
    """TILES and drone QUERIES (query i's positive is tile i) laid out as `prepare` writes a corpus."""
    root = tmp_path_factory.mktemp("corpus")
    tiles = [
        _row(TILES_SCHEMA, image, tile_id=f"tile-{i}", location_id=f"loc-{i}")
        for i, image in enumerate(TILES)
    ]
    queries = [
        _row(
            QUERIES_SCHEMA,
            image,
            query_id=f"query-{i}",
            modality=Modality.DRONE.value,
            tile_id=f"tile-{i}",
            location_id=f"loc-{i}",
        )
        for i, image in enumerate(QUERIES)
    ]
    for part, schema, rows in (("tiles", TILES_SCHEMA, tiles), ("queries", QUERIES_SCHEMA, queries)):
        (root / part).mkdir()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / part / "part-0.parquet")
    files = {"tiles": ["part-0.parquet"], "queries": ["part-0.parquet"], "rejects": []}
    (root / "manifest.json").write_text(json.dumps({"files": files}))
    return open_corpus(str(root))


def _row(schema: pa.Schema, image: bytes, **fields: str) -> dict[str, object]:
    with Image.open(io.BytesIO(image)) as decoded:
        width, height = decoded.size
    common = {"image": image, "height": height, "width": width, "lat": None, "lon": None, "source": "test"}
    row = {**common, "split": SPLIT, "sha256": hashlib.sha256(image).hexdigest(), "source_uri": "memory"}
    return {name: {**row, **fields}.get(name) for name in schema.names}


def _evaluation(corpus: PreparedCorpus, encoder_uri: str) -> tuple[np.ndarray, np.ndarray]:
    """Tile and drone vectors as the evaluation job computes them.

    One batch per side, as the index and serving get them here: under GPU autocast another batch shape
    may select other kernels, a difference of batching rather than of the path.
    """
    encoder, spec, _ = weights.load(encoder_uri)
    gallery = split_gallery(corpus, SPLIT, encoder, spec, batch_size=64)
    queries = split_queries(corpus, SPLIT, Modality.DRONE, encoder, spec, batch_size=64)
    assert gallery.ids == [f"tile-{i}" for i in range(len(TILES))]
    assert queries.ids == [f"query-{i}" for i in range(len(QUERIES))]
    return gallery.vectors, queries.vectors


def _index(corpus: PreparedCorpus, encoder_uri: str) -> np.ndarray:
    """Tile vectors from the index build's actor class, on one Arrow batch as Ray Data hands it over."""
    _, fingerprint = weights.pin(encoder_uri)
    actor = TileEmbedder(encoder_uri, fingerprint, settings={}, precision="auto", threads=0)
    batch = corpus.read("tiles", ["tile_id", "sha256", "image"]).sort_by("tile_id")
    out = actor(batch)
    assert out["tile_id"].to_pylist() == batch["tile_id"].to_pylist()
    return np.asarray(out["vector"].to_pylist(), dtype=np.float32)


def _served(encoder_uri: str, modality: str, images: list[bytes]) -> np.ndarray:
    """One request per image, answered together as one Serve batch by the replica's own batch body.

    `@serve.batch` queues only inside a replica, so the batch it would assemble is handed to the method it
    wraps directly: grouping by modality, the forward pass and the per-request fusion all run.
    """
    _, fingerprint = weights.pin(encoder_uri)
    replica = QueryEncoder.func_or_class(encoder_uri, fingerprint, {"max_batch_size": 16})
    answer_batch = QueryEncoder.func_or_class.embed.__wrapped__
    requests = [(modality, [image]) for image in images]
    return np.stack(asyncio.run(answer_batch(replica, requests)))


def test_evaluation_index_and_serving_embed_an_image_alike(corpus: PreparedCorpus, encoder_uri: str) -> None:
    evaluated_tiles, evaluated_queries = _evaluation(corpus, encoder_uri)
    indexed_tiles = _index(corpus, encoder_uri)
    served_tiles = _served(encoder_uri, Modality.SATELLITE.value, TILES)
    served_queries = _served(encoder_uri, Modality.DRONE.value, QUERIES)

    for vectors in (evaluated_tiles, evaluated_queries, indexed_tiles, served_tiles, served_queries):
        assert vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(indexed_tiles, evaluated_tiles, atol=2e-5)
    np.testing.assert_allclose(served_tiles, evaluated_tiles, atol=2e-5)
    np.testing.assert_allclose(served_queries, evaluated_queries, atol=2e-5)
    # the comparison has teeth: different images give clearly different vectors with this encoder
    off_diagonal = (evaluated_tiles @ evaluated_tiles.T)[~np.eye(len(TILES), dtype=bool)]
    assert off_diagonal.max() < 1 - 1e-3
