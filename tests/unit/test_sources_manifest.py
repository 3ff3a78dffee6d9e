"""Generic manifest (CSV and Parquet) and synthetic-world adapters: every row rule and reject reason."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gleam.corpus.sources import SourceLayoutError, list_records, to_table
from gleam.corpus.sources.manifest import ManifestSource
from gleam.corpus.sources.world import WorldSource
from gleam.corpus.world.layout import MANIFEST_FILE, MARKER_FILE

COLUMNS = ["query_uri", "modality", "tile_uri", "location_id", "lat", "lon", "split"]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = COLUMNS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _source(uri: Path | str, **kwargs: object) -> ManifestSource:
    return ManifestSource(kind="manifest", uri=str(uri), **kwargs)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A manifest covering every rule: files need not exist (prepare reports missing ones)."""
    r = tmp_path / "corpus"
    rows = [
        ["queries/d1.jpg", "drone", "tiles/t1.jpg", "loc1", "47.1", "8.1", "train"],  # 1
        ["queries/p1.jpg", " Panorama ", "tiles/t1.jpg", "", "", "", ""],  # 2: inherits t1's place
        ["queries/g1.jpg", "ground", "/abs/elsewhere/t2.png", "loc2", "", "", "TEST"],  # 3
        ["", "", "tiles/t3.jpg", "", "47.3", "8.3", ""],  # 4: distractor tile
        ["", "satellite", "s3://bucket/sat/t4.jpg", "loc4", "", "", "val"],  # 5: distractor on S3
        ["s3://bucket/q/s1.jpg", "streetmap", "s3://bucket/sat/t4.jpg", "", "", "", ""],  # 6
        ["queries/x.jpg", "thermal", "tiles/t1.jpg", "", "", "", ""],  # 7: unknown_modality
        ["queries/sat.jpg", "satellite", "tiles/t1.jpg", "", "", "", ""],  # 8: unknown_modality
        ["queries/nt.jpg", "drone", "", "loc9", "", "", ""],  # 9: missing_pair
        ["queries/badlat.jpg", "drone", "tiles/t5.jpg", "", "north", "8", ""],  # 10: bad_record
        ["queries/badlon.jpg", "drone", "tiles/t5.jpg", "", "47", "200", ""],  # 11: bad_record
        ["queries/badsplit.jpg", "drone", "tiles/t1.jpg", "", "", "", "holdout"],  # 12: bad_record
        ["./queries/../queries/d1.jpg", "drone", "tiles/t1.jpg", "", "", "", ""],  # 13: duplicate of 1
        ["", "", "", "loc", "1", "2", ""],  # 14: bad_record, names no file
        ["", "drone", "tiles/t6.jpg", "", "", "", ""],  # 15: bad_record, query modality without query
        ["queries/c1.jpg", "drone", "tiles/t1.jpg", "elsewhere", "", "", ""],  # 16: location conflict
        ["queries/c2.jpg", "ground", "tiles/t1.jpg", "", "", "", "test"],  # 17: split conflict
        [f"file://{r}/queries/f1.jpg", "ground", "../shared/t7.jpg", "", "", "", ""],  # 18
        ["queries/a.jpg", "drone", "tiles/t1.jpg", "", "", "", ""],  # 19
        ["queries/a.png", "drone", "tiles/t1.jpg", "", "", "", ""],  # 20: same id as 19 but another file
    ]
    write_csv(r / "manifest.csv", rows)
    return r


