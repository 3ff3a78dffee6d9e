"""University-1652 adapter: native layout fixtures with edge cases, and the real mini sample."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from gleam.corpus.sources import SourceLayoutError, list_records
from gleam.corpus.sources.university1652 import University1652Source
from tests.support.listing import assert_same_listing
from tests.support.paths import shared_dataset

Row = tuple[str, str, str | None, str | None, str | None, str | None]


def _source(root: Path | str, **kwargs: object) -> University1652Source:
    return University1652Source(kind="university1652", uri=str(root), **kwargs)


def _rows(records: list) -> set[Row]:
    """(role, record_id, modality, tile_id, split, reason) of every record."""
    return {(r.role, r.record_id, r.modality, r.tile_id, r.split, r.reason) for r in records}


@pytest.fixture
def root(tmp_path: Path, write_image: Callable[..., Path]) -> Path:
    r = tmp_path / "U1652"
    for rel in [
        "train/satellite/0001/0001.jpg",
        "train/satellite/0002/0002.jpg",
        "train/satellite/0003/0003.jpg",
        "train/satellite/0003/0003_copy.jpg",  # second satellite of a location: duplicate
        "train/drone/0001/image-01.jpeg",
        "train/drone/0001/image-02.jpeg",
        "train/drone/0001/image-03.jpeg",
        "train/drone/0002/image-01.jpeg",
        "train/drone/0009/image-01.jpeg",  # no satellite for 0009: missing_pair
        "train/street/0001/0001_01.jpg",
        "train/google/0002/image-01.jpg",
        "test/gallery_satellite/0101/0101.jpg",
        "test/gallery_satellite/0102/0102.jpg",  # distractor: no query anywhere
        "test/query_satellite/0101/0101.jpg",  # same image as the gallery's: not listed again
        "test/query_satellite/0103/0103.jpg",  # only here: still the location's tile
        "test/query_drone/0101/image-01.jpeg",
        "test/query_drone/0103/image-01.jpeg",
        "test/query_street/0101/0101_01.jpg",
        "test/gallery_drone/0101/image-01.jpeg",  # reverse task: not listed
        "test/gallery_street/0101/0101_01.jpg",  # reverse task: not listed
    ]:
        write_image(r / rel)
    write_image(r / "train/drone/0002/notes.txt", text="not an image")  # listed, prepare rejects it
    write_image(r / "train/drone/0001/.DS_Store", text="hidden")
    write_image(r / "train/satellite/.DS_Store", text="hidden")
    write_image(r / "train/drone/stray.jpg")  # not in a location folder: bad_record
    return r


EXPECTED: set[Row] = {
    ("tile", "u1652_0001", "satellite", "u1652_0001", "train", None),
    ("tile", "u1652_0002", "satellite", "u1652_0002", "train", None),
    ("tile", "u1652_0003", "satellite", "u1652_0003", "train", None),
    ("tile", "u1652_0101", "satellite", "u1652_0101", "test", None),
    ("tile", "u1652_0102", "satellite", "u1652_0102", "test", None),
    ("tile", "u1652_0103", "satellite", "u1652_0103", "test", None),
    ("tile", "u1652_0003_0003_copy", "satellite", None, None, "duplicate"),
    ("query", "u1652_drone_0001_image-01", "drone", "u1652_0001", "train", None),
    ("query", "u1652_drone_0001_image-02", "drone", "u1652_0001", "train", None),
    ("query", "u1652_drone_0001_image-03", "drone", "u1652_0001", "train", None),
    ("query", "u1652_drone_0002_image-01", "drone", "u1652_0002", "train", None),
    ("query", "u1652_drone_0002_notes", "drone", "u1652_0002", "train", None),
    ("query", "u1652_drone_0009_image-01", "drone", None, None, "missing_pair"),
    ("query", "u1652_drone_stray", "drone", None, None, "bad_record"),
    ("query", "u1652_street_0001_0001_01", "ground", "u1652_0001", "train", None),
    ("query", "u1652_google_0002_image-01", "ground", "u1652_0002", "train", None),
    ("query", "u1652_drone_0101_image-01", "drone", "u1652_0101", "test", None),
    ("query", "u1652_drone_0103_image-01", "drone", "u1652_0103", "test", None),
    ("query", "u1652_street_0101_0101_01", "ground", "u1652_0101", "test", None),
}


def test_lists_every_view_with_pairs_splits_and_rejects(root: Path, no_image_reads: None) -> None:
    records = list_records(_source(root))
    assert _rows(records) == EXPECTED
    assert len(records) == len(EXPECTED)


def test_tiles_come_from_the_preferred_folder_and_name_their_location(root: Path) -> None:
    tiles = {r.record_id: r for r in list_records(_source(root)) if r.role == "tile" and not r.rejected}
    assert tiles["u1652_0101"].source_uri == str(root / "test/gallery_satellite/0101/0101.jpg")
    assert tiles["u1652_0103"].source_uri == str(root / "test/query_satellite/0103/0103.jpg")
    assert tiles["u1652_0003"].source_uri == str(root / "train/satellite/0003/0003.jpg")
    assert all(t.location_id == t.record_id and t.source == "u1652" for t in tiles.values())
    assert {t.gsd_m for t in tiles.values()} == {None}  # the dataset states no ground resolution


def test_rejects_say_why(root: Path) -> None:
    rejects = {r.record_id: r for r in list_records(_source(root)) if r.rejected}
    duplicate = rejects["u1652_0003_0003_copy"]
    assert duplicate.source_uri == str(root / "train/satellite/0003/0003_copy.jpg")
    assert "u1652_0003" in duplicate.detail and "0003.jpg" in duplicate.detail
    assert "0009" in rejects["u1652_drone_0009_image-01"].detail
    assert rejects["u1652_drone_stray"].source_uri == str(root / "train/drone/stray.jpg")


def test_queries_share_their_tiles_location(root: Path) -> None:
    records = list_records(_source(root))
    queries = [r for r in records if r.role == "query" and not r.rejected]
    assert all(q.location_id == q.tile_id for q in queries)
    assert not any("gallery_drone" in r.source_uri or "gallery_street" in r.source_uri for r in records)
    assert not any(Path(r.source_uri).name.startswith(".") for r in records)


def test_non_image_files_are_listed_not_skipped(root: Path) -> None:
    notes = [r for r in list_records(_source(root)) if r.source_uri.endswith("notes.txt")]
    assert [(n.role, n.reason) for n in notes] == [("query", None)]


def test_a_stray_text_file_never_displaces_the_satellite_image(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "train/satellite/0001/0001.jpg")
    write_image(tmp_path / "train/satellite/0001/0000-readme.txt", text="x")  # sorts first by name
    records = list_records(_source(tmp_path))
    tile = next(r for r in records if r.role == "tile" and not r.rejected)
    assert tile.source_uri.endswith("0001.jpg")
    assert [r.reason for r in records if r.rejected] == ["duplicate"]


def test_google_is_optional_and_the_name_prefixes_every_id(root: Path) -> None:
    records = list_records(_source(root, include_google=False, name="uni"))
    assert not any("google" in r.record_id for r in records)
    assert all(r.record_id.startswith("uni_") and r.source == "uni" for r in records)
    assert all(r.location_id.startswith("uni_") for r in records if not r.rejected)
    assert len(records) == len(EXPECTED) - 1


def test_order_is_stable_and_file_uris_list_the_same(root: Path) -> None:
    first = list_records(_source(root))
    assert list_records(_source(root)) == first
    assert list_records(_source(f"file://{root}")) == first
    tile_ids = [r.record_id for r in first if r.role == "tile" and not r.rejected]
    assert tile_ids == sorted(tile_ids)


def test_a_duplicate_query_id_is_rejected(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "train/satellite/0001/0001.jpg")
    write_image(tmp_path / "train/drone/0001/image-01.jpeg")
    write_image(tmp_path / "train/drone/0001/image-01.png")  # same stem, so the same query id
    queries = [r for r in list_records(_source(tmp_path)) if r.role == "query"]
    assert [(Path(q.source_uri).name, q.reason) for q in queries] == [
        ("image-01.jpeg", None),
        ("image-01.png", "duplicate"),
    ]


def test_test_layout_alone_is_enough(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "test/gallery_satellite/0500/0500.jpg")
    assert [(r.record_id, r.split) for r in list_records(_source(tmp_path))] == [("u1652_0500", "test")]


@pytest.mark.parametrize("layout", [None, "train/other/x.jpg", "misc/satellite/0001/0001.jpg"])
def test_an_unusable_root_is_an_error_naming_it(tmp_path: Path, write_image, layout: str | None) -> None:
    if layout:
        write_image(tmp_path / layout)
    root = tmp_path / "absent" if layout is None else tmp_path
    with pytest.raises(SourceLayoutError, match=re.escape(str(root))):
        list_records(_source(root))


def test_real_mini_sample() -> None:
    root = shared_dataset("university1652-mini")
    records = list_records(_source(root))
    counts = Counter((r.role, r.modality, r.split) for r in records)
    assert counts == {
        ("tile", "satellite", "train"): 320,
        ("query", "drone", "train"): 320,
        ("query", "ground", "train"): 640,
        ("tile", "satellite", "test"): 80,
        ("query", "drone", "test"): 80,
        ("query", "ground", "test"): 80,
    }
    assert not [r for r in records if r.rejected]
    tiles = {r.record_id: r for r in records if r.role == "tile"}
    assert tiles["u1652_0001"].source_uri == str(root / "train/satellite/0001/0001.jpg")
    assert tiles["u1652_0321"].source_uri == str(root / "test/gallery_satellite/0321/0321.jpg")
    queries = [r for r in records if r.role == "query"]
    assert all(q.tile_id in tiles and tiles[q.tile_id].split == q.split for q in queries)
    drone = next(q for q in queries if q.record_id == "u1652_drone_0001_image-01")
    assert drone.source_uri == str(root / "train/drone/0001/image-01.jpeg")
    train_locs = {r.location_id for r in records if r.split == "train"}
    assert train_locs.isdisjoint({r.location_id for r in records if r.split == "test"})


def test_lists_the_same_from_s3(root: Path, s3_bucket: str) -> None:
    from gleam import storage

    uri = f"{s3_bucket}/raw/U1652"
    storage.upload_tree(root, uri)
    local = list_records(_source(root))
    remote = list_records(_source(uri))
    assert_same_listing(local, remote, root, uri)


def test_symlinked_images_are_listed_where_they_are_linked(tmp_path: Path, write_image) -> None:
    target = write_image(tmp_path / "elsewhere" / "0001.jpg")
    link = tmp_path / "U1652/train/satellite/0001/0001.jpg"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    records = list_records(_source(tmp_path / "U1652"))
    assert [(r.record_id, r.source_uri) for r in records] == [("u1652_0001", str(link))]
