"""The record every dataset adapter lists: one per input file, before any byte is read.

Adapters only walk folders and parse names or label files; decoding, validation and de-duplication
happen later in `prepare`, so listing a million-image corpus stays cheap and side-effect free.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pyarrow as pa

from gleam import storage
from gleam.corpus.schema import LISTING_SCHEMA, Modality, RejectReason, Role
from gleam.errors import InvalidInputError

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class SourceLayoutError(InvalidInputError, ValueError):
    """A source root, file or column the adapter cannot list at all (exit 2): the message names what is
    missing or wrong and the layout it expected. A single bad file is a reject, never this error."""


def not_a_root(root: str, dataset: str, problem: str, layout: str) -> SourceLayoutError:
    """The error for a root that does not hold `dataset`: whether it exists, what is off, what it needs."""
    found = problem if storage.exists(root) else "it does not exist"
    return SourceLayoutError(f"source uri {root} is not a {dataset} root ({found}); expected {layout}")


def make_id(*parts: object) -> str:
    """Join parts into an id safe for URLs, file names and Parquet (`u1652_0001`, not `u1652/0001`)."""
    cleaned = [_UNSAFE_ID_CHARS.sub("-", str(p)).strip("-") for p in parts if p is not None and str(p) != ""]
    return "_".join(cleaned)


@dataclass(frozen=True)
class Listed:
    """One listed input: a tile or a query; `reason` set means it was already rejected while listing."""

    role: str
    record_id: str
    source: str
    source_uri: str
    modality: str | None = None
    tile_id: str | None = None
    location_id: str | None = None
    lat: float | None = None
    lon: float | None = None
    split: str | None = None
    reason: str | None = None
    detail: str | None = None
    semi_positives: tuple[str, ...] | None = None  # tile ids (schema.SEMI_POSITIVES); VIGOR only
    gsd_m: float | None = None  # tiles: metres per pixel of the source image as listed (schema.GSD_M)
    set_id: str | None = None  # queries: the set of photos of one place it belongs to (schema.SET_ID)

    @classmethod
    def tile(
        cls,
        *,
        tile_id: str,
        source: str,
        source_uri: str,
        location_id: str | None = None,
        lat: float | None = None,
        lon: float | None = None,
        split: str | None = None,
        gsd_m: float | None = None,
    ) -> Listed:
        return cls(
            role=Role.TILE.value,
            record_id=tile_id,
            source=source,
            source_uri=source_uri,
            modality=Modality.SATELLITE.value,
            tile_id=tile_id,
            location_id=location_id if location_id is not None else tile_id,
            lat=lat,
            lon=lon,
            split=split,
            gsd_m=gsd_m,
        )

    @classmethod
    def query(
        cls,
        *,
        query_id: str,
        modality: Modality,
        tile_id: str,
        source: str,
        source_uri: str,
        location_id: str,
        lat: float | None = None,
        lon: float | None = None,
        split: str | None = None,
        semi_positives: tuple[str, ...] | None = None,
        set_id: str | None = None,
    ) -> Listed:
        return cls(
            role=Role.QUERY.value,
            record_id=query_id,
            source=source,
            source_uri=source_uri,
            modality=Modality(modality).value,
            tile_id=tile_id,
            location_id=location_id,
            lat=lat,
            lon=lon,
            split=split,
            semi_positives=semi_positives,
            set_id=set_id,
        )

    @classmethod
    def reject(
        cls,
        *,
        role: Role,
        record_id: str,
        source: str,
        source_uri: str,
        reason: RejectReason,
        detail: str,
        modality: str | None = None,
    ) -> Listed:
        """A problem found while listing (e.g. a manifest row with an unknown modality)."""
        return cls(
            role=Role(role).value,
            record_id=record_id,
            source=source,
            source_uri=source_uri,
            modality=modality,
            reason=RejectReason(reason).value,
            detail=detail,
        )

    @property
    def rejected(self) -> bool:
        return self.reason is not None


def to_table(records: Iterable[Listed]) -> pa.Table:
    """Records -> an Arrow table with LISTING_SCHEMA (the input of the prepare pipeline)."""
    rows = [asdict(r) for r in records]
    if not rows:
        return LISTING_SCHEMA.empty_table()
    return pa.Table.from_pylist(rows, schema=LISTING_SCHEMA)
