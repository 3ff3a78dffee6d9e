"""GeoTIFFs in the store, read with rasterio: headers for listing, single windows for prepare.

Local files are opened by GDAL directly; S3 objects through rasterio's `opener=` with a ranged reader
from `gleam.storage`, so a window costs the header plus the blocks it covers, never the whole file.
Sidecar files (`.aux.xml`, `.msk`, `.ovr`, world files) are never looked for, locally or on S3: the
georeferencing must be inside the GeoTIFF, and both stores then read a file the same way.

rasterio datasets are not thread-safe, and `decode_batch` reads on a thread pool, so `RasterReaders`
keeps one open dataset per (thread, file) for the length of a batch.

GDAL turns a failed S3 read into its own error and drops the exception the store raised, so the reader
handed to GDAL keeps that exception (`FetchLog`): a failing store is then retried and, if it does not
recover, raised (the job fails), while a missing or unreadable file and corrupt blocks stay rejects.
"""

from __future__ import annotations

import contextvars
import io
import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import DatasetReader
from rasterio.windows import Window

from gleam import storage
from gleam.corpus.config import ImageLimits
from gleam.corpus.images import ProcessedImage, unreadable
from gleam.corpus.raster_uri import WindowRef, parse_window_uri
from gleam.corpus.schema import RejectReason
from gleam.storage_errors import ReadFailure, RetryPolicy, classify, is_transient

log = logging.getLogger(__name__)
GDAL_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}  # no sidecar probing (one request each on S3)
SUPPORTED_DTYPES = ("uint8", "uint16")


