"""Where a published index lives in the store, and which of its versions are complete.

    <store>/indexes/<name>/CURRENT               the published version (written last, atomically)
    <store>/indexes/<name>/LEASE                 held while a build runs
    <store>/indexes/<name>/<version>/index.faiss
                                    /ids.parquet    position (int64 FAISS id) -> tile_id, sha256, lat, lon
                                    /embeddings/    tile_id, sha256, vector (Parquet parts)
                                    /meta.json      written after everything else: marks the version complete

A version folder without meta.json is a build that died half-way: readers never see it (CURRENT never
names it) and the next build removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from gleam import storage
from gleam.errors import RefusedError

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
META_FILE = "meta.json"
EMBEDDINGS_DIR = "embeddings"
CURRENT_FILE = "CURRENT"
LEASE_FILE = "LEASE"
INDEXES_DIR = "indexes"


class IndexNotFoundError(RefusedError, LookupError):
    """No published index (or no such version) under the given name."""


@dataclass(frozen=True)
class IndexLocation:
    store: str
    name: str

    @property
    def root(self) -> str:
        return storage.join(storage.normalize(self.store), INDEXES_DIR, self.name)

    @property
    def current_uri(self) -> str:
        return storage.join(self.root, CURRENT_FILE)

    @property
    def lease_uri(self) -> str:
        return storage.join(self.root, LEASE_FILE)

    def version_uri(self, version: str) -> str:
        return storage.join(self.root, version)

    def file_uri(self, version: str, file: str) -> str:
        return storage.join(self.root, version, file)

    def current(self) -> str | None:
        """The published version, or None before the first publish."""
        try:
            version = storage.read_text(self.current_uri).strip()
        except storage.StorageError:
            return None
        return version or None

    def versions(self) -> dict[str, bool]:
        """version -> complete (has meta.json), for every version folder."""
        return {v: storage.exists(self.file_uri(v, META_FILE)) for v in storage.list_dirs(self.root)}

    def new_version(self) -> str:
        """A fresh version name: UTC time to the second (sortable), suffixed on a same-second clash."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        taken = set(storage.list_dirs(self.root))
        version, n = stamp, 1
        while version in taken:
            n += 1
            version = f"{stamp}-{n}"
        return version
