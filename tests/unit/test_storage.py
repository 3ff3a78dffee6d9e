"""The storage layer behaves the same on a local folder and on a real S3 endpoint (moto server)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gleam import storage


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/prefix"


def test_write_read_list_delete(root: str) -> None:
    storage.write_bytes(storage.join(root, "a/b/one.bin"), b"1")
    storage.write_text(storage.join(root, "a/two.txt"), "two")
    storage.write_json(storage.join(root, "c.json"), {"k": [1, 2]})
    assert storage.read_bytes(storage.join(root, "a/b/one.bin")) == b"1"
    assert storage.read_text(storage.join(root, "a/two.txt")) == "two"
    assert storage.read_json(storage.join(root, "c.json")) == {"k": [1, 2]}
    listed = [storage.relative_to(e.uri, root) for e in storage.list_files(root)]
    assert listed == ["a/b/one.bin", "a/two.txt", "c.json"]
    assert storage.list_dirs(root) == ["a"]
    assert storage.exists(storage.join(root, "a/two.txt"))
    assert storage.is_file(storage.join(root, "a/two.txt"))
    storage.delete(storage.join(root, "a"))
    assert [storage.relative_to(e.uri, root) for e in storage.list_files(root)] == ["c.json"]
    storage.delete(storage.join(root, "never-existed"))  # absent is fine


def test_overwrite_replaces_content(root: str) -> None:
    uri = storage.join(root, "pointer")
    storage.write_text(uri, "v1")
    storage.write_text(uri, "v2")
    assert storage.read_text(uri) == "v2"


def test_missing_object_raises_storage_error_naming_it(root: str) -> None:
    uri = storage.join(root, "missing.bin")
    with pytest.raises(storage.StorageError, match=r"missing\.bin"):
        storage.read_bytes(uri)


def test_listing_an_absent_prefix_is_empty(root: str) -> None:
    assert storage.list_files(storage.join(root, "nothing-here")) == []


def test_pyarrow_filesystem_round_trip(root: str) -> None:
    fs, path = storage.resolve(storage.join(root, "t.parquet"))
    if storage.is_local(root):
        storage.makedirs(root)
    with fs.open_output_stream(path) as out:
        pq.write_table(pa.table({"x": [1, 2, 3]}), out)
    with fs.open_input_file(path) as handle:
        assert pq.read_table(handle)["x"].to_pylist() == [1, 2, 3]


def test_upload_tree(root: str, tmp_path: Path) -> None:
    local = tmp_path / "src"
    (local / "x").mkdir(parents=True)
    (local / "x" / "f.txt").write_text("f")
    (local / "g.txt").write_text("g")
    assert storage.upload_tree(local, storage.join(root, "up")) == 2
    assert storage.read_text(storage.join(root, "up/x/f.txt")) == "f"


def test_local_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    uri = str(tmp_path / "d" / "f.json")
    for i in range(5):
        storage.write_json(uri, {"i": i})
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["f.json"]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b/", "s3://bucket/a/b"),
        ("s3a://bucket/a", "s3://bucket/a"),
        ("file:///tmp/x/../y", "/tmp/y"),
    ],
)
def test_normalize(uri: str, expected: str) -> None:
    assert storage.normalize(uri) == expected


def test_join_and_relative() -> None:
    assert storage.join("s3://b/p/", "/x/", "y.parquet") == "s3://b/p/x/y.parquet"
    assert storage.relative_to("s3://b/p/x/y", "s3://b/p") == "x/y"
    assert storage.parent("s3://b/p/x/y") == "s3://b/p/x"
    assert storage.basename("s3://b/p/x/y.jpg") == "y.jpg"
    with pytest.raises(storage.StorageError):
        storage.relative_to("s3://b/q/x", "s3://b/p")


def test_default_store_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GLEAM_STORE", "s3://team-bucket/gleam/")
    assert storage.default_store() == "s3://team-bucket/gleam"
    monkeypatch.delenv("GLEAM_STORE")
    monkeypatch.setenv("GLEAM_HOME", str(tmp_path / "home"))
    assert storage.default_store() == str(tmp_path / "home" / "store")