def test_tiles_then_rows_with_every_reject_reason(root: Path) -> None:
    records = list_records(_source(root / "manifest.csv"))
    t7 = "manifest_" + str(root.parent / "shared" / "t7").strip("/").replace("/", "-")
    a_png = "manifest_drone_queries-a_" + hashlib.sha1(str(root / "queries/a.png").encode()).hexdigest()[:8]
    assert [
        (r.role, r.record_id, r.modality, r.tile_id, r.location_id, r.split, r.reason) for r in records
    ] == [
        ("tile", "manifest_tiles-t1", "satellite", "manifest_tiles-t1", "manifest_loc1", "train", None),
        (
            "tile",
            "manifest_abs-elsewhere-t2",
            "satellite",
            "manifest_abs-elsewhere-t2",
            "manifest_loc2",
            "test",
            None,
        ),
        ("tile", "manifest_tiles-t3", "satellite", "manifest_tiles-t3", "manifest_tiles-t3", None, None),
        (
            "tile",
            "manifest_bucket-sat-t4",
            "satellite",
            "manifest_bucket-sat-t4",
            "manifest_loc4",
            "val",
            None,
        ),
        ("tile", t7, "satellite", t7, t7, None, None),
        ("query", "manifest_drone_queries-d1", "drone", "manifest_tiles-t1", "manifest_loc1", "train", None),
        (
            "query",
            "manifest_panorama_queries-p1",
            "panorama",
            "manifest_tiles-t1",
            "manifest_loc1",
            "train",
            None,
        ),
        (
            "query",
            "manifest_ground_queries-g1",
            "ground",
            "manifest_abs-elsewhere-t2",
            "manifest_loc2",
            "test",
            None,
        ),
        (
            "query",
            "manifest_streetmap_bucket-q-s1",
            "streetmap",
            "manifest_bucket-sat-t4",
            "manifest_loc4",
            "val",
            None,
        ),
        ("query", "manifest_thermal_queries-x", None, None, None, None, "unknown_modality"),
        ("query", "manifest_satellite_queries-sat", "satellite", None, None, None, "unknown_modality"),
        ("query", "manifest_drone_queries-nt", "drone", None, None, None, "missing_pair"),
        ("query", "manifest_drone_queries-badlat", "drone", None, None, None, "bad_record"),
        ("query", "manifest_drone_queries-badlon", "drone", None, None, None, "bad_record"),
        ("query", "manifest_drone_queries-badsplit", "drone", None, None, None, "bad_record"),
        ("query", "manifest_drone_queries-d1", "drone", None, None, None, "duplicate"),
        ("tile", "manifest_row14", None, None, None, None, "bad_record"),
        ("tile", "manifest_tiles-t6", "drone", None, None, None, "bad_record"),
        ("query", "manifest_drone_queries-c1", "drone", None, None, None, "bad_record"),
        ("query", "manifest_ground_queries-c2", "ground", None, None, None, "bad_record"),
        ("query", "manifest_ground_queries-f1", "ground", t7, t7, None, None),
        ("query", "manifest_drone_queries-a", "drone", "manifest_tiles-t1", "manifest_loc1", "train", None),
        ("query", a_png, "drone", "manifest_tiles-t1", "manifest_loc1", "train", None),
    ]


def test_uris_coordinates_and_details(root: Path) -> None:
    records = list_records(_source(root / "manifest.csv"))
    by_id = {(r.record_id, r.reason): r for r in records}
    assert by_id[("manifest_tiles-t1", None)].source_uri == str(root / "tiles/t1.jpg")
    assert by_id[("manifest_abs-elsewhere-t2", None)].source_uri == "/abs/elsewhere/t2.png"
    assert by_id[("manifest_bucket-sat-t4", None)].source_uri == "s3://bucket/sat/t4.jpg"
    assert by_id[("manifest_ground_queries-f1", None)].source_uri == str(root / "queries/f1.jpg")
    t1 = by_id[("manifest_tiles-t1", None)]
    assert (t1.lat, t1.lon) == (47.1, 8.1)
    pano = by_id[("manifest_panorama_queries-p1", None)]
    assert (pano.lat, pano.lon) == (47.1, 8.1)  # empty in its row: the tile's place
    t3 = by_id[("manifest_tiles-t3", None)]
    assert (t3.lat, t3.lon) == (47.3, 8.3)
    assert all(r.source == "manifest" for r in records)
    details = {(r.record_id, r.reason): r.detail for r in records if r.rejected}
    assert "'thermal'" in details[("manifest_thermal_queries-x", "unknown_modality")]
    assert "drone" in details[("manifest_thermal_queries-x", "unknown_modality")]  # the allowed ones
    assert "reference view" in details[("manifest_satellite_queries-sat", "unknown_modality")]
    assert "row 10" in details[("manifest_drone_queries-badlat", "bad_record")]
    assert "'north'" in details[("manifest_drone_queries-badlat", "bad_record")]
    assert "outside" in details[("manifest_drone_queries-badlon", "bad_record")]
    assert "'holdout'" in details[("manifest_drone_queries-badsplit", "bad_record")]
    assert "row 1" in details[("manifest_drone_queries-d1", "duplicate")]
    assert "conflicts" in details[("manifest_drone_queries-c1", "bad_record")]
    row14 = next(r for r in records if r.record_id == "manifest_row14")
    assert row14.source_uri == f"{root / 'manifest.csv'}#row14"
    assert not any("t5" in r.record_id for r in records if not r.rejected)  # only bad rows named t5


