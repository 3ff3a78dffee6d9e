"""CVACT adapter: pairing by id, naming rejects, ACT_data.mat splits, and the real mini sample."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gleam.corpus.sources import SourceLayoutError, list_records
from gleam.corpus.sources.cvact import CVACTSource
from tests.support.listing import assert_same_listing
from tests.support.paths import shared_dataset

# Real CVACT ids are 22 url-safe base64 characters, "-" and "_" included (even leading).
A, B, C, D = (
    "__-DFIFxvZBCn1873qkqXA",
    "H2y6n9mCg53Ip1-0_UigRQ",
    "Fmhz_UEnFT3PEMk0m0E7vA",
    "zWuVeQMec6KqSsf6M1V0_A",
)


def _source(root: Path | str, **kwargs: object) -> CVACTSource:
    return CVACTSource(kind="cvact", uri=str(root), **kwargs)


@pytest.fixture
def root(tmp_path: Path, write_image: Callable[..., Path]) -> Path:
    r = tmp_path / "ANU_data_small"
    for pano_id in (A, B, C):
        write_image(r / "streetview" / f"{pano_id}_grdView.jpg", size=(16, 8))
    for pano_id in (A, B, D):  # D has no panorama: a distractor tile; C has no satellite
        write_image(r / "satview_polish" / f"{pano_id}_satView_polish.jpg")
    write_image(r / "satview_polish" / f"{A}_satView_polish.png")  # same id again: duplicate
    write_image(r / "satview_polish" / "extra" / f"{B}_satView_polish.jpg")  # nested: bad_record
    write_image(r / "streetview" / "notes.txt", text="misnamed")  # bad_record
    write_image(r / "streetview" / ".DS_Store", text="hidden")  # skipped
    return r


def _save_act_data(
    path: Path,
    ids: list[str],
    train: list[int],
    val: list[int],
    cell: bool = False,
    utm: list[list[float]] | None = None,
) -> None:
    """A minimal ACT_data.mat in the standard structure (1-based indices into panoIds; utm: N x 2)."""
    import scipy.io

    pano_ids = np.array(ids, dtype=object) if cell else np.array(ids)
    content = {
        "panoIds": pano_ids,
        "trainSet": {"trainInd": np.array(train, dtype=float).reshape(-1, 1)},
        "valSet": {"valInd": np.array(val, dtype=float).reshape(-1, 1)},
    }
    if utm is not None:
        content["utm"] = np.array(utm, dtype=float)
    scipy.io.savemat(path, content)


def test_pairs_panoramas_with_tiles_by_id(root: Path, no_image_reads: None) -> None:
    records = list_records(_source(root))
    rows = [(r.role, r.record_id, r.modality, r.tile_id, r.location_id, r.split, r.reason) for r in records]
    good = [r[:6] for r in rows if r[6] is None]
    assert good == [  # tiles, then queries, each sorted by id
        ("tile", f"cvact_{B}", "satellite", f"cvact_{B}", f"cvact_{B}", None),
        ("tile", f"cvact_{A}", "satellite", f"cvact_{A}", f"cvact_{A}", None),
        ("tile", f"cvact_{D}", "satellite", f"cvact_{D}", f"cvact_{D}", None),
        ("query", f"cvact_pano_{B}", "panorama", f"cvact_{B}", f"cvact_{B}", None),
        ("query", f"cvact_pano_{A}", "panorama", f"cvact_{A}", f"cvact_{A}", None),
    ]
    rejects = sorted((r.role, Path(r.source_uri).name, r.reason) for r in records if r.rejected)
    assert rejects == [
        ("query", f"{C}_grdView.jpg", "missing_pair"),
        ("query", "notes.txt", "bad_record"),
        ("tile", f"{B}_satView_polish.jpg", "bad_record"),
        ("tile", f"{A}_satView_polish.png", "duplicate"),
    ]
    assert len(records) == 9
    assert {r.gsd_m for r in records} == {None}  # no settled ground resolution: unknown, not guessed


def test_uris_and_details(root: Path) -> None:
    records = {(r.role, r.record_id): r for r in list_records(_source(root, name="act"))}
    query = records[("query", f"act_pano_{A}")]
    assert query.source_uri == str(root / "streetview" / f"{A}_grdView.jpg")
    assert records[("tile", f"act_{A}")].source_uri == str(
        root / "satview_polish" / f"{A}_satView_polish.jpg"
    )
    missing = records[("query", f"act_pano_{C}")]
    assert missing.reason == "missing_pair" and C in missing.detail
    assert all(r.source == "act" for r in records.values())


def test_splits_from_act_data_mat(root: Path) -> None:
    _save_act_data(root / "ACT_data.mat", [A, B, D, C], train=[1, 3], val=[2])
    splits = {r.record_id: r.split for r in list_records(_source(root)) if not r.rejected}
    assert splits == {
        f"cvact_{A}": "train",
        f"cvact_pano_{A}": "train",
        f"cvact_{B}": "test",
        f"cvact_pano_{B}": "test",
        f"cvact_{D}": "train",
    }


# Flinders Peak, a published MGA zone 55 pair (tests/unit/test_utm.py), and a point in Canberra
FLINDERS_PEAK_UTM, FLINDERS_PEAK = (273741.297, 5796489.777), (-37.951033417, 144.424867889)
CANBERRA_UTM = (693000.0, 6093000.0)


def _places(records: list) -> dict[str, tuple[float | None, float | None]]:
    return {r.record_id: (r.lat, r.lon) for r in records if not r.rejected}


@pytest.mark.parametrize("northing_first", [False, True])
def test_utm_coordinates_become_lat_lon_of_tile_and_panorama(root: Path, northing_first: bool) -> None:
    rows = [list(FLINDERS_PEAK_UTM), list(CANBERRA_UTM), [np.nan, np.nan], [0.0, 0.0]]  # A, B, D, C
    if northing_first:
        rows = [row[::-1] for row in rows]
    _save_act_data(root / "ACT_data.mat", [A, B, D, C], train=[1, 3], val=[2], utm=rows)
    places = _places(list_records(_source(root)))
    assert places[f"cvact_{A}"] == places[f"cvact_pano_{A}"]  # the tile is where its panorama is
    assert places[f"cvact_{A}"] == pytest.approx(FLINDERS_PEAK, abs=1e-8)  # ~1 mm
    lat, lon = places[f"cvact_{B}"]
    assert -35.4 < lat < -35.2 and 149.0 < lon < 149.2  # Canberra
    assert places[f"cvact_{D}"] == (None, None)  # a NaN row: no coordinates rather than a wrong one


def test_without_utm_or_without_the_file_lat_lon_stay_empty(root: Path) -> None:
    assert set(_places(list_records(_source(root))).values()) == {(None, None)}
    _save_act_data(root / "ACT_data.mat", [A, B], train=[1], val=[2])
    assert set(_places(list_records(_source(root))).values()) == {(None, None)}


def test_a_utm_array_that_does_not_match_pano_ids_is_an_error(root: Path) -> None:
    _save_act_data(root / "ACT_data.mat", [A, B, D], train=[1], val=[2], utm=[list(CANBERRA_UTM)] * 2)
    with pytest.raises(SourceLayoutError, match=r"utm has shape \(2, 2\), expected \(3, 2\)"):
        list_records(_source(root))


def test_act_data_mat_next_to_the_image_folder_and_as_cell_array(root: Path) -> None:
    _save_act_data(root.parent / "ACT_data.mat", [A, B], train=[2], val=[1], cell=True)
    splits = {r.record_id: r.split for r in list_records(_source(root)) if not r.rejected}
    assert splits[f"cvact_pano_{A}"] == "test" and splits[f"cvact_pano_{B}"] == "train"
    assert splits[f"cvact_{D}"] is None  # not named by the file: prepare hashes its location


def test_an_unreadable_act_data_mat_is_an_error(root: Path) -> None:
    (root / "ACT_data.mat").write_bytes(b"not a mat file")
    with pytest.raises(SourceLayoutError, match=r"ACT_data\.mat"):
        list_records(_source(root))


def test_only_satellites_give_distractor_tiles(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "satview_polish" / f"{D}_satView_polish.jpg")
    assert [(r.role, r.reason) for r in list_records(_source(tmp_path))] == [("tile", None)]


def test_an_unusable_root_is_an_error(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "images" / f"{A}_grdView.jpg")
    for root in (tmp_path, tmp_path / "absent"):
        with pytest.raises(SourceLayoutError, match=re.escape(str(root))):
            list_records(_source(root))


def test_real_mini_sample() -> None:
    root = shared_dataset("cvact-mini")
    records = list_records(_source(root))
    assert Counter((r.role, r.modality, r.split, r.reason) for r in records) == {
        ("tile", "satellite", None, None): 12,
        ("query", "panorama", None, None): 12,
    }
    tiles = {r.record_id: r for r in records if r.role == "tile"}
    for query in (r for r in records if r.role == "query"):
        pano_id = Path(query.source_uri).name.removesuffix("_grdView.jpg")
        assert query.record_id == f"cvact_pano_{pano_id}"
        assert query.tile_id == f"cvact_{pano_id}" == query.location_id
        assert tiles[query.tile_id].source_uri == str(
            root / "satview_polish" / f"{pano_id}_satView_polish.jpg"
        )


def test_lists_the_same_from_s3_with_splits(root: Path, s3_bucket: str) -> None:
    from gleam import storage

    _save_act_data(root / "ACT_data.mat", [A, B], train=[1], val=[2])
    uri = f"{s3_bucket}/CVACT/ANU_data_small"
    storage.upload_tree(root, uri)
    local = list_records(_source(root))
    remote = list_records(_source(uri))
    assert_same_listing(local, remote, root, uri)
    assert {r.split for r in remote if r.record_id.endswith(A)} == {"train"}
