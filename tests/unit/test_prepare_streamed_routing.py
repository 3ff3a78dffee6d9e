"""Prepare routes while it decodes: each block's rows land in per-part work files, and only the blocks
the driver's late decisions touch are rewritten. No Ray here: the stage functions run in-process."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gleam.corpus.config import ImageLimits
from gleam.corpus.prepare import _block_rows, _publish, _touched_blocks
from gleam.corpus.resolve import Resolution, resolve
from gleam.corpus.schema import LISTING_SCHEMA, OUTPUT_SCHEMAS
from gleam.corpus.stages import PART, block_stem, decode_block, empty_meta, reroute, work_file
from tests.support import bad_images

SIZES = {"satellite": (32, 32), "drone": (32, 32)}


def _listing(root: Path) -> pa.Table:
    tile = bad_images.jpeg((64, 64), seed=1)
    files = {
        "t1.jpg": tile,
        "t2.jpg": tile,  # same bytes: a duplicate tile, kept once as t1
        "q1.jpg": bad_images.jpeg((64, 48), seed=2),
        "q2.jpg": bad_images.jpeg((64, 48), seed=3),
        "bad.jpg": bad_images.text_file(),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)

    def row(role: str, record_id: str, tile_id: str, modality: str, **extra: object) -> dict:
        return (
            dict.fromkeys(LISTING_SCHEMA.names)
            | extra
            | {
                "role": role,
                "record_id": record_id,
                "tile_id": tile_id,
                "modality": modality,
                "location_id": tile_id,
                "split": "train",
                "source": "test",
                "source_uri": str(root / f"{record_id}.jpg"),
            }
        )

    rows = [
        row("tile", "t1", "t1", "satellite", gsd_m=0.5),  # 64 px of 0.5 m -> 32 px of 1 m
        row("tile", "t2", "t2", "satellite"),
        row("query", "q1", "t1", "drone", set_id="s1"),
        row("query", "q2", "t2", "drone"),
        row("query", "bad", "t1", "drone"),
    ]
    return pa.Table.from_pylist(rows, schema=LISTING_SCHEMA)


def test_a_block_is_written_routed_and_only_touched_blocks_are_rewritten(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    listing = _listing(tmp_path / "raw")
    work = str(tmp_path / "corpus" / "_work")
    meta = decode_block(listing, work, SIZES, ImageLimits())
    assert meta.schema.equals(empty_meta().schema)
    again = decode_block(listing, work, SIZES, ImageLimits())  # a retried task rewrites its own files
    assert meta.equals(again) and "image" not in meta.column_names
    stem = block_stem(listing)
    assert sorted(p.name for p in Path(work).iterdir()) == sorted(
        f"{stem}.{part}.parquet" for part in ("tiles", "queries", "rejects")
    )
    assert dict(zip(meta["record_id"].to_pylist(), meta[PART].to_pylist(), strict=True)) == {
        "t1": "tiles",
        "t2": "tiles",
        "q1": "queries",
        "q2": "queries",
        "bad": "rejects",
    }
    tiles = pq.ParquetFile(work_file(work, stem, "tiles"))
    codecs = {
        tiles.schema_arrow.names[i]: tiles.metadata.row_group(0).column(i).compression for i in range(2)
    }
    assert codecs == {"tile_id": "ZSTD", "image": "UNCOMPRESSED"}  # JPEG bytes are stored as they are

    resolution = resolve(meta)
    assert resolution.tile_remap == {"t2": "t1"}
    assert _touched_blocks(meta, resolution) == {stem}
    assert _touched_blocks(meta, Resolution()) == set()

    tables = {part: pq.read_table(work_file(work, stem, part)) for part in ("tiles", "queries", "rejects")}
    out = reroute(tables, resolution.late_rejects, resolution.tile_remap)
    assert out["tiles"]["tile_id"].to_pylist() == ["t1"]
    queries, rejects = out["queries"].to_pylist(), out["rejects"].to_pylist()
    assert {r["query_id"]: r["tile_id"] for r in queries} == {"q1": "t1", "q2": "t1"}
    assert {r["query_id"]: r["set_id"] for r in queries} == {"q1": "s1", "q2": None}
    assert out["tiles"]["gsd_m"].to_pylist() == [1.0]  # scaled by the resize, once (not again on reroute)
    reasons = sorted((r["record_id"], r["reason"]) for r in rejects)
    assert reasons == [("bad", "not_an_image"), ("t2", "duplicate")]
    assert all(out[part].schema.equals(OUTPUT_SCHEMAS[part]) for part in out)


def test_untouched_blocks_are_moved_not_rewritten(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    listing = _listing(tmp_path / "raw").slice(2, 3)  # q1, q2, bad: no duplicate tile in this corpus
    corpus = tmp_path / "corpus"
    meta = decode_block(listing, str(corpus / "_work"), SIZES, ImageLimits())
    files = _publish(str(corpus), str(corpus / "_work"), meta, Resolution(), "none")
    stem = block_stem(listing)
    assert files == {
        "tiles": ["empty.parquet"],
        "queries": [f"{stem}.parquet"],
        "rejects": [f"{stem}.parquet"],
    }
    assert not any((corpus / "_work").iterdir())
    assert pq.read_table(corpus / "queries" / f"{stem}.parquet")["query_id"].to_pylist() == ["q1", "q2"]
    assert pq.read_table(corpus / "tiles" / "empty.parquet").schema.equals(OUTPUT_SCHEMAS["tiles"])


def test_block_sizes() -> None:
    assert _block_rows(1800, None, 2000, 2) == 225  # about 4 tasks per worker
    assert _block_rows(1800, None, 100, 2) == 100  # never over rows_per_shard
    assert _block_rows(1800, 4, 10, 2) == 4  # batch_size when given
    assert _block_rows(10_000_000, 4, 10_000, 2) == 5000  # never over MAX_INPUT_BLOCKS blocks
    assert _block_rows(0, None, 2000, 2) == 1


def test_a_corpus_prepared_before_gsd_m_and_set_id_reads_them_as_nulls(tmp_path: Path) -> None:
    """Older corpora lack the later columns; asking for them gives nulls of the schema's type."""
    import json

    from gleam.corpus.reader import open_corpus

    old = {part: pa.schema([f for f in OUTPUT_SCHEMAS[part] if f.name not in LATER]) for part in LATER_PARTS}
    (tmp_path / "tiles").mkdir()
    (tmp_path / "queries").mkdir()
    required = {"image": b"x", "height": 1, "width": 1, "source": "s", "split": "test", "sha256": "0"}
    rows = [{"tile_id": "t1", "lat": 47.0}, {"tile_id": "t2"}]
    tiles = pa.Table.from_pylist([required | {"source_uri": "u"} | r for r in rows], schema=old["tiles"])
    pq.write_table(tiles, tmp_path / "tiles" / "a.parquet")
    pq.write_table(old["queries"].empty_table(), tmp_path / "queries" / "empty.parquet")
    files = {"tiles": ["a.parquet"], "queries": ["empty.parquet"], "rejects": []}
    (tmp_path / "manifest.json").write_text(json.dumps({"files": files}))
    corpus = open_corpus(str(tmp_path))
    assert not corpus.has_column("tiles", "gsd_m") and corpus.has_column("tiles", "lat")
    got = corpus.read("tiles", ["gsd_m", "tile_id", "lat"])
    assert got.column_names == ["gsd_m", "tile_id", "lat"]
    assert got.schema.field("gsd_m").type == pa.float64()
    assert got.to_pylist() == [
        {"gsd_m": None, "tile_id": "t1", "lat": 47.0},
        {"gsd_m": None, "tile_id": "t2", "lat": None},
    ]
    assert corpus.read("tiles", ["gsd_m"]).to_pylist() == [{"gsd_m": None}] * 2  # no present column
    filtered = corpus.read("tiles", ["tile_id", "gsd_m"], filter=pa.compute.field("tile_id") == "t2")
    assert filtered.to_pylist() == [{"tile_id": "t2", "gsd_m": None}]
    queries = corpus.read("queries", ["query_id", "set_id", "semi_positives"])
    assert queries.num_rows == 0 and queries.schema.field("set_id").type == pa.string()
    assert "gsd_m" not in corpus.read("tiles").column_names  # all columns: what the files hold


LATER = ("gsd_m", "set_id", "semi_positives")
LATER_PARTS = ("tiles", "queries")
