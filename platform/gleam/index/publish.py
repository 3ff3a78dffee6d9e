"""Write a built index as a version folder, then point CURRENT at it; clean up what builds left behind.

Order is the whole point: every file of the version first, `meta.json` (with the sha256 of index.faiss)
after them, CURRENT last. A crash at any step leaves CURRENT on the previous version; the folder it was
writing has no meta.json, so no reader accepts it, and `clean_versions` removes it on the next build.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gleam import storage
from gleam.index.catalog import sha256_file
from gleam.index.layout import (
    EMBEDDINGS_DIR,
    IDS_FILE,
    INDEX_FILE,
    META_FILE,
    IndexLocation,
)

log = logging.getLogger(__name__)
EMBEDDING_ROWS_PER_PART = 100_000


def write_version(
    location: IndexLocation,
    version: str,
    index: Any,
    ids: pa.Table,
    embeddings: pa.Table,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """All files of one version, meta.json last; returns meta with sha256, sizes and publish seconds.

    `meta["seconds"]["total"]`, when present, is the time before publishing and grows by it here, so
    the stored meta.json carries the whole build time.
    """
    import time

    import faiss

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gleam-index-") as tmp:
        local = Path(tmp) / INDEX_FILE
        faiss.write_index(index, str(local))
        meta = {**meta, "index_sha256": sha256_file(local), "index_bytes": local.stat().st_size}
        storage.upload_file(local, location.file_uri(version, INDEX_FILE))
    storage.write_bytes(location.file_uri(version, IDS_FILE), _parquet_bytes(ids))
    for part, start in enumerate(range(0, max(embeddings.num_rows, 1), EMBEDDING_ROWS_PER_PART)):
        chunk = embeddings.slice(start, EMBEDDING_ROWS_PER_PART)
        uri = storage.join(location.version_uri(version), EMBEDDINGS_DIR, f"part-{part:05d}.parquet")
        storage.write_bytes(uri, _parquet_bytes(chunk))
    seconds = dict(meta.get("seconds") or {})
    seconds["publish"] = time.perf_counter() - started
    if "total" in seconds:
        seconds["total"] += seconds["publish"]
    meta = {**meta, "seconds": seconds}
    storage.write_json(location.file_uri(version, META_FILE), meta)
    return meta


def point_current(location: IndexLocation, version: str) -> None:
    storage.write_text(location.current_uri, version + "\n")


def read_embeddings(location: IndexLocation, version: str) -> pa.Table:
    """The embeddings a version was built from (the input of an incremental rebuild)."""
    folder = storage.join(location.version_uri(version), EMBEDDINGS_DIR)
    files = [e.uri for e in storage.list_files(folder) if e.uri.endswith(".parquet")]
    tables = [pq.read_table(pa.BufferReader(storage.read_bytes(f))) for f in files]
    return pa.concat_tables(tables) if tables else pa.table({})


def clean_versions(location: IndexLocation, keep: int) -> list[str]:
    """Remove half-written versions and all but the newest `keep` complete ones (never CURRENT)."""
    current = location.current()
    versions = location.versions()
    complete = sorted(v for v, done in versions.items() if done and v != current)
    stale = [v for v, done in versions.items() if not done and v != current]
    surplus = complete[: max(0, len(complete) - (keep - 1 if current else keep))]
    removed = sorted(stale + surplus)
    for version in removed:
        log.info("removing %s version %s", "half-written" if version in stale else "old", version)
        storage.delete(location.version_uri(version))
    return removed


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()
