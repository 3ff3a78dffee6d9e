"""A source the adapter cannot list at all ends `gleam prepare` with exit 2 and one line saying what to fix.

Through the CLI as users run it: the exit code, exactly one `error:` line naming the path and the layout
expected, and no traceback. Sources are listed once Ray is up, hence the shared cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gleam.corpus.world.layout import MANIFEST_FILE
from gleam_cli.main import app
from tests.support.console import own_output


def _touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def vigor_without_splits(root: Path) -> dict:
    _touch(root / "Chicago" / "panorama" / "p1,41.8,-87.6,.jpg")
    _touch(root / "Chicago" / "satellite" / "satellite_41.8_-87.6.png")
    return {"kind": "vigor", "uri": str(root)}


def vigor_with_an_unknown_city(root: Path) -> dict:
    vigor_without_splits(root)
    _touch(root / "splits" / "Chicago" / "same_area_balanced_train.txt", b"")
    return {"kind": "vigor", "uri": str(root), "cities": ["Paris"]}


def absent_vigor_root(root: Path) -> dict:
    return {"kind": "vigor", "uri": str(root / "absent")}


def cvact_without_its_folders(root: Path) -> dict:
    _touch(root / "images" / "a_grdView.jpg")
    return {"kind": "cvact", "uri": str(root)}


def cvact_with_a_broken_split_file(root: Path) -> dict:
    _touch(root / "streetview" / "a_grdView.jpg")
    _touch(root / "ACT_data.mat", b"not a mat file")
    return {"kind": "cvact", "uri": str(root)}


def university1652_without_view_folders(root: Path) -> dict:
    _touch(root / "train" / "other" / "0001" / "x.jpg")
    return {"kind": "university1652", "uri": str(root)}


def manifest_without_a_column(root: Path) -> dict:
    _touch(root / "m.csv", b"query_uri,tile_uri\nq.jpg,t.jpg\n")
    return {"kind": "manifest", "uri": str(root / "m.csv")}


def manifest_with_another_suffix(root: Path) -> dict:
    _touch(root / "m.txt", b"query_uri,modality,tile_uri\n")
    return {"kind": "manifest", "uri": str(root / "m.txt")}


def absent_manifest(root: Path) -> dict:
    return {"kind": "manifest", "uri": str(root / "absent.csv")}


def manifest_that_is_not_parquet(root: Path) -> dict:
    _touch(root / "m.parquet", b"not parquet at all")
    return {"kind": "manifest", "uri": str(root / "m.parquet")}


def unfinished_world(root: Path) -> dict:
    _touch(root / MANIFEST_FILE, b"query_uri,modality,tile_uri\n")
    return {"kind": "world", "uri": str(root)}


def empty_raster_folder(root: Path) -> dict:
    root.mkdir(parents=True)
    return {"kind": "raster", "uri": str(root), "tile_size": 64}


CASES: list[tuple[Callable[[Path], dict], list[str]]] = [
    (vigor_without_splits, ["not a VIGOR root (no splits/ or splits__corrected/ folder", "splits/<City>/"]),
    (vigor_with_an_unknown_city, ["no city folder ['Paris'] named in cities; found ['Chicago']"]),
    (absent_vigor_root, ["absent is not a VIGOR root (it does not exist)", "<City>/panorama/"]),
    (cvact_without_its_folders, ["neither streetview/ nor satview_polish/ is in it", "<id>_grdView.jpg"]),
    (cvact_with_a_broken_split_file, ["cannot read CVACT splits from", "ACT_data.mat", "fix or remove it"]),
    (university1652_without_view_folders, ["is not a University-1652 root", "train/{satellite,drone"]),
    (manifest_without_a_column, ["lacks the required column(s) modality", "found query_uri, tile_uri"]),
    (manifest_with_another_suffix, ["m.txt must end in .csv, .parquet or .pq"]),
    (absent_manifest, ["absent.csv does not exist"]),
    (manifest_that_is_not_parquet, ["m.parquet cannot be parsed as a Parquet file"]),
    (unfinished_world, ["(no world.json)", "run `gleam world --output"]),
    (empty_raster_folder, ["is neither a GeoTIFF nor a folder holding files", "a .tif file"]),
]


@pytest.mark.parametrize(("layout", "expected"), CASES, ids=[case.__name__ for case, _ in CASES])
def test_a_bad_source_layout_exits_2_in_one_line(
    ray_cluster, tmp_path: Path, experiment_name: str, layout: Callable[[Path], dict], expected: list[str]
) -> None:
    source = layout(tmp_path / "raw")
    config = tmp_path / "prepare.yaml"
    fields = {"name": "c", "output": str(tmp_path / "out"), "sources": [source]}
    config.write_text(yaml.safe_dump({**fields, "tracking": {"experiment": experiment_name}}))
    result = CliRunner().invoke(app, ["prepare", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in own_output(result.output)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert str(tmp_path / "raw") in errors[0], errors[0]
    for part in expected:
        assert part in errors[0], errors[0]
    assert not (tmp_path / "out" / "c" / "manifest.json").exists()
