"""Window URIs: one square of a large GeoTIFF named as a URI, so a tile can be listed without its bytes.

    <file uri>#window=<col_off>,<row_off>,<width>,<height>&bands=<b1>[,<b2>,<b3>]&nodata=<skip|keep>

Offsets and sizes are raster pixels (column = x from the left, row = y from the top), bands are 1-based
(three read as RGB, one as grey) and `nodata=skip` rejects a window that holds no data. The fragment is
split off at the last `#window=`, so the file URI itself may contain `#`. Pure string handling: no
rasterio here, so the prepare stages can recognise a window URI without importing GDAL.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW_MARK = "#window="
NODATA_MODES = ("skip", "keep")


@dataclass(frozen=True)
class WindowRef:
    """A window of a raster file, with how to read it."""

    file_uri: str
    col_off: int
    row_off: int
    width: int
    height: int
    bands: tuple[int, ...]
    skip_nodata: bool = True

    @property
    def uri(self) -> str:
        bands = ",".join(str(b) for b in self.bands)
        nodata = "skip" if self.skip_nodata else "keep"
        return (
            f"{self.file_uri}{WINDOW_MARK}{self.col_off},{self.row_off},{self.width},{self.height}"
            f"&bands={bands}&nodata={nodata}"
        )


def is_window_uri(uri: str) -> bool:
    return WINDOW_MARK in uri


def parse_window_uri(uri: str) -> WindowRef:
    """The window a URI names; ValueError (with the reason) for a malformed one."""
    file_uri, mark, fragment = uri.rpartition(WINDOW_MARK)
    if not mark or not file_uri:
        raise ValueError(f"not a window URI (expected <file>{WINDOW_MARK}col,row,width,height): {uri}")
    window, *options = fragment.split("&")
    values = dict(_option(o, uri) for o in options)
    unknown = set(values) - {"bands", "nodata"}
    if unknown:
        raise ValueError(f"unknown window option(s) {', '.join(sorted(unknown))} in {uri}")
    numbers = _integers(window, "window", uri)
    if len(numbers) != 4:
        raise ValueError(f"window needs col_off,row_off,width,height, got {window!r} in {uri}")
    col_off, row_off, width, height = numbers
    if col_off < 0 or row_off < 0 or width < 1 or height < 1:
        raise ValueError(f"window {window!r} needs offsets >= 0 and sizes >= 1 in {uri}")
    bands = tuple(_integers(values["bands"], "bands", uri)) if "bands" in values else (1, 2, 3)
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise ValueError(f"bands must be 3 (RGB) or 1 (grey) numbers from 1, got {bands} in {uri}")
    nodata = values.get("nodata", "skip")
    if nodata not in NODATA_MODES:
        raise ValueError(f"nodata must be skip or keep, got {nodata!r} in {uri}")
    return WindowRef(file_uri, col_off, row_off, width, height, bands, nodata == "skip")


def _option(text: str, uri: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"window option {text!r} is not key=value in {uri}")
    return key, value


def _integers(text: str, what: str, uri: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a list of integers in {uri}") from None
