"""A generic manifest: one CSV (`.csv`) or Parquet (`.parquet`, `.pq`) file that lists any corpus.

Columns: `query_uri, modality, tile_uri` are required; `location_id, lat, lon, split, gsd_m, set_id` are
optional and may be empty; other columns are ignored. URIs are absolute (`s3://...`, `file://...`,
`/abs/path`) or relative to the manifest's folder. Files are not opened here: prepare rejects missing
ones when it reads them.

Each row names a query and its positive tile; a row with an empty `query_uri` is a tile-only row (a
distractor) whose modality must be empty or `satellite`. One tile record per distinct `tile_uri`: the first
row naming it sets its location_id, lat, lon and split. A query always shares its tile's place: it takes
the tile's location_id and split (a row stating a different one is a `bad_record`, since otherwise a query
and its positive could land in different splits) and the tile's lat/lon when its own are empty. A query
row's own lat/lon is the query's position (where the photo was taken), which may differ from its tile's
centre; the tile's lat/lon is the centre of the tile image.

Tile geometry: `gsd_m` is the ground size of one pixel of the tile file in metres (north-up), set by the
first row naming the tile like its lat/lon; a later row naming the tile with another value is a
`bad_record`, and on a query-only row it has no tile to describe, so it is refused there too. Prepare
scales it to the prepared size. `set_id` groups a query with the other photos of its place taken together
(queries of one modality with the same set_id form a set); it is namespaced like location_id
(`make_id(name, set_id)`) and is refused on a tile-only row.

Ids are `make_id(name, path)` for tiles and `make_id(name, modality, path)` for queries, where path is the
URI relative to the manifest folder (or the URI without its scheme) without suffix; a clash between two
different URIs (`a.jpg` and `a.png`) adds a short hash of the URI to the later id.

Rejects (row numbers count data rows from 1): an unknown modality, and `satellite` in a query row (the
satellite is the reference view, not a query: put it in `tile_uri`) -> `unknown_modality`; a query without
`tile_uri` -> `missing_pair`; unparsable or out-of-range lat/lon, a split other than train/val/test, a
gsd_m that is not a positive finite number or conflicts with the tile's, a set_id on a tile-only row, a
row with neither URI, a query modality on a tile-only row, or a location/split conflicting with the tile's
-> `bad_record`; a `query_uri` seen before -> `duplicate`. A row rejected as `bad_record` contributes
nothing; a row whose query is rejected for another reason still contributes its tile.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from gleam import storage
from gleam.corpus.schema import Modality, RejectReason, Role, Split
from gleam.corpus.sources.base import Listed, SourceLayoutError, make_id
from gleam.corpus.sources.registry import SourceBase, register

REQUIRED_COLUMNS = ("query_uri", "modality", "tile_uri")
OPTIONAL_COLUMNS = ("location_id", "lat", "lon", "split", "gsd_m", "set_id")
COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
_SPLITS = {s.value for s in Split}


class ManifestSource(SourceBase):
    kind: Literal["manifest"]
    default_name: ClassVar[str] = "manifest"


class _RowError(ValueError):
    """A row that cannot be parsed; its message is the reject detail."""


@dataclass(frozen=True)
class _Row:
    number: int
    query_uri: str
    modality: str
    tile_uri: str
    location_id: str
    lat: str
    lon: str
    split: str
    gsd_m: str = ""
    set_id: str = ""


@dataclass
class _Tile:
    record: Listed
    row: int


@dataclass
class _State:
    """What one pass over the rows has seen: tiles by URI, queries by URI and the ids handed out."""

    name: str
    manifest: str
    folder: str
    tiles: dict[str, _Tile] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)


@register(ManifestSource)
def list_records(source: ManifestSource) -> Iterator[Listed]:
    """Queries and rejects in row order, then one tile per distinct tile_uri in order of first mention."""
    uri = storage.normalize(source.uri)
    state = _State(name=source.source_name, manifest=uri, folder=storage.parent(uri))
    row_records = [record for row in read_rows(uri) for record in _row_records(row, state)]
    yield from (tile.record for tile in state.tiles.values())
    yield from row_records


def read_rows(uri: str) -> list[_Row]:
    """The manifest's rows with every value as a stripped string (empty for null)."""
    table = _read_table(uri)
    missing = [c for c in REQUIRED_COLUMNS if c not in (table[0] if table else [])]
    if missing:
        found = ", ".join(table[0]) if table else "none (the file is empty)"
        raise SourceLayoutError(
            f"manifest {uri} lacks the required column(s) {', '.join(missing)}: its header must name "
            f"{', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)}); found {found}"
        )
    header, rows = table[0], table[1:]
    index = {c: header.index(c) for c in COLUMNS if c in header}

    def value(values: list[str], column: str) -> str:
        i = index.get(column)
        return values[i] if i is not None and i < len(values) else ""

    return [
        _Row(number=n, **{c: value(values, c) for c in COLUMNS}) for n, values in enumerate(rows, start=1)
    ]


