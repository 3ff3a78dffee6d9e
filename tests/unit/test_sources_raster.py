"""The raster source: a grid of windows over real GeoTIFFs, centre coordinates, rejects and window reads."""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.transform import from_origin
from rasterio.warp import transform as reproject_points

from gleam import storage
from gleam.config import ConfigError, load_config
from gleam.corpus.config import ImageLimits, PrepareConfig
from gleam.corpus.images import process_image
from gleam.corpus.raster_read import RasterReaders
from gleam.corpus.raster_uri import WindowRef, parse_window_uri
from gleam.corpus.sources import SourceLayoutError, list_records
from gleam.corpus.sources.raster import RasterSource, grid_offsets
from gleam.geo import EARTH_RADIUS_M, distance_m, pixel_to_latlon

WEB_MERCATOR_R = 6378137.0
LIMITS = ImageLimits(min_side=8)


def pattern(height: int = 200, width: int = 300, bands: int = 3, seed: int = 0) -> np.ndarray:
    """Random bytes from 1 to 255: every window differs from every other one and none is all zero."""
    return np.random.default_rng(seed).integers(1, 256, size=(bands, height, width), dtype=np.uint8)


def write_tif(
    path: Path,
    array: np.ndarray,
    crs: str | None = "EPSG:32633",
    transform: Affine | None = None,
    **profile: object,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    bands, height, width = array.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=bands,
        dtype=array.dtype,
        crs=crs,
        transform=transform if transform is not None else from_origin(500_000, 5_300_000, 0.5, 0.5),
        **profile,
    ) as dataset:
        dataset.write(array)
    return path


def raster(uri: Path | str, **kwargs: object) -> RasterSource:
    return RasterSource(kind="raster", uri=str(uri), **kwargs)


def tiles(records: list) -> list:
    return [r for r in records if not r.rejected]


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


# --- the grid ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "tile", "stride", "expected"),
    [
        (300, 128, 64, [0, 64, 128, 172]),  # overlap, last column moved to the far edge
        (200, 128, 64, [0, 64, 72]),
        (300, 100, 100, [0, 100, 200]),  # an exact fit adds no extra window
        (300, 128, 128, [0, 128, 172]),
        (128, 128, 64, [0]),  # exactly one tile
    ],
)
def test_grid_offsets(size: int, tile: int, stride: int, expected: list[int]) -> None:
    assert grid_offsets(size, tile, stride) == expected


