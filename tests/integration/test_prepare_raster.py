"""The prepare job on a raster source: a real GeoTIFF, locally and on the S3 server, cut into tiles."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from rasterio.warp import transform as reproject_points

from gleam import storage
from gleam.config import load_config
from gleam.corpus.config import ImageLimits, PrepareConfig
from gleam.corpus.prepare import prepare
from gleam.corpus.raster_read import RasterReaders
from gleam.corpus.raster_uri import parse_window_uri
from gleam.corpus.reader import open_corpus

pytestmark = pytest.mark.integration

TILE, STRIDE = 64, 48  # 6 columns x 4 rows of windows over 300 x 200 px
ORIGIN_X, ORIGIN_Y, PIXEL = 465_000.0, 5_250_000.0, 0.3  # UTM 33N, in Austria
NO_DATA_CORNER = 112  # the windows at (0|48, 0|48) lie inside it


def ortho() -> np.ndarray:
    """Smooth gradients (JPEG keeps them within a grey level) that differ between any two windows."""
    rows, cols = np.mgrid[0:200, 0:300].astype(np.float64)
    array = np.stack(
        [20 + cols * 0.7, 20 + rows * 1.0, 128 + 60 * np.sin(cols / 23) * np.cos(rows / 17)]
    ).round()
    array = array.astype(np.uint8)
    array[:, :NO_DATA_CORNER, :NO_DATA_CORNER] = 0  # outside the survey: no data
    return array


def write_raw(folder: Path) -> np.ndarray:
    folder.mkdir(parents=True)
    array = ortho()
    profile = dict(driver="GTiff", width=300, height=200, count=3, dtype="uint8", tiled=True)
    transform = from_origin(ORIGIN_X, ORIGIN_Y, PIXEL, PIXEL)
    with rasterio.open(folder / "ortho.tif", "w", crs="EPSG:32633", transform=transform, **profile) as out:
        out.write(array)
    with rasterio.open(folder / "plain.tif", "w", **profile) as out:  # no CRS: rejected while listing
        out.write(array)
    return array


def config_for(uri: str, output: str, experiment: str) -> PrepareConfig:
    return load_config(
        PrepareConfig,
        None,
        [
            "name=ortho",
            f"output={output}",
            "sources.0.kind=raster",
            f"sources.0.uri={uri}",
            f"sources.0.tile_size={TILE}",
            f"sources.0.stride={STRIDE}",
            f"sizes.satellite=[{TILE},{TILE}]",  # no resize: the prepared pixels are the window's
            "limits.jpeg_quality=100",
            "batch_size=8",
            "rows_per_shard=10",
            f"tracking.experiment={experiment}",
        ],
    )


def check_corpus(corpus_uri: str, manifest: dict, array: np.ndarray, local_tif: Path) -> None:
    """Counts, centres in WGS84, and pixels (and bytes) of every prepared tile against the source."""
    counts = manifest["counts"]
    assert counts["listed"] == 6 * 4 + 1
    assert counts["tiles"] == 6 * 4 - 4
    assert counts["rejects"] == {"bad_record": 1, "no_data": 4}
    assert manifest["splits"]["tiles"] == {"test": 20}
    corpus = open_corpus(corpus_uri)
    rows = corpus.read("tiles").to_pylist()
    assert len(rows) == 20 and len({r["tile_id"] for r in rows}) == 20
    with RasterReaders() as readers:
        for row in rows:
            w = parse_window_uri(row["source_uri"])
            assert row["tile_id"] == f"raster_ortho_r{w.row_off}_c{w.col_off}"
            x, y = ORIGIN_X + PIXEL * (w.col_off + TILE / 2), ORIGIN_Y - PIXEL * (w.row_off + TILE / 2)
            (lon,), (lat,) = reproject_points("EPSG:32633", "EPSG:4326", [x], [y])
            assert (row["lat"], row["lon"]) == (pytest.approx(lat, abs=1e-9), pytest.approx(lon, abs=1e-9))
            assert 47.3 < row["lat"] < 47.5 and 14.5 < row["lon"] < 14.6
            assert row["gsd_m"] == pytest.approx(PIXEL, rel=5e-3)  # no resize: the raster's pixel size
            expected = np.moveaxis(
                array[:, w.row_off : w.row_off + TILE, w.col_off : w.col_off + TILE], 0, -1
            )
            pixels = np.asarray(Image.open(BytesIO(row["image"])).convert("RGB"), dtype=np.int16)
            assert (row["width"], row["height"]) == (TILE, TILE) == pixels.shape[1::-1]
            assert np.abs(pixels - expected).mean() < 1.0
            side = w.col_off + 8 if w.col_off + 8 + TILE <= 300 else w.col_off - 8
            beside = np.moveaxis(array[:, w.row_off : w.row_off + TILE, side : side + TILE], 0, -1)
            assert np.abs(pixels - beside).mean() > 2.0  # the window 8 px to the side is clearly worse
            # sha256 is of the window's PNG: the same bytes wherever the GeoTIFF is stored
            png = readers.read(replace(w, file_uri=str(local_tif)).uri, ImageLimits())
            assert row["sha256"] == hashlib.sha256(png).hexdigest()
    rejects = {r["record_id"]: r for r in corpus.read("rejects").to_pylist()}
    assert rejects["raster_plain"]["reason"] == "bad_record" and "no CRS" in rejects["raster_plain"]["detail"]
    assert {r["record_id"] for r in rejects.values() if r["reason"] == "no_data"} == {
        f"raster_ortho_r{r}_c{c}" for r in (0, 48) for c in (0, 48)
    }


def test_raster_folder_is_prepared_into_tiles(ray_cluster, tmp_path: Path, experiment_name: str) -> None:
    array = write_raw(tmp_path / "raw")
    result = prepare(config_for(str(tmp_path / "raw"), str(tmp_path / "out"), experiment_name))
    check_corpus(result.corpus_uri, result.manifest, array, tmp_path / "raw" / "ortho.tif")
    assert result.manifest["sources"] == [
        {"kind": "raster", "uri": str(tmp_path / "raw"), "name": "raster", "listed": 25}
    ]


def test_raster_on_s3_is_read_window_by_window(
    ray_cluster, tmp_path: Path, s3_bucket: str, experiment_name: str
) -> None:
    array = write_raw(tmp_path / "raw")
    assert storage.upload_tree(tmp_path / "raw", f"{s3_bucket}/raw") == 2
    result = prepare(config_for(f"{s3_bucket}/raw", f"{s3_bucket}/prepared", experiment_name))
    assert result.corpus_uri == f"{s3_bucket}/prepared/ortho"
    check_corpus(result.corpus_uri, result.manifest, array, tmp_path / "raw" / "ortho.tif")
    uris = open_corpus(result.corpus_uri).read("tiles", ["source_uri"])["source_uri"].to_pylist()
    assert all(u.startswith(f"{s3_bucket}/raw/ortho.tif#window=") for u in uris)
