"""VIGOR adapter on a tiny native-layout fixture with label files in the official 13-field format."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from gleam.corpus.sources import SourceLayoutError, list_records
from gleam.corpus.sources.vigor import VIGORSource
from tests.support.listing import assert_same_listing

SAT = {  # name -> (lat, lon)
    "sat0": (41.879, -87.629),
    "sat1": (41.881, -87.631),
    "sat2": (41.882, -87.632),
    "sat9": (41.889, -87.639),  # positive of nothing: a gallery distractor (semi-positive only)
    "satX": (41.870, -87.620),  # named as a positive but absent from the folder
}
PANO = {  # name -> (lat, lon)
    "pA0": (41.8801, -87.6301),
    "pA1": (41.8811, -87.6311),
    "pA2": (41.8821, -87.6321),
    "pA3": (41.8831, -87.6331),  # in no label file: missing_pair
    "pA4": (41.8841, -87.6341),  # its positive satX is absent: missing_pair
    "pA5": (41.8812, -87.6312),  # a test panorama sharing sat1 with the train panorama pA1
    "pAX": (41.8899, -87.6399),  # labelled but absent: missing_file
}


def sat_file(key: str) -> str:
    lat, lon = SAT[key]
    return f"satellite_{lat}_{lon}.png"


def pano_file(key: str) -> str:
    lat, lon = PANO[key]
    return f"{key},{lat},{lon},.jpg"


def label(pano: str, positive: str, *semi: str) -> str:
    """`<pano> <sat> <dlat> <dlon>` four times, the positive first (as VIGOR's files are)."""
    fields = [pano_file(pano)]
    for i, sat in enumerate((positive, *semi)):
        fields += [sat_file(sat), f"{i + 0.5}", f"-{i + 1.25}"]
    return " ".join(fields)


def _source(root: Path, **kwargs: object) -> VIGORSource:
    return VIGORSource(kind="vigor", uri=str(root), **kwargs)


@pytest.fixture
def root(tmp_path: Path, write_image: Callable[..., Path]) -> Path:
    r = tmp_path / "VIGOR"
    for key in PANO:
        if key != "pAX":
            write_image(r / "Chicago/panorama" / pano_file(key), size=(16, 8))
    for key in SAT:
        if key != "satX":
            write_image(r / "Chicago/satellite" / sat_file(key))
    write_image(r / "Chicago/satellite/notes.txt", text="listed as a tile, rejected by prepare")
    write_image(r / "Chicago/satellite/old/satellite_1.0_2.0.png")  # nested: bad_record
    write_image(r / "Chicago/panorama/.DS_Store", text="hidden")
    write_image(r / "NewYork/panorama/pB1,40.71,-74.01,.jpg", size=(16, 8))
    write_image(r / "NewYork/satellite/satellite_40.71_-74.01.png")
    write_image(r / "Boston/satellite/satellite_42.36_-71.06.png")  # not a cross-area city
    splits = r / "splits"
    semi = ("sat0", "sat2", "sat9")
    (splits / "Chicago").mkdir(parents=True)
    (splits / "Chicago/same_area_balanced_train.txt").write_text(
        "\n".join(
            [
                label("pA0", "sat0", "sat1", "sat2", "sat9"),
                label("pA1", "sat1", *semi),
                label("pAX", "sat1", *semi),
                label("pA4", "satX", *semi),
                f"{pano_file('pA3')} {sat_file('sat1')} 0.1 0.2",  # malformed: 4 fields
                "",
            ]
        )
    )
    (splits / "Chicago/same_area_balanced_test.txt").write_text(
        "\n".join(
            [
                label("pA2", "sat2", "sat0", "sat1", "sat9"),
                label("pA5", "sat1", *semi),
                label("pA1", "sat0", *semi),
            ]
        )
        + "\n"
    )
    (splits / "Chicago/pano_label_balanced.txt").write_text(
        "\n".join(label(p, s, *semi) for p, s in [("pA0", "sat0"), ("pA1", "sat1"), ("pA2", "sat2")]) + "\n"
    )
    ny = "pB1,40.71,-74.01,.jpg satellite_40.71_-74.01.png 1 2 a.png 1 2 b.png 1 2 c.png 1 2\n"
    (splits / "NewYork").mkdir()
    (splits / "NewYork/same_area_balanced_train.txt").write_text(ny)
    (splits / "NewYork/pano_label_balanced.txt").write_text(ny)
    return r


def _summary(records: list) -> list[tuple]:
    return [(r.role, r.record_id, r.tile_id, r.split, r.reason) for r in records]


def test_same_area_lists_label_pairs_with_their_files_splits(root: Path, no_image_reads: None) -> None:
    records = list_records(_source(root))
    t = "vigor_Chicago_satellite_41."
    assert _summary(records) == [
        ("tile", "vigor_Boston_satellite_42.36_-71.06", "vigor_Boston_satellite_42.36_-71.06", "test", None),
        ("tile", "vigor_Chicago_notes", "vigor_Chicago_notes", "test", None),  # every file is listed
        ("tile", f"{t}879_-87.629", f"{t}879_-87.629", "train", None),  # positive of train pA0 only
        ("tile", f"{t}881_-87.631", f"{t}881_-87.631", "test", None),  # positive of train pA1 and test pA5
        ("tile", f"{t}882_-87.632", f"{t}882_-87.632", "test", None),
        ("tile", f"{t}889_-87.639", f"{t}889_-87.639", "test", None),  # distractor
        ("query", "vigor_pano_Chicago_pA0", f"{t}879_-87.629", "train", None),
        ("query", "vigor_pano_Chicago_pA1", f"{t}881_-87.631", "train", None),
        ("query", "vigor_pano_Chicago_pA2", f"{t}882_-87.632", "test", None),
        ("query", "vigor_pano_Chicago_pA3", None, None, "missing_pair"),
        ("query", "vigor_pano_Chicago_pA4", None, None, "missing_pair"),
        ("query", "vigor_pano_Chicago_pA5", f"{t}881_-87.631", "test", None),
        ("query", "vigor_pano_Chicago_pAX", None, None, "missing_file"),
        ("query", "vigor_pano_Chicago_pA1", None, None, "duplicate"),
        ("query", "vigor_Chicago_same_area_balanced_train_L5", None, None, "bad_record"),
        ("tile", "vigor_Chicago_satellite_old-satellite_1.0_2.0", None, None, "bad_record"),
        (
            "tile",
            "vigor_NewYork_satellite_40.71_-74.01",
            "vigor_NewYork_satellite_40.71_-74.01",
            "train",
            None,
        ),
        ("query", "vigor_pano_NewYork_pB1", "vigor_NewYork_satellite_40.71_-74.01", "train", None),
    ]


def test_coordinates_uris_locations_and_details(root: Path) -> None:
    records = {(r.role, r.record_id, r.reason): r for r in list_records(_source(root))}
    query = records[("query", "vigor_pano_Chicago_pA1", None)]
    assert (query.lat, query.lon, query.modality) == (41.8811, -87.6311, "panorama")
    assert query.source_uri == str(root / "Chicago/panorama" / pano_file("pA1"))
    assert query.location_id == query.tile_id
    tile = records[("tile", "vigor_Chicago_satellite_41.881_-87.631", None)]
    assert (tile.lat, tile.lon, tile.modality) == (41.881, -87.631, "satellite")
    assert tile.location_id == tile.record_id
    assert records[("tile", "vigor_Chicago_notes", None)].lat is None
    # metres per pixel of the released 640 x 640 images, per city; unknown outside the benchmark's cities
    assert tile.gsd_m == 0.111262
    assert records[("tile", "vigor_Boston_satellite_42.36_-71.06", None)].gsd_m is None
    assert query.gsd_m is None  # gsd_m describes tiles
    missing_file = records[("query", "vigor_pano_Chicago_pAX", "missing_file")]
    assert missing_file.source_uri == str(root / "Chicago/panorama" / pano_file("pAX"))
    assert "same_area_balanced_train.txt#L3" in missing_file.detail
    assert sat_file("satX") in records[("query", "vigor_pano_Chicago_pA4", "missing_pair")].detail
    assert (
        "same_area_balanced_test.txt#L3" in records[("query", "vigor_pano_Chicago_pA1", "duplicate")].detail
    )
    bad = records[("query", "vigor_Chicago_same_area_balanced_train_L5", "bad_record")]
    assert bad.source_uri.endswith("splits/Chicago/same_area_balanced_train.txt#L5")
    assert "expected 13 fields" in bad.detail


def _tile(key: str) -> str:
    lat, lon = SAT[key]
    return f"vigor_Chicago_satellite_{lat}_{lon}"


def test_semi_positives_are_the_label_lines_other_three_satellites(root: Path) -> None:
    """Tile ids in label order; a semi-positive absent from the folder is dropped; tiles have none."""
    records = list_records(_source(root))
    semi = {r.record_id: r.semi_positives for r in records if r.role == "query" and not r.rejected}
    assert semi == {
        "vigor_pano_Chicago_pA0": (_tile("sat1"), _tile("sat2"), _tile("sat9")),
        "vigor_pano_Chicago_pA1": (_tile("sat0"), _tile("sat2"), _tile("sat9")),
        "vigor_pano_Chicago_pA2": (_tile("sat0"), _tile("sat1"), _tile("sat9")),
        "vigor_pano_Chicago_pA5": (_tile("sat0"), _tile("sat2"), _tile("sat9")),
        "vigor_pano_NewYork_pB1": (),  # a.png, b.png, c.png are not in the folder
    }
    assert {r.semi_positives for r in records if r.role == "tile"} == {None}


def _write_corrected(root: Path, name: str) -> None:
    """A corrected train file for Chicago: pA0 and pA1 only, pA0 with satX (absent) as a semi-positive."""
    folder = root / "splits__corrected/Chicago"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [label("pA0", "sat0", "sat1", "satX", "sat9"), label("pA1", "sat1", "sat0", "sat2", "sat9")]
    (folder / name).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", ["same_area_balanced_train__corrected.txt", "same_area_balanced_train.txt"])
def test_corrected_labels_are_read_where_present_and_logged(
    root: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    _write_corrected(root, name)
    with caplog.at_level("INFO", logger="gleam.corpus.sources.vigor"):
        records = list_records(_source(root))
    by_id = {r.record_id: r for r in records if r.role == "query" and not r.rejected}
    assert by_id["vigor_pano_Chicago_pA0"].semi_positives == (_tile("sat1"), _tile("sat9"))  # corrected
    assert by_id["vigor_pano_Chicago_pA2"].split == "test"  # the test file is still the original one
    # the original train file's pAX, pA4 and malformed line are not read any more
    assert not any("pAX" in r.record_id or r.record_id.endswith("_L5") for r in records)
    chicago = next(m for m in caplog.messages if m.startswith("VIGOR Chicago"))
    assert f"splits__corrected/Chicago/{name}" in chicago
    assert "splits/Chicago/same_area_balanced_test.txt" in chicago
    original = list_records(_source(root, labels="original"))
    semi = {r.record_id: r.semi_positives for r in original if r.role == "query" and not r.rejected}
    assert semi["vigor_pano_Chicago_pA0"] == (_tile("sat1"), _tile("sat2"), _tile("sat9"))


def test_corrected_only_roots_and_labels_corrected(root: Path) -> None:
    _write_corrected(root, "same_area_balanced_train__corrected.txt")
    corrected = list_records(_source(root, labels="corrected", cities=["Chicago"]))
    queries = {r.record_id: (r.split, r.reason) for r in corrected if r.role == "query"}
    assert queries["vigor_pano_Chicago_pA0"] == ("train", None)
    assert queries["vigor_pano_Chicago_pA2"] == (None, "missing_pair")  # no corrected test file
    detail = next(r.detail for r in corrected if r.record_id == "vigor_pano_Chicago_pA2")
    assert "splits__corrected/Chicago/same_area_balanced_test__corrected.txt" in detail
    import shutil

    shutil.rmtree(root / "splits")  # SliceMatch's instructions replace splits/ by splits__corrected/
    assert [r.reason for r in list_records(_source(root, cities=["Chicago"])) if "pA0" in r.record_id] == [
        None
    ]


def test_cross_area_splits_by_city_from_pano_label_balanced(root: Path) -> None:
    records = list_records(_source(root, mode="cross_area"))
    good = {(r.role, Path(r.source_uri).parent.parent.name, r.split) for r in records if not r.rejected}
    assert good == {  # Boston is no cross-area city and is skipped
        ("tile", "Chicago", "test"),
        ("query", "Chicago", "test"),
        ("tile", "NewYork", "train"),
        ("query", "NewYork", "train"),
    }
    queries = {r.record_id: (r.split, r.reason) for r in records if r.role == "query"}
    assert queries == {
        "vigor_pano_Chicago_pA0": ("test", None),
        "vigor_pano_Chicago_pA1": ("test", None),
        "vigor_pano_Chicago_pA2": ("test", None),
        "vigor_pano_Chicago_pA3": (None, "missing_pair"),
        "vigor_pano_Chicago_pA4": (None, "missing_pair"),
        "vigor_pano_Chicago_pA5": (None, "missing_pair"),
        "vigor_pano_NewYork_pB1": ("train", None),
    }
    assert not any("Boston" in r.record_id for r in records)


def test_cities_select_folders(root: Path) -> None:
    records = list_records(_source(root, cities=["NewYork", "Boston"]))
    assert [(r.role, r.record_id, r.split) for r in records] == [
        ("tile", "vigor_Boston_satellite_42.36_-71.06", "test"),  # no labels: a distractor
        ("tile", "vigor_NewYork_satellite_40.71_-74.01", "train"),
        ("query", "vigor_pano_NewYork_pB1", "train"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cities": ["Paris"]}, "no city folder"),
        ({"cities": ["Boston"], "mode": "cross_area"}, "cross_area defines splits only"),
    ],
)
def test_bad_city_choices_are_errors(root: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(SourceLayoutError, match=message):
        list_records(_source(root, **kwargs))


def test_an_unusable_root_is_an_error_naming_it(tmp_path: Path, write_image) -> None:
    with pytest.raises(SourceLayoutError, match=re.escape(str(tmp_path))):
        list_records(_source(tmp_path))
    write_image(tmp_path / "Chicago/satellite/satellite_1.0_2.0.png")
    with pytest.raises(SourceLayoutError, match="no splits/ or splits__corrected/ folder"):
        list_records(_source(tmp_path))


def test_lists_the_same_from_s3(root: Path, s3_bucket: str) -> None:
    from gleam import storage

    uri = f"{s3_bucket}/VIGOR"
    storage.upload_tree(root, uri)
    local = list_records(_source(root))
    remote = list_records(_source(uri))
    assert_same_listing(local, remote, root, uri)
