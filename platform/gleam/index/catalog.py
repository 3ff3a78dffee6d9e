"""Open a published index for search: the reader side of `<store>/indexes/<name>/`.

A reader trusts nothing it has not checked: the version comes from CURRENT (or is named), the FAISS
file must match the sha256 in meta.json, and the caller says which encoder it embeds queries with,
because vectors from another encoder would be searched without error and return nonsense.

IVF indexes are memory-mapped (their inverted lists stay on disk and in the page cache, shared by all
replicas on a host); other kinds are read into memory. Indexes in S3 are downloaded once into a local
cache (`$GLEAM_HOME/cache/indexes/<name>/<version>/`), verified there, and mapped from it.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gleam import storage
from gleam.errors import RefusedError
from gleam.index.build import set_search_params
from gleam.index.layout import (
    IDS_FILE,
    INDEX_FILE,
    META_FILE,
    IndexLocation,
    IndexNotFoundError,
)
from gleam.model.weights import FingerprintMismatchError

_HASH_CHUNK = 1 << 22


class IndexChecksumError(RefusedError, RuntimeError):
    """index.faiss does not match the sha256 recorded in meta.json: corrupt or tampered with."""


class EncoderMismatchError(FingerprintMismatchError):
    """The index was built with another encoder than the one the caller embeds queries with."""


@dataclass
class OpenedIndex:
    """A searchable index version: FAISS ids are positions into the tile arrays."""

    name: str
    version: str
    meta: dict[str, Any]
    index: Any  # faiss.Index
    tile_ids: np.ndarray  # object array of str, by FAISS id
    lat: np.ndarray  # float64, NaN where unknown
    lon: np.ndarray
    # the tile's ground geometry (the location estimate's footprint and heatmap scale): metres per pixel
    # (NaN where unknown) and pixel size (0 where unknown); indexes built before them read as unknown
    gsd_m: np.ndarray | None = None
    width: np.ndarray | None = None
    height: np.ndarray | None = None
    _positions: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def encoder_fingerprint(self) -> str:
        return str(self.meta["encoder"]["fingerprint"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return len(self.tile_ids)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, k) float32, tile_ids (Q, k) object); slots beyond the index size hold None, -inf."""
        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"query vectors have dimension {queries.shape[1]}, the index {self.dim}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        scores, ids = self.index.search(queries, k)
        found = ids >= 0
        tiles = np.full(ids.shape, None, dtype=object)
        tiles[found] = self.tile_ids[ids[found]]
        scores = np.where(found, scores, -np.inf).astype(np.float32)
        return scores, tiles

    def __post_init__(self) -> None:
        n = len(self.tile_ids)
        if self.gsd_m is None:
            self.gsd_m = np.full(n, np.nan)
        if self.width is None:
            self.width = np.zeros(n, dtype=np.int32)
        if self.height is None:
            self.height = np.zeros(n, dtype=np.int32)

    def geometry(self, position: int) -> dict[str, Any]:
        """lat, lon, gsd_m, width, height of the tile at `position` (None where unknown): what a
        candidate carries for `gleam.index.location.estimate_location`."""
        assert self.gsd_m is not None and self.width is not None and self.height is not None
        return {
            "lat": _known(self.lat[position]),
            "lon": _known(self.lon[position]),
            "gsd_m": _known(self.gsd_m[position]),
            "width": int(self.width[position]) or None,
            "height": int(self.height[position]) or None,
        }

    def position(self, tile_id: str) -> int | None:
        """The FAISS id of a tile (None when the index does not hold it)."""
        if not self._positions:
            self._positions = {t: i for i, t in enumerate(self.tile_ids.tolist())}
        return self._positions.get(tile_id)


def open_index(
    store_uri: str,
    name: str,
    version: str | None = None,
    expect_fingerprint: str | None = None,
    cache_dir: str | Path | None = None,
) -> OpenedIndex:
    """The CURRENT (or given) version of index `name`, checked against its checksum and encoder."""
    location = IndexLocation(store_uri, name)
    version = version or location.current()
    if version is None:
        raise IndexNotFoundError(f"no published index {name!r} under {location.root} (no CURRENT)")
    meta = read_meta(location, version)
    fingerprint = str(meta["encoder"]["fingerprint"])
    if expect_fingerprint is not None and fingerprint != expect_fingerprint:
        raise EncoderMismatchError(
            f"index {name}/{version} was built with encoder {fingerprint[:12]} "
            f"({meta['encoder'].get('uri')}), not {expect_fingerprint[:12]}: rebuild the index with this "
            "encoder, or serve with the one it was built with"
        )
    path = _local_copy(location, version, meta, cache_dir)
    index = _read_faiss(path, mmap="IVF" in str(meta["index_key"]))
    set_search_params(index, dict(meta.get("search_params") or {}))
    ids = pq.read_table(storage.resolve(location.file_uri(version, IDS_FILE))[1], filesystem=_fs(location))
    if ids.num_rows != index.ntotal:
        raise IndexChecksumError(
            f"index {name}/{version} holds {index.ntotal} vectors but {IDS_FILE} maps {ids.num_rows}"
        )
    ids = ids.sort_by("id")
    return OpenedIndex(
        name=name,
        version=version,
        meta=meta,
        index=index,
        tile_ids=np.asarray(ids["tile_id"].to_pylist(), dtype=object),
        lat=ids["lat"].to_numpy(zero_copy_only=False).astype(np.float64),
        lon=ids["lon"].to_numpy(zero_copy_only=False).astype(np.float64),
        **_geometry(ids),
    )


def _geometry(ids: pa.Table) -> dict[str, np.ndarray]:
    """gsd_m (NaN where null), width and height (0 where null) from ids.parquet; absent before them."""
    out: dict[str, np.ndarray] = {}
    if "gsd_m" in ids.column_names:
        out["gsd_m"] = ids["gsd_m"].cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    for name in ("width", "height"):
        if name in ids.column_names:
            out[name] = ids[name].fill_null(0).to_numpy(zero_copy_only=False).astype(np.int32)
    return out


def _known(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def read_meta(location: IndexLocation, version: str) -> dict[str, Any]:
    uri = location.file_uri(version, META_FILE)
    try:
        return storage.read_json(uri)
    except storage.StorageError:
        raise IndexNotFoundError(
            f"index {location.name} has no complete version {version!r} ({uri} is missing)"
        ) from None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _local_copy(
    location: IndexLocation, version: str, meta: dict[str, Any], cache_dir: str | Path | None
) -> Path:
    """A verified local file of index.faiss: the store's own file when local, else a cached download."""
    expected = str(meta["index_sha256"])
    uri = location.file_uri(version, INDEX_FILE)
    if storage.is_local(uri):
        path = Path(storage.resolve(uri)[1])
        _verify(path, expected, uri)
        return path
    root = Path(cache_dir) if cache_dir else storage.gleam_home() / "cache" / "indexes"
    target = root / location.name / version / INDEX_FILE
    if target.exists() and sha256_file(target) == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    fs, path = storage.resolve(uri)
    with fs.open_input_stream(path) as source, open(partial, "wb") as sink:
        shutil.copyfileobj(source, sink, _HASH_CHUNK)
    _verify(partial, expected, uri)
    partial.replace(target)
    return target


def _verify(path: Path, expected: str, uri: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise IndexChecksumError(f"{uri} has sha256 {actual[:12]}, meta.json says {expected[:12]}")


def _read_faiss(path: Path, mmap: bool) -> Any:
    import faiss

    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)


def _fs(location: IndexLocation) -> Any:
    return storage.resolve(location.root)[0]