def test_windows_cover_the_raster_with_overlap_and_edge_alignment(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "ortho.tif", pattern())
    records = list_records(raster(path, tile_size=128, stride=64))
    assert all(not r.rejected for r in records)
    refs = [parse_window_uri(r.source_uri) for r in records]
    assert [(w.col_off, w.row_off) for w in refs] == [(c, r) for r in (0, 64, 72) for c in (0, 64, 128, 172)]
    covered = np.zeros((200, 300), dtype=bool)
    for w in refs:
        assert (w.width, w.height, w.bands, w.skip_nodata, w.file_uri) == (
            128,
            128,
            (1, 2, 3),
            True,
            str(path),
        )
        covered[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = True
    assert covered.all()
    first = records[0]
    assert first.record_id == first.tile_id == first.location_id == "raster_ortho_r0_c0"
    assert first.source_uri == f"{path}#window=0,0,128,128&bands=1,2,3&nodata=skip"
    assert (first.role, first.modality, first.split, first.source) == ("tile", "satellite", "test", "raster")
    assert [r.record_id for r in records[-2:]] == ["raster_ortho_r72_c128", "raster_ortho_r72_c172"]

    without_overlap = list_records(raster(path, tile_size=100))  # stride defaults to tile_size
    assert len(without_overlap) == 3 * 2


def test_ids_are_stable_and_unique_and_folders_are_listed_sorted(tmp_path: Path) -> None:
    write_tif(tmp_path / "area" / "b.tif", pattern(seed=1))
    write_tif(tmp_path / "area" / "sub" / "a.tiff", pattern(seed=2))
    (tmp_path / "area" / ".hidden.tif").write_text("skipped: starts with a dot")
    source = raster(tmp_path / "area", tile_size=100, stride=50, name="region", split="val")
    first, again = list_records(source), list_records(source)
    assert first == again
    ids = [r.record_id for r in first]
    assert len(ids) == len(set(ids)) == 2 * (5 * 3)
    assert ids[0] == "region_b_r0_c0" and ids[-1] == "region_sub-a_r100_c200"
    assert {r.split for r in first} == {"val"}


# --- coordinates -------------------------------------------------------------------------------------


def test_centres_in_web_mercator_match_the_closed_form_inverse(tmp_path: Path) -> None:
    origin_x, origin_y, pixel = 950_000.0, 6_000_000.0, 2.0  # near Zurich
    path = write_tif(
        tmp_path / "m.tif",
        pattern(),
        crs="EPSG:3857",
        transform=from_origin(origin_x, origin_y, pixel, pixel),
    )
    records = list_records(raster(path, tile_size=128, stride=64))
    for record in records:
        w = parse_window_uri(record.source_uri)
        x = origin_x + pixel * (w.col_off + 64)  # centre of the window, by hand from the affine
        y = origin_y - pixel * (w.row_off + 64)
        lon = math.degrees(x / WEB_MERCATOR_R)
        lat = math.degrees(2 * math.atan(math.exp(y / WEB_MERCATOR_R)) - math.pi / 2)
        assert record.lat == pytest.approx(lat, abs=1e-9)
        assert record.lon == pytest.approx(lon, abs=1e-9)


def test_centres_in_utm_match_a_reference_point_and_pixel_geometry(tmp_path: Path) -> None:
    # UTM 33N: easting 500000 / northing 0 is exactly (lat 0, lon 15), the zone's central meridian at
    # the equator. The raster is placed so that the centre of the tile at (64, 64) falls there.
    pixel = 0.5
    transform = from_origin(500_000 - pixel * (64 + 50), pixel * (64 + 50), pixel, pixel)
    path = write_tif(tmp_path / "utm.tif", pattern(), transform=transform)
    records = {r.record_id: r for r in list_records(raster(path, tile_size=100, stride=64))}
    reference = records["raster_utm_r64_c64"]
    assert reference.lat == pytest.approx(0.0, abs=1e-9)
    assert reference.lon == pytest.approx(15.0, abs=1e-9)
    for record in records.values():
        w = parse_window_uri(record.source_uri)
        x = transform.c + pixel * (w.col_off + 50)
        y = transform.f - pixel * (w.row_off + 50)
        (lon,), (lat,) = reproject_points("EPSG:32633", "EPSG:4326", [x], [y])
        assert (record.lat, record.lon) == (pytest.approx(lat, abs=1e-9), pytest.approx(lon, abs=1e-9))
    # 64 px of 0.5 m to the east at the equator is 32 m, about 0.000287 degrees of longitude
    east = records["raster_utm_r64_c128"]
    assert east.lon - reference.lon == pytest.approx(32 / 111_319.49, rel=1e-3)
    assert east.lat == pytest.approx(0.0, abs=1e-9)


# --- ground pixel size (gsd_m) ------------------------------------------------------------------------


def test_gsd_in_utm_metres_is_the_pixel_width_and_round_trips_to_the_rasters_pixels(tmp_path: Path) -> None:
    pixel = 0.5
    transform = from_origin(500_000 - pixel * (64 + 50), pixel * (64 + 50), pixel, pixel)
    path = write_tif(tmp_path / "utm.tif", pattern(), transform=transform)
    records = tiles(list_records(raster(path, tile_size=100, stride=64)))
    for record in records:
        # |pixel width| up to UTM's scale factor and the sphere's difference from the ellipsoid
        assert record.gsd_m == pytest.approx(pixel, rel=5e-3)
        w = parse_window_uri(record.source_uri)
        cols, rows = np.array([0, 99, 0, 99, 50]), np.array([0, 0, 99, 99, 20])  # pixel centres
        xs = transform.c + pixel * (w.col_off + cols + 0.5)
        ys = transform.f - pixel * (w.row_off + rows + 0.5)
        lons, lats = reproject_points("EPSG:32633", "EPSG:4326", xs.tolist(), ys.tolist())
        got = pixel_to_latlon(record.lat, record.lon, record.gsd_m, w.width, w.height, cols, rows)
        # within 0.4 % of the distance from the centre: the sphere's two axes vs the ellipsoid's
        offset = distance_m(lats, lons, record.lat, record.lon)
        assert np.all(distance_m(lats, lons, *got) < 0.004 * offset + 0.01)


def test_gsd_in_web_mercator_removes_the_latitude_stretch(tmp_path: Path) -> None:
    pixel = 2.0  # Web Mercator "metres": ground size is pixel * cos(latitude)
    path = write_tif(
        tmp_path / "m.tif", pattern(), crs="EPSG:3857", transform=from_origin(950_000, 6e6, pixel, pixel)
    )
    for record in tiles(list_records(raster(path, tile_size=128, stride=64))):
        ground = pixel * math.cos(math.radians(record.lat)) * EARTH_RADIUS_M / WEB_MERCATOR_R
        assert record.gsd_m == pytest.approx(ground, rel=1e-4)
        assert 1.3 < record.gsd_m < 1.4  # about 47 degrees north


def test_gsd_in_feet_is_converted(tmp_path: Path) -> None:
    # NAD83 / New York Long Island (US survey feet): one foot is 0.3048006 m, Lambert scale within 0.1 %
    path = write_tif(
        tmp_path / "ny.tif", pattern(), crs="EPSG:2263", transform=from_origin(990_000, 210_000, 1.0, 1.0)
    )
    for record in tiles(list_records(raster(path, tile_size=128))):
        assert record.gsd_m == pytest.approx(0.3048006, rel=3e-3)


def test_gsd_in_degrees_is_converted_at_the_tiles_latitude_or_unknown_when_not_square(tmp_path: Path) -> None:
    lat0, step = 47.0, 1e-5  # degrees of latitude per pixel: 1.11 m
    wide = step / math.cos(math.radians(lat0))  # degrees of longitude as wide as `step` is tall
    square = from_origin(8.5, lat0, wide, step)
    path = write_tif(tmp_path / "square.tif", pattern(), crs="EPSG:4326", transform=square)
    expected = math.radians(step) * EARTH_RADIUS_M
    records = tiles(list_records(raster(path, tile_size=128)))
    assert records and all(r.gsd_m == pytest.approx(expected, rel=2e-3) for r in records)
    # equal-degree pixels at 47 degrees are 0.76 m wide and 1.11 m tall: one number cannot say both
    plain = write_tif(
        tmp_path / "plain.tif", pattern(), crs="EPSG:4326", transform=from_origin(8.5, lat0, step, step)
    )
    assert [r.gsd_m for r in tiles(list_records(raster(plain, tile_size=128)))] == [None] * 6


# --- rejects while listing ---------------------------------------------------------------------------


def test_unusable_files_are_rejected_with_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    write_tif(folder / "a_good.tif", pattern())
    write_tif(folder / "b_nocrs.tif", pattern(), crs=None)
    write_tif(folder / "c_rotated.tif", pattern(), transform=Affine(0.5, 0.1, 500_000, 0.1, -0.5, 5_300_000))
    write_tif(folder / "d_southup.tif", pattern(), transform=Affine(0.5, 0, 500_000, 0, 0.5, 5_300_000))
    write_tif(folder / "e_float.tif", pattern().astype("float32"))
    write_tif(folder / "f_small.tif", pattern(height=90, width=300))
    (folder / "g_notes.txt").write_text("not a raster")
    (folder / "h_broken.tif").write_text("not a tiff either")
    with rasterio.open(
        folder / "i_plain.tif", "w", driver="GTiff", width=300, height=200, count=1, dtype="uint8"
    ) as d:
        d.write(pattern(bands=1))  # neither CRS nor geotransform
    records = list_records(raster(folder, tile_size=100))
    rejects = {storage.basename(r.source_uri): (r.reason, r.detail) for r in records if r.rejected}
    assert {name: reason for name, (reason, _) in rejects.items()} == {
        "b_nocrs.tif": "bad_record",
        "c_rotated.tif": "bad_record",
        "d_southup.tif": "bad_record",
        "e_float.tif": "bad_record",
        "f_small.tif": "too_small",
        "g_notes.txt": "not_an_image",
        "h_broken.tif": "decode_error",
        "i_plain.tif": "bad_record",
    }
    assert "no CRS" in rejects["b_nocrs.tif"][1]
    assert "rotated" in rejects["c_rotated.tif"][1]
    assert "not north-up" in rejects["d_southup.tif"][1]
    assert "float32" in rejects["e_float.tif"][1]
    assert "smaller than tile_size 100" in rejects["f_small.tif"][1]
    assert all(r.role == "tile" and r.modality == "satellite" for r in records)
    assert next(r.record_id for r in records if r.rejected) == "raster_b_nocrs"
    assert len(tiles(records)) == 3 * 2  # the good file only


def test_bands_beyond_the_raster_are_rejected_and_a_missing_source_is_an_error(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "rgb.tif", pattern())
    (record,) = list_records(raster(path, tile_size=100, bands=[4, 3, 2]))
    assert record.reason == "bad_record" and "band 4" in record.detail
    with pytest.raises(SourceLayoutError, match="neither a GeoTIFF nor a folder"):
        list_records(raster(tmp_path / "absent", tile_size=100))


# --- reading windows ---------------------------------------------------------------------------------


def test_a_window_reads_exactly_its_pixels_in_the_chosen_bands(tmp_path: Path) -> None:
    array = pattern()
    path = write_tif(tmp_path / "o.tif", array, tiled=True, blockxsize=64, blockysize=64)
    records = list_records(raster(path, tile_size=100, stride=64))
    bgr = list_records(raster(path, tile_size=100, stride=64, bands=[3, 2, 1]))
    grey = list_records(raster(path, tile_size=100, stride=64, bands=[2]))
    with RasterReaders() as readers:
        for rgb_record, bgr_record, grey_record in zip(records, bgr, grey, strict=True):
            w = parse_window_uri(rgb_record.source_uri)
            expected = array[:, w.row_off : w.row_off + 100, w.col_off : w.col_off + 100]
            png = readers.read(rgb_record.source_uri, LIMITS)
            assert np.array_equal(decode(png), np.moveaxis(expected, 0, -1))
            assert np.array_equal(
                decode(readers.read(bgr_record.source_uri, LIMITS)), np.moveaxis(expected[::-1], 0, -1)
            )
            grey_png = readers.read(grey_record.source_uri, LIMITS)
            assert np.array_equal(decode(grey_png), expected[1])
        prepared = process_image(grey_png, (100, 100), LIMITS)  # single band -> grey replicated to RGB
        channels = decode(prepared.image).astype(int)
        assert prepared.ok and np.abs(channels[..., 0] - channels[..., 2]).max() <= 1


def test_sixteen_bit_data_is_scaled_and_single_band_rasters_default_to_grey(tmp_path: Path) -> None:
    array = pattern(bands=1).astype(np.uint16) * 257  # full 16-bit range
    path = write_tif(tmp_path / "dem_like.tif", array)
    records = list_records(raster(path, tile_size=100))
    assert parse_window_uri(records[0].source_uri).bands == (1,)
    with RasterReaders() as readers:
        assert np.array_equal(
            decode(readers.read(records[0].source_uri, LIMITS)), array[0, :100, :100] // 257
        )


def test_windows_without_data_are_rejected_unless_kept(tmp_path: Path) -> None:
    array = pattern()
    array[:, :100, :100] = 0  # a black corner without a nodata value
    array[:, 100:, 200:] = 7  # the nodata value below
    path = write_tif(tmp_path / "edge.tif", array, nodata=7)
    refs = {
        "zero": WindowRef(str(path), 0, 0, 100, 100, (1, 2, 3)),
        "nodata": WindowRef(str(path), 200, 100, 100, 100, (1, 2, 3)),
        "partly": WindowRef(str(path), 50, 50, 100, 100, (1, 2, 3)),
    }
    with RasterReaders() as readers:
        outcomes = {k: readers.read(ref.uri, LIMITS) for k, ref in refs.items()}
        kept = readers.read(WindowRef(str(path), 0, 0, 100, 100, (1, 2, 3), skip_nodata=False).uri, LIMITS)
    assert outcomes["zero"].reason == outcomes["nodata"].reason == "no_data"
    assert isinstance(outcomes["partly"], bytes)
    assert not decode(kept).any()


def test_read_problems_become_reasons_never_exceptions(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "o.tif", pattern())
    broken = tmp_path / "broken.tif"
    broken.write_bytes(path.read_bytes()[:4000])  # header intact, pixel data cut off
    cases = {
        "missing": (WindowRef(str(tmp_path / "gone.tif"), 0, 0, 100, 100, (1, 2, 3)).uri, "missing_file"),
        "outside": (WindowRef(str(path), 250, 0, 100, 100, (1, 2, 3)).uri, "bad_record"),
        "band": (WindowRef(str(path), 0, 0, 100, 100, (5,)).uri, "bad_record"),
        "malformed": (f"{path}#window=0,0,100", "bad_record"),
        "option": (f"{path}#window=0,0,100,100&colour=red", "bad_record"),
        "huge": (WindowRef(str(path), 0, 0, 300, 200, (1, 2, 3)).uri, "pixel_limit"),
        "truncated": (WindowRef(str(broken), 0, 100, 100, 100, (1, 2, 3)).uri, "read_error"),
    }
    limits = ImageLimits(min_side=8, max_pixels=200 * 200)
    with RasterReaders() as readers:
        got = {name: readers.read(uri, limits) for name, (uri, _) in cases.items()}
    assert {name: getattr(result, "reason", "bytes") for name, result in got.items()} == {
        name: reason for name, (_, reason) in cases.items()
    }


def test_window_uri_round_trip() -> None:
    ref = WindowRef("s3://b/dir with # sign/o.tif", 5, 6, 7, 8, (3, 2, 1), skip_nodata=False)
    assert ref.uri == "s3://b/dir with # sign/o.tif#window=5,6,7,8&bands=3,2,1&nodata=keep"
    assert parse_window_uri(ref.uri) == ref
    assert parse_window_uri("/a.tif#window=0,0,4,4") == WindowRef("/a.tif", 0, 0, 4, 4, (1, 2, 3), True)
    for bad in ("/a.tif", "#window=0,0,1,1", "/a.tif#window=0,0,0,1", "/a.tif#window=0,0,1,1&bands=1,2"):
        with pytest.raises(ValueError):
            parse_window_uri(bad)


# --- S3 ----------------------------------------------------------------------------------------------


def test_s3_listing_and_reads_fetch_only_the_needed_bytes(
    tmp_path: Path, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    array = pattern(height=2048, width=2048, seed=3)  # 12 MiB uncompressed, in 256 px internal tiles
    local = write_tif(tmp_path / "big.tif", array, tiled=True, blockxsize=256, blockysize=256)
    uri = f"{s3_bucket}/ortho/big.tif"
    storage.write_bytes(uri, local.read_bytes())
    s3_records = list_records(raster(f"{s3_bucket}/ortho", tile_size=256))
    local_records = list_records(raster(local.parent, tile_size=256))
    assert len(s3_records) == 64
    assert [(r.record_id, r.lat, r.lon) for r in s3_records] == [
        (r.record_id, r.lat, r.lon) for r in local_records
    ]
    assert s3_records[9].source_uri == f"{uri}#window=256,256,256,256&bands=1,2,3&nodata=skip"
    with RasterReaders() as readers:
        png = readers.read(s3_records[9].source_uri, LIMITS)
        fetched = readers.fetched.bytes
        with ThreadPoolExecutor(4) as pool:  # as decode_batch reads; closed afterwards by this thread
            pngs = list(pool.map(lambda r: readers.read(r.source_uri, LIMITS), s3_records[::7]))
    assert np.array_equal(decode(png), np.moveaxis(array[:, 256:512, 256:512], 0, -1))
    assert fetched < local.stat().st_size / 8, f"{fetched} bytes fetched for one window"
    assert not [r.getMessage() for r in caplog.records if "closing" in r.getMessage()]
    for record, data in zip(s3_records[::7], pngs, strict=True):
        w = parse_window_uri(record.source_uri)
        expected = array[:, w.row_off : w.row_off + 256, w.col_off : w.col_off + 256]
        assert np.array_equal(decode(data), np.moveaxis(expected, 0, -1))


# --- config ------------------------------------------------------------------------------------------


BASE = ["name=c", "output=/tmp/out", "sources.0.kind=raster", "sources.0.uri=/data/ortho"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "sources.0.raster.tile_size: Field required"),
        (["sources.0.tile_size=0"], "sources.0.raster.tile_size: Input should be greater than 0"),
        (
            ["sources.0.tile_size=256", "sources.0.stride=0"],
            "sources.0.raster.stride: Input should be greater",
        ),
        (
            ["sources.0.tile_size=256", "sources.0.stride=300"],
            "sources.0.raster.stride: Value error, 300 is larger",
        ),
        (["sources.0.tile_size=256", "sources.0.bands=[1,2]"], "sources.0.raster.bands: Value error, give 3"),
        (
            ["sources.0.tile_size=256", "sources.0.bands=[0,1,2]"],
            "sources.0.raster.bands: Value error, bands are",
        ),
        (["sources.0.tile_size=256", "sources.0.split=holdout"], "sources.0.raster.split"),
    ],
)
def test_config_errors_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(PrepareConfig, None, BASE + overrides)


def test_config_defaults() -> None:
    config = load_config(PrepareConfig, None, [*BASE, "sources.0.tile_size=256"])
    (source,) = config.sources
    assert isinstance(source, RasterSource)
    assert (source.source_name, source.step, source.split, source.bands, source.skip_nodata) == (
        "raster",
        256,
        "test",
        None,
        True,
    )