def _read_table(uri: str) -> list[list[str]]:
    """[header, *rows] of a CSV or Parquet manifest, values as stripped strings."""
    suffix = posixpath.splitext(uri)[1].lower()
    if suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise SourceLayoutError(
            f"manifest {uri} must end in .csv, .parquet or .pq: the source uri names the manifest file"
        )
    if not storage.is_file(uri):
        raise SourceLayoutError(f"manifest {uri} does not exist: the source uri must name a manifest file")
    data = storage.read_bytes(uri)
    kind = "UTF-8 CSV" if suffix in CSV_SUFFIXES else "Parquet file"
    try:
        return _parse_csv(data) if suffix in CSV_SUFFIXES else _parse_parquet(data)
    except (UnicodeDecodeError, csv.Error, pa.ArrowException) as exc:
        raise SourceLayoutError(f"manifest {uri} cannot be parsed as a {kind}: {exc}") from exc


def _parse_csv(data: bytes) -> list[list[str]]:
    rows = [[v.strip() for v in row] for row in csv.reader(io.StringIO(data.decode("utf-8-sig")))]
    rows = [row for row in rows if any(row)]  # blank lines are not rows
    return [[c.lower() for c in rows[0]], *rows[1:]] if rows else []


def _parse_parquet(data: bytes) -> list[list[str]]:
    table = pq.read_table(pa.BufferReader(data))
    columns = [[_cell(v) for v in column.to_pylist()] for column in table.columns]
    header = [c.strip().lower() for c in table.column_names]
    return [header, *map(list, zip(*columns, strict=True))]


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _row_records(row: _Row, state: _State) -> list[Listed]:
    """The records one row adds (its tile is registered in `state`, not returned)."""
    try:
        lat, lon = _coordinates(row)
        split = _split(row)
        gsd_m = _gsd(row)
        if not row.query_uri and not row.tile_uri:
            raise _RowError("the row names neither query_uri nor tile_uri")
        if not row.query_uri and row.modality.lower() not in ("", Modality.SATELLITE.value):
            raise _RowError(
                f"modality {row.modality!r} but no query_uri (a tile-only row has none or satellite)"
            )
        if not row.query_uri and row.set_id:
            raise _RowError(f"set_id {row.set_id!r} but no query_uri (a set groups queries, not tiles)")
        if not row.tile_uri and gsd_m is not None:
            raise _RowError(f"gsd_m {row.gsd_m} but no tile_uri (gsd_m describes the tile file)")
        tile = _register_tile(row, lat, lon, split, gsd_m, state) if row.tile_uri else None
        return [] if not row.query_uri else [_query(row, tile, lat, lon, state)]
    except _RowError as exc:
        return [_bad_row(row, str(exc), state)]


def _coordinates(row: _Row) -> tuple[float | None, float | None]:
    lat, lon = _number(row.lat, "lat"), _number(row.lon, "lon")
    if lat is not None and not -90 <= lat <= 90:
        raise _RowError(f"lat {row.lat} is outside [-90, 90]")
    if lon is not None and not -180 <= lon <= 180:
        raise _RowError(f"lon {row.lon} is outside [-180, 180]")
    return lat, lon