def test_parquet_lists_like_csv(tmp_path: Path) -> None:
    rows = [
        ["q/a.jpg", "drone", "t/a.jpg", "A", 47.5, 8.5, "train"],
        ["q/b.jpg", "ground", "t/a.jpg", None, None, None, None],
        [None, None, "t/b.jpg", None, float("nan"), None, None],  # NaN counts as empty
    ]
    table = pa.table({c: [row[i] for row in rows] for i, c in enumerate(COLUMNS)})
    assert table.schema.field("lat").type == pa.float64()
    pq.write_table(table, tmp_path / "m.parquet")
    text_rows = [["" if v is None or v != v else str(v) for v in row] for row in rows]
    write_csv(tmp_path / "m.csv", text_rows)
    from_parquet = list_records(_source(tmp_path / "m.parquet"))
    assert from_parquet == list_records(_source(tmp_path / "m.csv"))
    assert [(r.role, r.record_id, r.lat) for r in from_parquet] == [
        ("tile", "manifest_t-a", 47.5),
        ("tile", "manifest_t-b", None),
        ("query", "manifest_drone_q-a", 47.5),
        ("query", "manifest_ground_q-b", 47.5),
    ]


def test_optional_columns_may_be_absent_and_extra_ones_are_ignored(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "m.csv",
        [["note", "q.jpg", "t.jpg", "Drone"]],
        ["comment", "query_uri", "tile_uri", "modality"],
    )
    records = list_records(_source(path, name="mine"))
    assert [(r.role, r.record_id, r.split, r.lat) for r in records] == [
        ("tile", "mine_t", None, None),
        ("query", "mine_drone_q", None, None),
    ]


GEOMETRY = [*COLUMNS, "gsd_m", "set_id"]


def test_gsd_m_describes_the_tile_and_set_id_the_query(tmp_path: Path) -> None:
    """The first row naming a tile sets its gsd_m (metres per pixel of the file); set_id is the query's."""
    g = ["", "", "", ""]  # no location_id, lat, lon, split
    rows = [
        ["", "", "t/a.jpg", *g, "0.5", ""],  # 1: tile row, 0.5 m/px
        ["q/a1.jpg", "drone", "t/a.jpg", *g, "", "s1"],  # 2: gsd_m empty: the tile keeps 0.5
        ["q/a2.jpg", "drone", "t/a.jpg", *g, "5e-1", "s1"],  # 3: the same value written otherwise
        ["q/b1.jpg", "ground", "t/b.jpg", *g, "", ""],  # 4: a single photo, a tile without gsd_m
        ["", "", "t/c.jpg", *g, "0", ""],  # 5: bad_record: not positive
        ["", "", "t/d.jpg", *g, "-1", ""],  # 6: bad_record: negative
        ["", "", "t/e.jpg", *g, "inf", ""],  # 7: bad_record: not finite
        ["", "", "t/f.jpg", *g, "half", ""],  # 8: bad_record: not a number
        ["q/a3.jpg", "drone", "t/a.jpg", *g, "0.6", ""],  # 9: bad_record: conflicts with row 1
        ["q/b2.jpg", "drone", "t/b.jpg", *g, "0.3", ""],  # 10: bad_record: row 4 described t/b without
        ["", "", "t/g.jpg", *g, "", "s2"],  # 11: bad_record: a set_id on a tile-only row
        ["q/n.jpg", "drone", "", *g, "0.5", ""],  # 12: bad_record: gsd_m without a tile
    ]
    records = list_records(_source(write_csv(tmp_path / "m.csv", rows, GEOMETRY)))
    kept = {r.record_id: r for r in records if not r.rejected}
    assert kept["manifest_t-a"].gsd_m == 0.5
    assert kept["manifest_t-b"].gsd_m is None
    assert kept["manifest_drone_q-a1"].set_id == kept["manifest_drone_q-a2"].set_id == "manifest_s1"
    assert kept["manifest_ground_q-b1"].set_id is None
    assert all(r.gsd_m is None for r in kept.values() if r.role == "query")  # gsd_m is the tile's
    assert all(r.set_id is None for r in kept.values() if r.role == "tile")
    bad = {r.detail.split(":")[0]: r.detail for r in records if r.reason == "bad_record"}
    assert sorted(bad, key=lambda d: int(d.split()[1])) == [f"row {n}" for n in (5, 6, 7, 8, 9, 10, 11, 12)]
    assert "positive" in bad["row 5"] and "positive" in bad["row 6"]
    assert "finite" in bad["row 7"] and "not a number" in bad["row 8"]
    assert "conflicts with 0.5" in bad["row 9"] and "row 1" in bad["row 9"]
    assert "none given" in bad["row 10"]
    assert "set_id" in bad["row 11"] and "gsd_m" in bad["row 12"]
    assert not any(r.record_id in ("manifest_t-c", "manifest_t-d") for r in records if not r.rejected)
    table = to_table(records)  # the listing carries both columns
    assert table.schema.field("gsd_m").type == pa.float64() and "set_id" in table.schema.names


