"""The Ray Data stages of `prepare`: functions over Arrow batches, run on any worker.

`decode_batch` reads and processes images (I/O on a few threads, decoding on the task's CPU) and keeps
every row, turning failures into reasons; a raster window URI (`gleam.corpus.raster_uri`) is read as
that window of its GeoTIFF. `route_rows` selects the rows of one output and shapes them to its schema.
`decode_block` does both for one input block and writes the routed rows to the work area, one file per
output, so routing streams with the decode instead of a second pass over every image; it hands back
only metadata. `reroute` applies the driver's late decisions to the few blocks they touch.
A tile's listed `gsd_m` (metres per pixel of the source image) becomes the prepared image's in
`decode_batch`, where the source size is known (`images.prepared_gsd`).
None of them raises on bad data, so one poisoned file cannot fail a job. A failing store is another
matter: a read it fails is retried (`gleam.storage_errors.RetryPolicy`), and when the store does not
recover `decode_batch` raises StorageError, so the job fails instead of publishing a corpus with holes.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from gleam import storage
from gleam.corpus.config import ImageLimits
from gleam.corpus.images import ProcessedImage, prepared_gsd, process_image, unreadable
from gleam.corpus.raster_uri import is_window_uri
from gleam.corpus.reader import PARTS
from gleam.corpus.schema import (
    LISTING_SCHEMA,
    OUTPUT_SCHEMAS,
    RejectReason,
    Role,
)
from gleam.errors import StorageError
from gleam.storage_errors import RetryPolicy

if TYPE_CHECKING:
    from gleam.corpus.raster_read import RasterReaders

WORK_SCHEMA = pa.schema(
    [
        *LISTING_SCHEMA,
        pa.field("image", pa.binary()),
        pa.field("height", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("sha256", pa.string()),
    ]
)
IO_THREADS = 8
READ_CHUNK = 4 * 1024 * 1024
# What decode_block hands back per row: the work row without its pixels, plus where the row was written.
META_DROP = ("image",)
FILE, PART = "work_file", "work_part"


def read_limited(uri: str, max_bytes: int, retry: RetryPolicy) -> bytes | ProcessedImage:
    """Read at most max_bytes + 1 bytes, so a huge object is rejected without filling memory. A missing
    or unreadable object is a reject; a failing store is retried, then raises StorageError."""
    try:
        data = retry.call(uri, lambda: _read_head(uri, max_bytes + 1))
    except StorageError:
        raise
    except Exception as exc:
        return unreadable(uri, exc)
    if len(data) > max_bytes:
        return ProcessedImage(
            sha256="",
            reason=RejectReason.TOO_LARGE.value,
            detail=f"over {max_bytes} bytes (not read in full)",
        )
    return data


def _read_head(uri: str, size: int) -> bytes:
    """Read up to `size` bytes in chunks: one read(size) with the 200 MiB limit allocates that much per
    image before shrinking it (about 10x the cost of reading a 150 KiB image)."""
    chunks = []
    with storage.open_input(uri) as stream:
        while size > 0:
            chunk = stream.read(min(size, READ_CHUNK))
            chunks.append(chunk)
            size -= len(chunk)
            if len(chunk) < READ_CHUNK:  # the end of the object
                break
    return b"".join(chunks)


def _process_one(
    row: dict[str, Any],
    sizes: dict[str, tuple[int, int]],
    limits: ImageLimits,
    rasters: RasterReaders | None,
    retry: RetryPolicy,
) -> ProcessedImage:
    uri = row["source_uri"]
    if rasters is not None and is_window_uri(uri):
        data = rasters.read(uri, limits)  # a window of a GeoTIFF, as PNG bytes
    else:
        data = read_limited(uri, limits.max_bytes, retry)
    if isinstance(data, ProcessedImage):
        return data
    return process_image(data, tuple(sizes[row["modality"]]), limits)


def _raster_readers(uris: list[str], retry: RetryPolicy) -> AbstractContextManager[RasterReaders | None]:
    """Window readers when the batch names raster windows; rasterio is imported only then."""
    if not any(is_window_uri(uri) for uri in uris):
        return nullcontext(None)
    from gleam.corpus.raster_read import RasterReaders

    return RasterReaders(retry)


def decode_batch(
    batch: pa.Table,
    sizes: dict[str, tuple[int, int]],
    limits: ImageLimits,
    retry: RetryPolicy = RetryPolicy(),
) -> pa.Table:
    rows = batch.to_pylist()
    todo = [i for i, row in enumerate(rows) if row["reason"] is None]
    with _raster_readers([rows[i]["source_uri"] for i in todo], retry) as rasters:
        pool = ThreadPoolExecutor(min(IO_THREADS, max(1, len(todo))))
        try:
            processed = list(pool.map(lambda i: _process_one(rows[i], sizes, limits, rasters, retry), todo))
        finally:  # after a StorageError no queued read starts: the job is failing anyway
            pool.shutdown(cancel_futures=True)
        results = dict(zip(todo, processed, strict=True))
    out = []
    for i, row in enumerate(rows):
        result = results.get(i)
        if result is not None:
            row.update(
                image=result.image,
                height=result.height or None,
                width=result.width or None,
                sha256=result.sha256 or None,
                reason=result.reason,
                detail=result.detail,
            )
            if row["role"] == Role.TILE.value:
                source = (result.source_width, result.source_height)
                row["gsd_m"] = prepared_gsd(row.get("gsd_m"), source, (result.width, result.height))
        out.append(row)
    return pa.Table.from_pylist(out, schema=WORK_SCHEMA)


def route_rows(
    batch_rows: list[dict[str, Any]],
    output: str,
    late_rejects: dict[str, tuple[str, str]],
    tile_remap: dict[str, str],
) -> pa.Table:
    """Rows of one output ("tiles", "queries" or "rejects"), with the resolution step's decisions applied."""
    rows = []
    for row in (dict(r) for r in batch_rows):
        late = late_rejects.get(f"{row['role']}:{row['record_id']}")
        if late is not None:
            row["reason"], row["detail"] = late
        if output == "rejects":
            if row["reason"] is not None:
                rows.append(row)
        elif row["reason"] is None and row["role"] == (
            Role.TILE.value if output == "tiles" else Role.QUERY.value
        ):
            if output == "tiles":
                row["tile_id"] = row["record_id"]
            else:
                row["query_id"] = row["record_id"]
                row["tile_id"] = tile_remap.get(row["tile_id"], row["tile_id"])
                if row.get("semi_positives"):  # a dropped duplicate tile is known by the kept copy's id
                    row["semi_positives"] = [tile_remap.get(t, t) for t in row["semi_positives"]]
            rows.append(row)
    schema = OUTPUT_SCHEMAS[output]
    return pa.Table.from_pylist([{f: r.get(f) for f in schema.names} for r in rows], schema=schema)