def _number(text: str, column: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _RowError(f"{column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _RowError(f"{column} {text!r} is not a finite number")
    return value


def _gsd(row: _Row) -> float | None:
    """The tile's metres per pixel: empty, or a positive finite number."""
    value = _number(row.gsd_m, "gsd_m")
    if value is not None and value <= 0:
        raise _RowError(f"gsd_m {row.gsd_m} is not a positive number of metres per pixel")
    return value


def _split(row: _Row) -> str | None:
    if not row.split:
        return None
    if row.split.lower() not in _SPLITS:
        raise _RowError(f"split {row.split!r} is not one of {', '.join(sorted(_SPLITS))}")
    return row.split.lower()


def _register_tile(
    row: _Row,
    lat: float | None,
    lon: float | None,
    split: str | None,
    gsd_m: float | None,
    state: _State,
) -> _Tile:
    """The row's tile: new (described by this row) or the one an earlier row described."""
    uri = resolve_uri(row.tile_uri, state.folder)
    known = state.tiles.get(uri)
    location_id = make_id(state.name, row.location_id) if row.location_id else None
    if known is not None:
        _check_agrees(row, known, location_id, split, gsd_m)
        return known
    tile_id = _unique_id(make_id(state.name, _id_path(uri, state.folder)), uri, state)
    record = Listed.tile(
        tile_id=tile_id,
        source=state.name,
        source_uri=uri,
        location_id=location_id,
        lat=lat,
        lon=lon,
        split=split,
        gsd_m=gsd_m,
    )
    state.tiles[uri] = _Tile(record, row.number)
    return state.tiles[uri]


def _check_agrees(
    row: _Row, tile: _Tile, location_id: str | None, split: str | None, gsd_m: float | None
) -> None:
    """A query sits at its tile's place and in its split, and a tile has one pixel size; a row saying
    otherwise is inconsistent."""
    theirs_gsd = tile.record.gsd_m
    if gsd_m is not None and (theirs_gsd is None or not math.isclose(gsd_m, theirs_gsd, rel_tol=1e-9)):
        set_by = f"{theirs_gsd} set" if theirs_gsd is not None else "none given"
        raise _RowError(
            f"gsd_m {row.gsd_m} conflicts with {set_by} for tile {row.tile_uri} by row {tile.row} "
            "(the first row naming a tile describes it)"
        )
    for column, mine, theirs in (
        ("location_id", location_id, tile.record.location_id),
        ("split", split, tile.record.split),
    ):
        if mine is not None and mine != theirs:
            raise _RowError(
                f"{column} {mine} conflicts with {theirs} set for tile {row.tile_uri} by row {tile.row}"
            )


def _query(row: _Row, tile: _Tile | None, lat: float | None, lon: float | None, state: _State) -> Listed:
    uri = resolve_uri(row.query_uri, state.folder)
    query_id = make_id(state.name, row.modality.lower(), _id_path(uri, state.folder))

    def reject(reason: RejectReason, detail: str) -> Listed:
        return Listed.reject(
            role=Role.QUERY,
            record_id=query_id,
            source=state.name,
            source_uri=uri,
            reason=reason,
            detail=f"row {row.number}: {detail}",
            modality=_known_modality(row.modality),
        )

    if uri in state.queries:
        return reject(RejectReason.DUPLICATE, f"query_uri already listed by row {state.queries[uri]}")
    state.queries[uri] = row.number
    try:
        modality = Modality.parse(row.modality)
    except ValueError as exc:
        return reject(RejectReason.UNKNOWN_MODALITY, str(exc))
    if modality is Modality.SATELLITE:
        allowed = ", ".join(m.value for m in Modality.query_modalities())
        return reject(
            RejectReason.UNKNOWN_MODALITY,
            f"satellite is the reference view, not a query modality (expected one of: {allowed}); "
            "put satellite images in tile_uri",
        )
    if tile is None:
        return reject(RejectReason.MISSING_PAIR, "no tile_uri: a query needs its positive satellite tile")
    record = tile.record
    return Listed.query(
        query_id=_unique_id(query_id, uri, state),
        modality=modality,
        tile_id=record.record_id,
        source=state.name,
        source_uri=uri,
        location_id=record.location_id or record.record_id,
        lat=lat if lat is not None or lon is not None else record.lat,
        lon=lon if lat is not None or lon is not None else record.lon,
        split=record.split,  # the row's own split, if any, was checked to agree
        set_id=make_id(state.name, row.set_id) if row.set_id else None,
    )


def _known_modality(text: str) -> str | None:
    """The modality of a rejected row when it is a valid name (the raw text is in the detail)."""
    try:
        return Modality.parse(text).value
    except ValueError:
        return None


def _bad_row(row: _Row, detail: str, state: _State) -> Listed:
    role = Role.QUERY if row.query_uri else Role.TILE
    target = row.query_uri or row.tile_uri
    uri = resolve_uri(target, state.folder) if target else f"{state.manifest}#row{row.number}"
    path = _id_path(uri, state.folder) if target else f"row{row.number}"
    return Listed.reject(
        role=role,
        record_id=make_id(state.name, row.modality.lower() if row.query_uri else "", path),
        source=state.name,
        source_uri=uri,
        reason=RejectReason.BAD_RECORD,
        detail=f"row {row.number}: {detail}",
        modality=_known_modality(row.modality),
    )


def resolve_uri(uri: str, folder: str) -> str:
    """An absolute URI as is, a relative one below the manifest's folder; `..` folded, links kept.

    Not `storage.normalize` for local paths: it resolves symlinks, which would move a linked image out
    of the manifest's folder and change its id.
    """
    if storage.is_s3(uri):
        return storage.normalize(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if os.path.isabs(uri):
        return os.path.normpath(uri)
    if storage.is_s3(folder):
        return "s3://" + posixpath.normpath(f"{folder[len('s3://') :]}/{uri}")
    return os.path.normpath(os.path.join(folder, uri))


def _id_path(uri: str, folder: str) -> str:
    """The URI below the manifest folder (or without its scheme), without suffix: the readable id part."""
    prefix = folder.rstrip("/") + "/"
    path = uri[len(prefix) :] if uri.startswith(prefix) else uri.split("://", 1)[-1].lstrip("/")
    return posixpath.splitext(path)[0]


def _unique_id(candidate: str, uri: str, state: _State) -> str:
    """`candidate`, or with a short hash of the URI when another URI already holds it."""
    holder = state.ids.setdefault(candidate, uri)
    if holder == uri:
        return candidate
    hashed = make_id(candidate, hashlib.sha1(uri.encode()).hexdigest()[:8])
    state.ids.setdefault(hashed, uri)
    return hashed