class FetchLog:
    """What S3 reads handed to GDAL: the bytes (a window costs a few blocks, not the file), and the
    error of a read that failed, per thread (GDAL calls the opener on the thread that reads)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._lock = threading.Lock()
        self._errors = threading.local()

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n

    def record_error(self, exc: Exception) -> None:
        self._errors.last = exc

    def take_error(self) -> Exception | None:
        """The error the store raised on this thread since the last call, if any."""
        exc, self._errors.last = getattr(self._errors, "last", None), None
        return exc


class _CountedFile:
    """A file-like that logs what is read through it (the four methods GDAL's opener needs)."""

    def __init__(self, handle: BinaryIO, log: FetchLog) -> None:
        self._handle, self._log = handle, log

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._handle.read(size)
        except Exception as exc:  # kept for the caller; GDAL sees a short read and fails the operation
            self._log.record_error(exc)
            return b""
        self._log.add(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> _CountedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_raster(uri: str, log: FetchLog | None = None) -> DatasetReader:
    """An open dataset (the caller closes it); rasterio errors (RasterioIOError) pass through, and on S3
    the store's own error, if one caused them, is in `log`."""
    uri = storage.normalize(uri)
    with rasterio.Env(**GDAL_OPTIONS), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # reported as a reject, not as noise
        if storage.is_s3(uri):
            opener = _single_file_opener(uri, log or FetchLog())
            return rasterio.open(uri, opener=opener, sharing=False)
        return rasterio.open(uri, sharing=False)


def _single_file_opener(uri: str, log: FetchLog) -> Any:
    """Serves exactly `uri`; any other path GDAL asks for (rasterio's probe, a sidecar) does not exist."""

    def opener(path: str, mode: str = "rb", **_: Any) -> _CountedFile:
        if "r" not in mode or storage.normalize(path) != uri:
            raise FileNotFoundError(path)
        try:
            handle = storage.open_ranged(uri)
        except Exception as exc:
            log.record_error(exc)
            raise
        return _CountedFile(handle, log)

    return opener


def georeference_problem(dataset: DatasetReader) -> str | None:
    """Why tile centres cannot be placed on the globe, or None for a north-up georeferenced raster."""
    transform = dataset.transform
    if dataset.crs is None:
        return "no CRS: tile centres cannot be placed (georeference the GeoTIFF, e.g. gdal_edit -a_srs)"
    if transform.is_identity:
        return "no geotransform: pixel positions have no coordinates"
    if transform.b != 0 or transform.d != 0:
        return f"rotated or sheared geotransform {tuple(transform)[:6]}: only north-up rasters are tiled"
    if transform.a <= 0 or transform.e >= 0:
        return f"geotransform {tuple(transform)[:6]} is not north-up (needs pixel width > 0, height < 0)"
    return None


def dtype_problem(dataset: DatasetReader, bands: tuple[int, ...]) -> str | None:
    """Why these bands cannot be read as an 8-bit image, or None."""
    if max(bands) > dataset.count:
        return f"band {max(bands)} asked for, but the raster has {dataset.count} band(s)"
    dtypes = {dataset.dtypes[b - 1] for b in bands}
    unsupported = sorted(dtypes - set(SUPPORTED_DTYPES))
    if unsupported:
        return f"data type {', '.join(unsupported)} is not supported ({', '.join(SUPPORTED_DTYPES)})"
    return None


def default_bands(count: int) -> tuple[int, ...]:
    """RGB from the first three bands; a raster with fewer is read as grey from band 1."""
    return (1, 2, 3) if count >= 3 else (1,)


def window_png(dataset: DatasetReader, ref: WindowRef, limits: ImageLimits) -> bytes | ProcessedImage:
    """The window's pixels as lossless PNG bytes (8-bit RGB or grey), or the reason it has none."""
    if ref.width * ref.height > limits.max_pixels:
        size = f"{ref.width}x{ref.height}"
        return _reject(RejectReason.PIXEL_LIMIT, f"{size} exceeds {limits.max_pixels} pixels")
    if ref.col_off + ref.width > dataset.width or ref.row_off + ref.height > dataset.height:
        return _reject(
            RejectReason.BAD_RECORD,
            f"window {ref.col_off},{ref.row_off},{ref.width},{ref.height} lies outside the "
            f"{dataset.width}x{dataset.height} raster",
        )
    problem = dtype_problem(dataset, ref.bands)
    if problem:
        return _reject(RejectReason.BAD_RECORD, problem)
    window = Window(ref.col_off, ref.row_off, ref.width, ref.height)
    data = dataset.read(indexes=list(ref.bands), window=window, masked=True)
    if ref.skip_nodata and (np.ma.getmaskarray(data).all() or not np.any(data.data)):
        return _reject(RejectReason.NO_DATA, "the window is all nodata or zero")
    pixels = _to_uint8(np.asarray(data.data))
    image = Image.fromarray(pixels[0]) if len(ref.bands) == 1 else Image.fromarray(np.moveaxis(pixels, 0, -1))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # transient: decoded again right away
    return buffer.getvalue()


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """16-bit data is scaled from its full range (0..65535 -> 0..255), like 16-bit PNGs elsewhere."""
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _reject(reason: RejectReason, detail: str) -> ProcessedImage:
    return ProcessedImage(sha256="", reason=reason.value, detail=detail)


@dataclass(frozen=True)
class _Opened:
    """A dataset and the context it was opened in.

    rasterio's opener keeps its open files in context variables of the opening thread, so closing the
    dataset from another thread fails; every call on it runs in its own context instead.
    """

    context: contextvars.Context
    dataset: DatasetReader


class RasterReaders:
    """Window reads for one batch: datasets opened lazily per (thread, file) and all closed at the end."""

    def __init__(self, retry: RetryPolicy = RetryPolicy()) -> None:
        self.fetched = FetchLog()  # S3 reads (local files are read by GDAL itself)
        self._retry = retry
        self._open: dict[tuple[int, str], _Opened] = {}
        self._failed: dict[str, ProcessedImage] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RasterReaders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, uri: str, limits: ImageLimits) -> bytes | ProcessedImage:
        """PNG bytes of a window URI, or a reject; raises StorageError only when the store keeps failing."""
        try:
            ref = parse_window_uri(uri)
        except ValueError as exc:
            return _reject(RejectReason.BAD_RECORD, str(exc))
        return self._retry.call(ref.file_uri, lambda: self._read_window(ref, limits))

    def _read_window(self, ref: WindowRef, limits: ImageLimits) -> bytes | ProcessedImage:
        """One try: the window or a reject, or the store's error when the store failed (to retry)."""
        opened = self._dataset(ref.file_uri)
        if isinstance(opened, ProcessedImage):
            return opened
        self.fetched.take_error()
        try:
            result: bytes | ProcessedImage | Exception = opened.context.run(
                window_png, opened.dataset, ref, limits
            )
        except Exception as exc:  # GDAL errors on corrupt blocks, S3 failures mid-read
            result = exc
        store_error = self.fetched.take_error()
        if store_error is not None:
            if is_transient(store_error):
                self._discard(ref.file_uri)  # it saw a failed read: the next try opens the file anew
                raise store_error
            return unreadable(ref.file_uri, store_error)
        if isinstance(result, Exception):
            cause = f" ({result.__cause__})" if result.__cause__ else ""  # rasterio keeps GDAL's message here
            return _reject(RejectReason.READ_ERROR, f"{type(result).__name__}: {result}{cause}")
        return result

    def _dataset(self, file_uri: str) -> _Opened | ProcessedImage:
        key = (threading.get_ident(), file_uri)
        with self._lock:
            known = self._open.get(key) or self._failed.get(file_uri)
        if known is not None:
            return known
        context = contextvars.copy_context()
        self.fetched.take_error()
        try:
            dataset = context.run(open_raster, file_uri, self.fetched)
        except Exception as exc:
            return self._open_failed(file_uri, self.fetched.take_error() or exc)
        store_error = self.fetched.take_error()
        if store_error is not None:  # GDAL opened it from a short read: not to be trusted
            context.run(dataset.close)
            return self._open_failed(file_uri, store_error)
        opened = _Opened(context, dataset)
        with self._lock:
            self._open[key] = opened
        return opened

    def _open_failed(self, file_uri: str, exc: Exception) -> ProcessedImage:
        """The file's reject, remembered for the batch; a failing store is raised (and not remembered:
        the next try asks the store again)."""
        if is_transient(exc):
            raise exc
        failed = _open_failure(file_uri, exc)
        with self._lock:
            self._failed[file_uri] = failed
        return failed

    def _discard(self, file_uri: str) -> None:
        """Close this thread's dataset of the file (it is reopened on next use)."""
        with self._lock:
            item = self._open.pop((threading.get_ident(), file_uri), None)
        if item is not None:
            _close(item)

    def close(self) -> None:
        """Close every dataset (after the threads using them are done); a failing close is only logged."""
        with self._lock:
            opened, self._open = list(self._open.values()), {}
        for item in opened:
            _close(item)


def _close(item: _Opened) -> None:
    try:
        item.context.run(item.dataset.close)
    except Exception as exc:
        log.warning("closing %s failed: %s: %s", item.dataset.name, type(exc).__name__, exc)


def _open_failure(file_uri: str, exc: Exception) -> ProcessedImage:
    """missing_file or read_error. An absent S3 object says so; GDAL's errors (local files) do not, so
    then the store is asked whether the file is there."""
    if classify(exc) is ReadFailure.MISSING:
        return unreadable(file_uri, exc)
    try:
        missing = not storage.exists(file_uri)
    except Exception:
        missing = False
    if missing:
        return _reject(RejectReason.MISSING_FILE, f"not found: {file_uri}")
    return _reject(RejectReason.READ_ERROR, f"cannot open {file_uri}: {type(exc).__name__}: {exc}")