def part_of(role: str, reason: str | None) -> str:
    """The output a row goes to before the driver's late decisions."""
    if reason is not None:
        return "rejects"
    return "tiles" if role == Role.TILE.value else "queries"


def block_stem(batch: pa.Table) -> str:
    """A name fixed by the block's rows, so a retried task overwrites its own files, never adds more."""
    digest = hashlib.sha1()
    for column in ("role", "record_id", "source_uri"):
        for value in batch.column(column).to_pylist():
            digest.update(f"{value}\0".encode())
    return digest.hexdigest()[:20]


def work_file(work_uri: str, stem: str, part: str) -> str:
    return storage.join(work_uri, f"{stem}.{part}.parquet")


def write_parquet(table: pa.Table, uri: str, image_codec: str) -> None:
    """JPEG bytes do not compress: the image column gets `image_codec` (default none), the rest zstd."""
    fs, path = storage.resolve(uri)
    if storage.is_local(uri):
        storage.makedirs(storage.parent(uri))
    codecs = {name: (image_codec if name == "image" else "zstd") for name in table.schema.names}
    with fs.open_output_stream(path) as out:
        pq.write_table(table, out, compression=codecs)


def decode_block(
    batch: pa.Table,
    work_uri: str,
    sizes: dict[str, tuple[int, int]],
    limits: ImageLimits,
    retry: RetryPolicy = RetryPolicy(),
    image_codec: str = "none",
) -> pa.Table:
    """Decode one block, write its rows routed (one work file per output that has rows) and return
    the rows' metadata: what the driver needs to resolve duplicates and pairs, and to publish."""
    work = decode_batch(batch, sizes, limits, retry)
    stem = block_stem(batch)
    rows = work.to_pylist()
    parts = [part_of(r["role"], r["reason"]) for r in rows]
    for part in PARTS:
        if part in parts:
            write_parquet(route_rows(rows, part, {}, {}), work_file(work_uri, stem, part), image_codec)
    meta = work.drop_columns(list(META_DROP))
    meta = meta.append_column(FILE, pa.array([stem] * work.num_rows, pa.string()))
    return meta.append_column(PART, pa.array(parts, pa.string()))


def empty_meta() -> pa.Table:
    """decode_block's answer for no rows at all."""
    fields = [f for f in WORK_SCHEMA if f.name not in META_DROP]
    return pa.schema([*fields, pa.field(FILE, pa.string()), pa.field(PART, pa.string())]).empty_table()


def reroute(
    tables: dict[str, pa.Table], late_rejects: dict[str, tuple[str, str]], tile_remap: dict[str, str]
) -> dict[str, pa.Table]:
    """One block's routed outputs with the late decisions applied (a duplicate tile, a query whose
    tile is gone, a query re-pointed at the kept copy of its tile)."""
    rows: list[dict[str, Any]] = []
    for part, table in tables.items():
        for row in table.to_pylist():
            row.setdefault("reason", None)
            row.setdefault("detail", None)
            if part == "tiles":
                row.update(role=Role.TILE.value, record_id=row["tile_id"])
            elif part == "queries":
                row.update(role=Role.QUERY.value, record_id=row["query_id"])
            rows.append(row)
    return {part: route_rows(rows, part, late_rejects, tile_remap) for part in PARTS}
