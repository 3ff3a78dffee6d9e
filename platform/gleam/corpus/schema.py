"""Arrow schemas and enums of the prepared corpus: the single source of truth (architecture.md, "Layers").

Every stage reads and writes through these definitions, so a column added here is added everywhere.
A column added later is optional (nullable) and readers check for it, so a corpus prepared before it
still loads: `semi_positives` (VIGOR), `gsd_m` (tiles: metres per pixel) and `set_id` (queries: photos
of one place taken together) are such columns. `LATER_COLUMNS` lists them per output, and
`PreparedCorpus.read` gives nulls for them when a corpus predates them.
"""

from __future__ import annotations

from enum import Enum

import pyarrow as pa

SCHEMA_VERSION = 1


class Modality(str, Enum):
    """A view of a place. Satellite tiles are the reference gallery; the others are query views."""

    SATELLITE = "satellite"
    DRONE = "drone"
    STREETMAP = "streetmap"
    PANORAMA = "panorama"
    GROUND = "ground"

    @classmethod
    def query_modalities(cls) -> tuple[Modality, ...]:
        return tuple(m for m in cls if m is not cls.SATELLITE)

    @classmethod
    def parse(cls, value: str) -> Modality:
        """Parse a modality name, tolerating case and surrounding blanks; raise ValueError otherwise."""
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown modality {value!r} (expected one of: {allowed})") from None

    @classmethod
    def checked_queries(cls, value: list[Modality] | None) -> list[Modality] | None:
        """A config's `modalities` (query views): None for all, else at least one, satellite refused (it
        is the reference gallery), repeats dropped in order. The validator every job config shares."""
        if value is None:
            return None
        if cls.SATELLITE in value:
            raise ValueError("satellite tiles are the reference gallery; list query modalities only")
        if not value:
            raise ValueError("at least one query modality (or null for all)")
        return list(dict.fromkeys(value))


class Split(str, Enum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class Role(str, Enum):
    """What an input was listed as."""

    TILE = "tile"
    QUERY = "query"


class RejectReason(str, Enum):
    """Stable reason codes for rejected inputs; tooling and dashboards key on these strings."""

    READ_ERROR = "read_error"  # refused for good (denied, corrupt blocks); a failing store fails the job
    EMPTY_FILE = "empty_file"  # zero bytes
    NOT_AN_IMAGE = "not_an_image"  # no image format recognised
    DECODE_ERROR = "decode_error"  # recognised but corrupt or truncated
    TOO_SMALL = "too_small"  # a side below the configured minimum
    TOO_LARGE = "too_large"  # a side above the configured maximum
    PIXEL_LIMIT = "pixel_limit"  # more pixels than allowed (decompression-bomb guard)
    UNKNOWN_MODALITY = "unknown_modality"
    MISSING_PAIR = "missing_pair"  # a query whose satellite tile is absent or rejected
    MISSING_FILE = "missing_file"  # a manifest row naming a file that does not exist
    BAD_RECORD = "bad_record"  # a manifest row that cannot be parsed
    DUPLICATE = "duplicate"  # same bytes (sha256) as an image already kept
    NO_DATA = "no_data"  # a raster window that is all nodata (or all zero): nothing to see


# Tiles that also show a query's place without being its positive (VIGOR's three semi-positive satellites
# per panorama): a top-1 among them is a hit for VIGOR's hit rate. Null where the source has no such notion.
SEMI_POSITIVES = "semi_positives"
SEMI_POSITIVES_FIELD = pa.field(SEMI_POSITIVES, pa.list_(pa.string()))

# Metres per pixel of a north-up image, at the size it is stored (a tile's prepared size; in a listing,
# the source file's own pixels). Null where the source does not say (docs/prepare.md, "Tile geometry").
GSD_M = "gsd_m"
GSD_M_FIELD = pa.field(GSD_M, pa.float64())
# Ground pixels whose two sides differ by more than this share are not square: one gsd_m cannot say both,
# so it is null (a resize that changes the aspect, equal-degree raster pixels away from the equator).
GSD_SQUARE_TOLERANCE = 0.01
# Queries of one modality with the same set_id are photos of one place taken together (a set, fused into
# one query); null is a single photo.
SET_ID = "set_id"
SET_ID_FIELD = pa.field(SET_ID, pa.string())

TILES_SCHEMA = pa.schema(
    [
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        pa.field("location_id", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        GSD_M_FIELD,
    ]
)

QUERIES_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("location_id", pa.string(), nullable=False),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        SEMI_POSITIVES_FIELD,
        SET_ID_FIELD,
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),  # what the input was listed as: tile or query
        pa.field("record_id", pa.string(), nullable=False),
    ]
)

# What an adapter lists: one row per input, before any byte is read. `role` is tile or query; a non-null
# `reason` means the row was already rejected while listing (e.g. an unknown modality in a manifest).
LISTING_SCHEMA = pa.schema(
    [
        pa.field("role", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("modality", pa.string()),
        pa.field("tile_id", pa.string()),
        pa.field("location_id", pa.string()),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        pa.field("split", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        SEMI_POSITIVES_FIELD,
        GSD_M_FIELD,  # of the source image as listed, before prepare resizes it
        SET_ID_FIELD,
    ]
)

OUTPUT_SCHEMAS = {"tiles": TILES_SCHEMA, "queries": QUERIES_SCHEMA, "rejects": REJECTS_SCHEMA}

# Columns added after the first corpora were prepared, per output: a corpus may lack them, and reading
# one from such a corpus gives nulls (`PreparedCorpus.read`).
LATER_COLUMNS: dict[str, dict[str, pa.Field]] = {
    "tiles": {GSD_M: GSD_M_FIELD},
    "queries": {SEMI_POSITIVES: SEMI_POSITIVES_FIELD, SET_ID: SET_ID_FIELD},
    "rejects": {},
}
