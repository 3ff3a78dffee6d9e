"""Large north-up orthophotos (GeoTIFF) cut into a grid of square satellite tiles, for an index of a region.

`uri` is one GeoTIFF or a folder of them (every file below it, sorted; names starting with "." are
skipped). Only headers are opened here: each tile is listed as a window URI (`gleam.corpus.raster_uri`)
that prepare reads with a windowed read, so no pixel is touched while listing.

Grid: windows of `tile_size` x `tile_size` pixels every `stride` pixels (default `tile_size`; smaller
overlaps), from the top-left corner; the last row and column are moved to end exactly at the far edge,
so every pixel is in at least one tile, and all tiles have the same size (and ground footprint). A
raster smaller than `tile_size` in either direction is rejected (`too_small`) rather than stretched.

Each tile's lat/lon is its centre (`col_off + tile_size / 2`, `row_off + tile_size / 2` through the
geotransform) reprojected from the raster's CRS to WGS84. Ids are `make_id(name, <path below the folder,
or the file name, without suffix>, r<row_off>, c<col_off>)` with the window's pixel offsets, so they are
stable across runs and say where the tile is; the split is `split` (default test) for every tile.

Each tile's `gsd_m` (metres per pixel of the window at native pixels; prepare scales it to the prepared
size) is measured on the ground, not read off the CRS units: the midpoints of the window's west and east
edges (and of its north and south edges) are reprojected to WGS84 and their offsets from the centre taken
with `gleam.geo.latlon_to_offset`, the inverse of what later turns a pixel offset into a position, so the
round trip pixel -> metres -> lat/lon lands on the raster's own georeferencing. In a projected CRS in
metres (UTM) this is |pixel width| up to the projection's scale factor (UTM: within 0.1 %) and the
sphere's difference from the ellipsoid (< 0.4 %); in feet it converts them; in Web Mercator it removes
the 1 / cos(latitude) stretch its "metres" carry; in a geographic CRS (degrees) it converts at the tile's
latitude. The value is the mean of the east-west and north-south sizes, which on the sphere of
`gleam.geo` differ by up to 0.7 % even for a conformal projection (the ellipsoid's two radii of
curvature), so a position it gives is off by at most about 0.35 % of its distance from the tile centre
(22 cm at the edge of a 128 m tile). When the ground pixel is not square (east-west and north-south
sizes more than 1 % apart, as for equal-degree pixels away from the equator) `gsd_m` is null: one
number cannot say both sizes, and a wrong one would move positions. Reproject such rasters first
(e.g. `gdalwarp -t_srs EPSG:326xx`).

Rejects, one per file: not `.tif`/`.tiff` -> `not_an_image` (sidecars such as `.aux.xml` are not read,
so they are stray files too); not openable as a raster -> `decode_error`; no CRS, no geotransform, a
rotated or not north-up geotransform, a band beyond the raster's count or a data type other than
uint8/uint16 -> `bad_record`; smaller than a tile -> `too_small`. A tile whose centre cannot be
reprojected -> `bad_record`. Tiles with no data are found when read: `no_data` (see `skip_nodata`).
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator
from rasterio.io import DatasetReader
from rasterio.warp import transform as reproject_points

from gleam import storage
from gleam.corpus.raster_read import default_bands, dtype_problem, georeference_problem, open_raster
from gleam.corpus.raster_uri import WindowRef
from gleam.corpus.schema import GSD_SQUARE_TOLERANCE, Modality, RejectReason, Role
from gleam.corpus.sources.base import Listed, SourceLayoutError, make_id
from gleam.corpus.sources.registry import SourceBase, register
from gleam.geo import latlon_to_offset

TIFF_SUFFIXES = (".tif", ".tiff")
WGS84 = "EPSG:4326"


class RasterSource(SourceBase):
    """North-up GeoTIFF orthophotos cut into a grid of square satellite tiles: an index-only gallery.

    The default split is `test` because such tiles are a search gallery, not training pairs, and
    because overlapping tiles hashed into different splits would leak the same pixels into train and test.
    """

    kind: Literal["raster"]
    uri: str = Field(description="a GeoTIFF file or a folder of them (recursive, sorted)")
    tile_size: int = Field(gt=0, description="side of a square tile, in raster pixels")
    stride: int | None = Field(
        None, gt=0, description="pixels between tile origins; default tile_size; smaller overlaps"
    )
    split: Literal["train", "val", "test"] = Field("test", description="the split of every tile")
    bands: list[int] | None = Field(
        None, description="1-based bands read as RGB (3) or grey (1); default: 1,2,3, or 1 as grey"
    )
    skip_nodata: bool = Field(True, description="reject tiles that are all nodata or zero as no_data")

    default_name: ClassVar[str] = "raster"

    @field_validator("bands")
    @classmethod
    def _rgb_or_grey(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if len(value) not in (1, 3):
            raise ValueError(f"give 3 bands (RGB) or 1 (grey), got {len(value)}")
        if min(value) < 1:
            raise ValueError(f"bands are numbered from 1, got {value}")
        return value

    @field_validator("stride")
    @classmethod
    def _no_gaps(cls, value: int | None, info: Any) -> int | None:
        tile_size = info.data.get("tile_size")
        if value is not None and tile_size is not None and value > tile_size:
            raise ValueError(f"{value} is larger than tile_size {tile_size} and would leave gaps")
        return value

    @property
    def step(self) -> int:
        """The stride in effect (tile_size when not set)."""
        return self.stride or self.tile_size


@register(RasterSource)
def list_records(source: RasterSource) -> Iterator[Listed]:
    """File by file (sorted), tiles row by row from the top-left, or the file's one reject."""
    root = storage.normalize(source.uri)
    single = storage.is_file(root)
    files = [root] if single else _files(root)
    for uri in files:
        stem = posixpath.splitext(storage.basename(uri) if single else storage.relative_to(uri, root))[0]
        yield from _file_records(uri, stem, source)


