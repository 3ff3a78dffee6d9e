"""The Ray Data stages of `prepare`: pure functions over Arrow batches, run on any worker.

`decode_batch` reads and processes images (I/O on a few threads, decoding on the task's CPU) and keeps
every row, turning failures into reasons; a raster window URI (`gleam.corpus.raster_uri`) is read as
that window of its GeoTIFF. `route_batch` selects the rows of one output and shapes them to its schema.
Neither raises on bad data, so one poisoned file cannot fail a job. A failing store is another matter:
a read it fails is retried (`gleam.storage_errors.RetryPolicy`), and when the store does not recover
`decode_batch` raises StorageError, so the job fails instead of publishing a corpus with holes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from gleam import storage
from gleam.corpus.config import ImageLimits
from gleam.corpus.images import ProcessedImage, process_image, unreadable
from gleam.corpus.raster_uri import is_window_uri
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
    with storage.open_input(uri) as stream:
        return stream.read(size)


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
        out.append(row)
    return pa.Table.from_pylist(out, schema=WORK_SCHEMA)


def route_batch(
    batch: pa.Table,
    output: str,
    late_rejects: dict[str, tuple[str, str]],
    tile_remap: dict[str, str],
) -> pa.Table:
    """Rows of one output ("tiles", "queries" or "rejects"), with the resolution step's decisions applied."""
    rows = []
    for row in batch.to_pylist():
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