def test_parquet_gsd_m_may_be_a_float_column(tmp_path: Path) -> None:
    table = pa.table(
        {
            "query_uri": ["q/a.jpg", None],
            "modality": ["drone", None],
            "tile_uri": ["t/a.jpg", "t/b.jpg"],
            "gsd_m": [0.25, None],
            "set_id": ["x", None],
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    records = list_records(_source(tmp_path / "m.parquet"))
    assert [(r.record_id, r.gsd_m, r.set_id) for r in records] == [
        ("manifest_t-a", 0.25, None),
        ("manifest_t-b", None, None),
        ("manifest_drone_q-a", None, "manifest_x"),
    ]


def test_missing_required_columns_are_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [["q.jpg", "t.jpg"]], ["query_uri", "tile_uri"])
    with pytest.raises(SourceLayoutError, match=r"lacks the required column\(s\) modality"):
        list_records(_source(path))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SourceLayoutError, match="query_uri, modality, tile_uri"):
        list_records(_source(tmp_path / "empty.csv"))


def test_bad_manifest_files_are_errors(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("query_uri,modality,tile_uri\n")
    with pytest.raises(SourceLayoutError, match=r"\.csv, \.parquet or \.pq"):
        list_records(_source(tmp_path / "m.txt"))
    with pytest.raises(SourceLayoutError, match="does not exist"):
        list_records(_source(tmp_path / "absent.csv"))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(SourceLayoutError, match="cannot be parsed"):
        list_records(_source(tmp_path / "broken.parquet"))


def test_relative_uris_follow_the_manifest_folder(tmp_path: Path) -> None:
    rows = [["q.jpg", "drone", "t.jpg", "", "", "", ""]]
    near = list_records(_source(write_csv(tmp_path / "a" / "m.csv", rows)))
    far = list_records(_source(write_csv(tmp_path / "b" / "c" / "m.csv", rows)))
    assert [r.record_id for r in near] == [r.record_id for r in far]  # ids do not depend on where
    assert [r.source_uri for r in far] == [str(tmp_path / "b/c/t.jpg"), str(tmp_path / "b/c/q.jpg")]


# --- world: the synthetic world's manifest, gated by its completion marker ---------------------------


def test_world_lists_its_manifest_under_its_name(tmp_path: Path) -> None:
    world = tmp_path / "world"
    write_csv(
        world / MANIFEST_FILE,
        [
            ["queries/drone/0000.jpg", "drone", "tiles/0000.jpg", "loc-0000", "47.37", "8.54", ""],
            ["queries/panorama/0000.jpg", "panorama", "tiles/0000.jpg", "loc-0000", "47.37", "8.54", ""],
            ["", "satellite", "tiles/0001.jpg", "loc-0001", "47.38", "8.55", ""],
        ],
    )
    (world / MARKER_FILE).write_text(json.dumps({"seed": 0}))
    records = list_records(WorldSource(kind="world", uri=str(world)))
    assert [(r.role, r.record_id, r.location_id, r.source) for r in records] == [
        ("tile", "world_tiles-0000", "world_loc-0000", "world"),
        ("tile", "world_tiles-0001", "world_loc-0001", "world"),
        ("query", "world_drone_queries-drone-0000", "world_loc-0000", "world"),
        ("query", "world_panorama_queries-panorama-0000", "world_loc-0000", "world"),
    ]
    assert records[0].source_uri == str(world / "tiles/0000.jpg")
    named = list_records(WorldSource(kind="world", uri=str(world), name="w2"))
    assert {r.source for r in named} == {"w2"}


def test_world_without_marker_is_incomplete(tmp_path: Path) -> None:
    write_csv(tmp_path / "manifest.csv", [])
    for uri in (tmp_path, tmp_path / "absent"):
        with pytest.raises(SourceLayoutError, match=r"incomplete or absent.*gleam world"):
            list_records(WorldSource(kind="world", uri=str(uri)))


def test_a_manifest_on_s3_resolves_relative_uris_there(tmp_path: Path, s3_bucket: str) -> None:
    from gleam import storage

    rows = [
        ["q/a.jpg", "drone", "../tiles/a.jpg", "", "", "", ""],
        ["/abs/b.jpg", "ground", "s3://x/b.jpg"] + [""] * 4,
    ]
    write_csv(tmp_path / "m.csv", rows)
    storage.upload_tree(tmp_path, f"{s3_bucket}/corpus/lists")
    records = list_records(_source(f"{s3_bucket}/corpus/lists/m.csv"))
    bucket = s3_bucket.removeprefix("s3://")
    assert [(r.record_id, r.source_uri) for r in records] == [
        (f"manifest_{bucket}-corpus-tiles-a", f"{s3_bucket}/corpus/tiles/a.jpg"),  # outside: full key
        ("manifest_x-b", "s3://x/b.jpg"),
        ("manifest_drone_q-a", f"{s3_bucket}/corpus/lists/q/a.jpg"),
        ("manifest_ground_abs-b", "/abs/b.jpg"),
    ]