def grid_offsets(size: int, tile_size: int, stride: int) -> list[int]:
    """Window origins along one axis: every `stride`, the last one ending exactly at `size`."""
    last = size - tile_size
    return [*range(0, last, stride), last]


def _files(root: str) -> list[str]:
    files = [e.uri for e in storage.list_files(root) if not storage.basename(e.uri).startswith(".")]
    if not files:
        raise SourceLayoutError(
            f"raster source {root} is neither a GeoTIFF nor a folder holding files: point the source uri "
            "at a .tif file or a folder of them"
        )
    return files


def _file_records(uri: str, stem: str, source: RasterSource) -> Iterator[Listed]:
    name = source.source_name

    def reject(reason: RejectReason, detail: str) -> Listed:
        return Listed.reject(
            role=Role.TILE,
            record_id=make_id(name, stem),
            source=name,
            source_uri=uri,
            reason=reason,
            detail=detail,
            modality=Modality.SATELLITE.value,
        )

    if posixpath.splitext(uri)[1].lower() not in TIFF_SUFFIXES:
        yield reject(RejectReason.NOT_AN_IMAGE, f"not a GeoTIFF ({', '.join(TIFF_SUFFIXES)})")
        return
    try:
        dataset = open_raster(uri)
    except Exception as exc:
        yield reject(RejectReason.DECODE_ERROR, f"cannot open as a raster: {type(exc).__name__}: {exc}")
        return
    with dataset:
        bands = tuple(source.bands) if source.bands else default_bands(dataset.count)
        problem = georeference_problem(dataset) or dtype_problem(dataset, bands)
        if problem:
            yield reject(RejectReason.BAD_RECORD, problem)
            return
        if min(dataset.width, dataset.height) < source.tile_size:
            yield reject(
                RejectReason.TOO_SMALL,
                f"{dataset.width}x{dataset.height} px is smaller than tile_size {source.tile_size}",
            )
            return
        windows = [
            WindowRef(uri, col, row, source.tile_size, source.tile_size, bands, source.skip_nodata)
            for row in grid_offsets(dataset.height, source.tile_size, source.step)
            for col in grid_offsets(dataset.width, source.tile_size, source.step)
        ]
        centres = tile_centres(dataset, windows)
        gsds = tile_gsds(dataset, windows, centres)
    for window, (lat, lon), gsd_m in zip(windows, centres, gsds, strict=True):
        tile_id = make_id(name, stem, f"r{window.row_off}", f"c{window.col_off}")
        if not (math.isfinite(lat) and math.isfinite(lon)):
            yield Listed.reject(
                role=Role.TILE,
                record_id=tile_id,
                source=name,
                source_uri=window.uri,
                reason=RejectReason.BAD_RECORD,
                detail=f"the tile centre cannot be reprojected from {dataset.crs} to WGS84",
                modality=Modality.SATELLITE.value,
            )
            continue
        yield Listed.tile(
            tile_id=tile_id,
            source=name,
            source_uri=window.uri,
            lat=lat,
            lon=lon,
            split=source.split,
            gsd_m=gsd_m,
        )


def tile_centres(dataset: DatasetReader, windows: list[WindowRef]) -> list[tuple[float, float]]:
    """(lat, lon) in WGS84 of each window's centre; the geotransform is north-up (checked before)."""
    t = dataset.transform
    xs = [t.c + t.a * (w.col_off + w.width / 2) for w in windows]
    ys = [t.f + t.e * (w.row_off + w.height / 2) for w in windows]
    lons, lats = reproject_points(dataset.crs, WGS84, xs, ys)
    return list(zip(lats, lons, strict=True))


def tile_gsds(
    dataset: DatasetReader, windows: list[WindowRef], centres: list[tuple[float, float]]
) -> list[float | None]:
    """Ground metres per native pixel of each window (None where unknown or not square): its edge
    midpoints reprojected to WGS84 and measured from its centre (see the module docstring)."""
    t = dataset.transform
    xs: list[float] = []
    ys: list[float] = []
    for w in windows:
        cx, cy = w.col_off + w.width / 2, w.row_off + w.height / 2
        for col, row in (
            (w.col_off, cy),
            (w.col_off + w.width, cy),
            (cx, w.row_off),
            (cx, w.row_off + w.height),
        ):
            xs.append(t.c + t.a * col)
            ys.append(t.f + t.e * row)
    lons, lats = reproject_points(dataset.crs, WGS84, xs, ys)
    out: list[float | None] = []
    for i, (w, (lat, lon)) in enumerate(zip(windows, centres, strict=True)):
        west, east, north, south = (
            latlon_to_offset(lat, lon, lats[j], lons[j]) for j in range(4 * i, 4 * i + 4)
        )
        across = math.hypot(east[0] - west[0], east[1] - west[1]) / w.width
        down = math.hypot(north[0] - south[0], north[1] - south[1]) / w.height
        usable = all(math.isfinite(v) and v > 0 for v in (across, down))
        square = usable and abs(across - down) <= GSD_SQUARE_TOLERANCE * max(across, down)
        out.append((across + down) / 2 if square else None)
    return out
