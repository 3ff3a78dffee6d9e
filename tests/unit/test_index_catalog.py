"""Publishing and opening index versions on a real filesystem and a real S3 endpoint."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest

from gleam import storage
from gleam.index import build
from gleam.index.catalog import EncoderMismatchError, IndexChecksumError, open_index
from gleam.index.embed import embeddings_schema
from gleam.index.factory import plan_index
from gleam.index.layout import META_FILE, IndexLocation, IndexNotFoundError
from gleam.index.publish import clean_versions, point_current, read_embeddings, write_version
from gleam.model.weights import FingerprintMismatchError
from tests.unit.test_index_build import clustered

DIM = 16


def publish(
    location: IndexLocation,
    vectors: np.ndarray,
    key: str | None = None,
    current: bool = True,
    geometry: dict | None = None,
) -> str:
    """A complete version the way the job writes it (tile ids t00000..., coordinates from the position);
    `geometry`: extra ids.parquet columns (gsd_m, width, height), absent as in indexes built before them."""
    n = len(vectors)
    plan = plan_index(n, DIM, 1 << 30, exact_limit=1000, force_key=key)
    built = build.train_and_add(vectors, plan)
    params = {"nprobe": 8} if "IVF" in plan.key else {}
    tile_ids = [f"t{i:05d}" for i in range(n)]
    ids = pa.table(
        {
            "id": np.arange(n, dtype=np.int64),
            "tile_id": tile_ids,
            "sha256": [f"sha{i}" for i in range(n)],
            "lat": np.linspace(40, 41, n),
            "lon": np.linspace(8, 9, n),
            **(geometry or {}),
        }
    )
    flat = pa.array(vectors.reshape(-1), pa.float32())
    embeddings = pa.Table.from_arrays(
        [
            pa.array(tile_ids),
            pa.array([f"sha{i}" for i in range(n)]),
            pa.FixedSizeListArray.from_arrays(flat, DIM),
        ],
        schema=embeddings_schema(DIM),
    )
    version = location.new_version()
    meta = {
        "version": version,
        "encoder": {"uri": "models:/gleam-c@x", "fingerprint": "f" * 64},
        "dim": DIM,
        "index_key": plan.key,
        "search_params": params,
    }
    write_version(location, version, built.index, ids, embeddings, meta)
    if current:
        point_current(location, version)
    return version


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "store") if request.param == "local" else request.getfixturevalue("s3_bucket")


def test_open_current_searches_and_maps_ids_to_tiles(store: str, tmp_path: Path) -> None:
    location = IndexLocation(store, "region")
    vectors = clustered(500, DIM)
    version = publish(location, vectors)
    opened = open_index(store, "region", cache_dir=tmp_path / "cache")
    assert opened.version == version and len(opened) == 500 and opened.dim == DIM
    scores, tiles = opened.search(vectors[[7, 99]], k=3)
    assert tiles[:, 0].tolist() == ["t00007", "t00099"] and scores.shape == (2, 3)
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert opened.lat[7] == pytest.approx(np.linspace(40, 41, 500)[7])
    assert opened.position("t00099") == 99 and opened.position("nope") is None
    # more neighbours asked than vectors held: the rest is empty, never an invented tile
    scores, tiles = opened.search(vectors[:1], k=600)
    assert tiles[0, 500:].tolist() == [None] * 100 and np.isneginf(scores[0, 500:]).all()
    embeddings = read_embeddings(location, version)
    assert embeddings.num_rows == 500 and embeddings["tile_id"][3].as_py() == "t00003"


def test_a_named_version_and_a_missing_one(store: str, tmp_path: Path) -> None:
    location = IndexLocation(store, "region")
    with pytest.raises(IndexNotFoundError, match="no CURRENT"):
        open_index(store, "region")
    old = publish(location, clustered(100, DIM, seed=1))
    new = publish(location, clustered(120, DIM, seed=2))
    assert len(open_index(store, "region", cache_dir=tmp_path)) == 120
    assert len(open_index(store, "region", version=old, cache_dir=tmp_path)) == 100
    assert open_index(store, "region", version=new, cache_dir=tmp_path).version == new
    with pytest.raises(IndexNotFoundError, match="no complete version 'v9'"):
        open_index(store, "region", version="v9")


def test_a_corrupt_index_file_is_refused(store: str, tmp_path: Path) -> None:
    location = IndexLocation(store, "region")
    version = publish(location, clustered(200, DIM))
    uri = location.file_uri(version, "index.faiss")
    data = bytearray(storage.read_bytes(uri))
    data[-5] ^= 0xFF
    storage.write_bytes(uri, bytes(data))
    with pytest.raises(IndexChecksumError, match=r"meta\.json says"):
        open_index(store, "region", cache_dir=tmp_path / "fresh-cache")


def test_an_index_of_another_encoder_is_refused(store: str, tmp_path: Path) -> None:
    publish(IndexLocation(store, "region"), clustered(50, DIM))
    assert open_index(store, "region", expect_fingerprint="f" * 64, cache_dir=tmp_path).name == "region"
    with pytest.raises(EncoderMismatchError, match="was built with encoder ffffffffffff") as refused:
        open_index(store, "region", expect_fingerprint="a" * 64, cache_dir=tmp_path)
    assert isinstance(refused.value, FingerprintMismatchError)


def test_ivf_indexes_are_memory_mapped(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    publish(IndexLocation(store, "big"), clustered(3000, DIM), key="IVF32,Flat")
    opened = open_index(store, "big")
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(opened.index).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists)  # lists stay in the file, shared via page cache
    assert faiss.extract_index_ivf(opened.index).nprobe == 8  # search params from meta.json
    _, tiles = opened.search(clustered(3000, DIM)[[5]], k=1)
    assert tiles[0, 0] == "t00005"


def test_s3_indexes_are_cached_locally_and_reverified(s3_bucket: str, tmp_path: Path) -> None:
    location = IndexLocation(s3_bucket, "region")
    version = publish(location, clustered(300, DIM))
    cache = tmp_path / "cache"
    open_index(s3_bucket, "region", cache_dir=cache)
    cached = cache / "region" / version / "index.faiss"
    assert cached.exists()
    cached.write_bytes(b"garbage")  # a damaged cache is replaced by a fresh, verified download
    assert len(open_index(s3_bucket, "region", cache_dir=cache)) == 300
    assert cached.read_bytes()[:4] != b"garb"


def test_cleaning_removes_half_written_and_surplus_versions_never_current(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    location = IndexLocation(store, "region")
    versions = []
    for seed in range(4):
        versions.append(publish(location, clustered(40, DIM, seed=seed)))
    half = publish(location, clustered(40, DIM, seed=9), current=False)
    storage.delete(location.file_uri(half, META_FILE))  # what a crash before meta.json leaves
    assert location.versions()[half] is False
    point_current(location, versions[1])  # a rollback: CURRENT is not the newest
    removed = clean_versions(location, keep=2)
    assert half in removed and versions[1] not in removed
    kept = sorted(location.versions())
    assert versions[1] in kept and len(kept) == 2 and versions[3] in kept  # CURRENT + the newest other
    assert open_index(store, "region").version == versions[1]


def test_tile_geometry_is_read_when_built_with_it_and_unknown_before(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    vectors = clustered(20, DIM)
    publish(IndexLocation(store, "old"), vectors)  # ids.parquet without gsd_m, width, height
    old = open_index(store, "old")
    assert np.isnan(old.gsd_m).all() and not old.width.any() and not old.height.any()
    assert old.geometry(3) == {"lat": pytest.approx(old.lat[3]), "lon": pytest.approx(old.lon[3])} | {
        "gsd_m": None,
        "width": None,
        "height": None,
    }
    gsd = pa.array([0.5] * 19 + [None], pa.float64())
    sizes = pa.array([256] * 20, pa.int32())
    publish(IndexLocation(store, "new"), vectors, geometry={"gsd_m": gsd, "width": sizes, "height": sizes})
    new = open_index(store, "new")
    assert new.geometry(0)["gsd_m"] == 0.5 and (new.geometry(0)["width"], new.geometry(0)["height"]) == (
        256,
        256,
    )
    assert new.geometry(19)["gsd_m"] is None and np.isnan(new.gsd_m[19])
