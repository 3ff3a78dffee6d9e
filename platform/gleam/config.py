"""Job configs: one pydantic model per job, loaded from YAML and overridable from the command line.

A config is validated completely before any work starts, and a mistake is reported with the dotted path
of the field (`sources.0.uri: Field required`), because a typo found after an hour of Ray work is a bug
in the platform, not in the user. Unknown keys are errors for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gleam import storage
from gleam.corpus.schema import Modality
from gleam.errors import ConfigError

ConfigT = TypeVar("ConfigT", bound=BaseModel)
# a default holds no `$` or `}`: the innermost reference matches first, so defaults nest
# (`${GLEAM_STORE:-${GLEAM_HOME:-.gleam}/store}`, the store the code assumes when GLEAM_STORE is unset)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}$]*))?\}")
_MAX_NESTING = 8
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrackingConfig(StrictModel):
    enabled: bool = True
    experiment: str | None = Field(None, description="MLflow experiment; default `gleam-<job>`")
    run_name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


# --- sources of the prepare job: one model per dataset layout, told apart by `kind` ---------------------


class _SourceBase(StrictModel):
    uri: str = Field(description="store URI of the raw corpus root (or of the manifest file)")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="prefix of ids; default per kind")

    @property
    def source_name(self) -> str:
        return self.name or _DEFAULT_SOURCE_NAMES[self.kind]  # type: ignore[attr-defined]


class University1652Source(_SourceBase):
    kind: Literal["university1652"]
    include_google: bool = Field(True, description="list train/google web photos as ground queries")


class CVACTSource(_SourceBase):
    kind: Literal["cvact"]


class VIGORSource(_SourceBase):
    kind: Literal["vigor"]
    mode: Literal["same_area", "cross_area"] = "same_area"
    cities: list[str] | None = Field(None, description="default: every city folder found")


class ManifestSource(_SourceBase):
    kind: Literal["manifest"]


class WorldSource(_SourceBase):
    kind: Literal["world"]


class RasterSource(_SourceBase):
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


_DEFAULT_SOURCE_NAMES = {
    "university1652": "u1652",
    "cvact": "cvact",
    "vigor": "vigor",
    "manifest": "manifest",
    "world": "world",
    "raster": "raster",
}

SourceConfig = Annotated[
    University1652Source | CVACTSource | VIGORSource | ManifestSource | WorldSource | RasterSource,
    Field(discriminator="kind"),
]

DEFAULT_SIZES: dict[Modality, tuple[int, int]] = {
    Modality.SATELLITE: (384, 384),
    Modality.DRONE: (384, 384),
    Modality.STREETMAP: (384, 384),
    Modality.PANORAMA: (768, 384),
    Modality.GROUND: (384, 384),
}


class ImageLimits(StrictModel):
    min_side: int = Field(32, ge=1, description="smaller images are rejected as too_small")
    max_side: int = Field(30_000, ge=1, description="larger sides are rejected as too_large")
    max_pixels: int = Field(120_000_000, ge=1, description="decompression-bomb guard (pixel_limit)")
    max_bytes: int = Field(200 * 1024 * 1024, ge=1, description="larger files are rejected unread")
    jpeg_quality: int = Field(90, ge=30, le=100)


class SplitConfig(StrictModel):
    """Used only where the dataset defines no split of its own."""

    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    salt: str = "gleam"

    @field_validator("test_fraction")
    @classmethod
    def _fractions_leave_train(cls, value: float, info: Any) -> float:
        if value + info.data.get("val_fraction", 0.0) >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave something for train")
        return value


class PrepareConfig(StrictModel):
    """`jobs/prepare.py`: raw corpora -> `<output>/<name>/{tiles,queries,rejects}` + manifest.json."""

    name: str = Field(pattern=NAME_PATTERN)
    output: str = Field(description="store URI; the corpus is written to <output>/<name>/")
    sources: list[SourceConfig] = Field(min_length=1)
    sizes: dict[Modality, tuple[int, int]] = Field(
        default_factory=lambda: dict(DEFAULT_SIZES), description="(width, height) per modality"
    )
    limits: ImageLimits = Field(default_factory=ImageLimits)
    split: SplitConfig = Field(default_factory=SplitConfig)
    batch_size: int = Field(32, ge=1, description="images per Ray Data batch")
    concurrency: int | None = Field(None, ge=1, description="parallel decode tasks; default: all CPUs")
    rows_per_shard: int = Field(2000, ge=1, description="rows per output Parquet file (about)")
    overwrite: bool = Field(False, description="replace a complete corpus made from another config")
    contact_sheet_pairs: int = Field(6, ge=0, le=64)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("sizes")
    @classmethod
    def _all_sizes(cls, value: dict[Modality, tuple[int, int]]) -> dict[Modality, tuple[int, int]]:
        merged = {**DEFAULT_SIZES, **value}
        for modality, (w, h) in merged.items():
            if w < 8 or h < 8:
                raise ValueError(f"size of {modality.value} must be at least 8x8, got {w}x{h}")
        return merged

    @property
    def corpus_uri(self) -> str:
        return storage.join(self.output, self.name)


class WorldConfig(StrictModel):
    """`gleam world`: a deterministic synthetic world rendered in every modality, as a raw corpus."""

    output: str = Field(description="store URI of the raw corpus to write")
    seed: int = Field(0, ge=0, lt=2**63, description="the same seed and config give the same bytes")
    locations: int = Field(200, ge=2, description="places with a tile and one query per modality")
    distractors: int = Field(0, ge=0, description="extra satellite tiles without queries")
    modalities: list[Modality] = Field(default_factory=lambda: list(Modality.query_modalities()))
    tile_size: int = Field(256, ge=32, description="satellite tile side in pixels")
    query_size: int = Field(256, ge=32, description="height of query views (panorama width is 2x)")
    tile_metres: float = Field(128.0, ge=32, le=1024, description="ground side of a satellite tile (m)")
    jpeg_quality: int = Field(92, ge=50, le=100, description="quality of the JPEG views")
    origin_lat: float = Field(47.3769, ge=-85, le=85)
    origin_lon: float = Field(8.5417, ge=-180, le=180)
    overwrite: bool = False

    @field_validator("modalities")
    @classmethod
    def _queries_only(cls, value: list[Modality]) -> list[Modality]:
        if Modality.SATELLITE in value:
            raise ValueError("satellite tiles are always rendered; list query modalities only")
        if not value:
            raise ValueError("at least one query modality")
        return list(dict.fromkeys(value))


class EvaluateConfig(StrictModel):
    """`jobs/evaluate.py`: embed a prepared split, search it exactly (or through a published index)."""

    corpus: str = Field(description="store URI of a prepared corpus (the folder holding manifest.json)")
    encoder: str = Field(min_length=1, description="saved encoder folder, store URI or models:/gleam-c@alias")
    split: Literal["train", "val", "test"] = Field("test", description="tiles and queries of this split")
    modalities: list[Modality] | None = Field(None, description="query modalities; None: all in the split")
    batch_size: int = Field(64, ge=1, description="images per forward pass")
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1, description="ranks for R@k")
    grid_queries: int = Field(8, ge=0, le=64, description="queries per modality in the retrieval grid PNG")
    index: Annotated[str, Field(pattern=NAME_PATTERN)] | None = Field(
        None, description="search through this published index (its whole gallery), next to exact search"
    )
    index_version: str | None = Field(None, min_length=1, description="a version of `index`; default CURRENT")
    index_depth: int = Field(
        100, ge=1, description="results per query through the index (at least max(ks) and the R@1% rank)"
    )
    store: str = Field(default_factory=storage.default_store, description="store root holding indexes/")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("index_version")
    @classmethod
    def _version_of_an_index(cls, value: str | None, info: Any) -> str | None:
        if value is not None and info.data.get("index") is None:
            raise ValueError("a version needs an index name (index=NAME)")
        return value

    @field_validator("modalities")
    @classmethod
    def _query_modalities(cls, value: list[Modality] | None) -> list[Modality] | None:
        if value is None:
            return None
        if Modality.SATELLITE in value:
            raise ValueError("satellite tiles are the gallery; list query modalities only")
        if not value:
            raise ValueError("at least one query modality (or null for all)")
        return list(dict.fromkeys(value))

    @field_validator("ks")
    @classmethod
    def _positive_ranks(cls, value: list[int]) -> list[int]:
        if min(value) < 1:
            raise ValueError(f"ranks must be at least 1, got {value}")
        return sorted(set(value))


# --- loading -------------------------------------------------------------------------------------------


def expand_env(value: Any) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` (defaults may nest) in every string of a parsed YAML document."""
    if isinstance(value, str):
        for _ in range(_MAX_NESTING):
            expanded = _ENV_REF.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)
            if expanded == value:
                break
            value = expanded
        return value
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    return value


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.0.c=value` override in place; the value is parsed as YAML (`k=5` is an int)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key.path=value")
    dotted, raw = assignment.split("=", 1)
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {assignment!r} names no field")
    value = yaml.safe_load(raw) if raw.strip() else ""
    node: Any = data
    for i, key in enumerate(keys):
        is_last = i == len(keys) - 1
        fresh: Any = value if is_last else ([] if keys[i + 1].isdigit() else {})
        if isinstance(node, list):
            index = _list_index(node, key, dotted)
            if index == len(node):
                node.append(fresh)
            elif is_last:
                node[index] = value
            node = node[index]
        elif isinstance(node, dict):
            if is_last:
                node[key] = value
            elif not isinstance(node.get(key), (dict, list)):
                node[key] = fresh
            node = node[key]
        else:
            raise ConfigError(f"override {dotted!r}: {key!r} is inside a value that is not a mapping")


def _list_index(node: list[Any], key: str, dotted: str) -> int:
    """An index into a list; one past the end appends (so `sources.1.uri=...` adds a source)."""
    if not key.isdigit():
        raise ConfigError(f"override {dotted!r}: {key!r} must be a list index")
    index = int(key)
    if index > len(node):
        raise ConfigError(f"override {dotted!r}: index {index} is out of range (list has {len(node)})")
    return index


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        got = err.get("input")
        got_text = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        lines.append(f"  {path}: {err['msg']}{got_text}")
    return "\n".join(lines)


def parse_config(model: type[ConfigT], data: dict[str, Any], source: str = "<dict>") -> ConfigT:
    try:
        return model.model_validate(expand_env(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(model: type[ConfigT], path: str | Path | None, overrides: list[str] | None = None) -> ConfigT:
    """Read a YAML file (local or store URI), apply `--set` overrides, validate."""
    data: dict[str, Any] = {}
    source = "<overrides>"
    if path is not None:
        source = str(path)
        try:
            text = storage.read_text(str(path))
        except storage.StorageError as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping at the top level")
        data = loaded
    for assignment in overrides or []:
        apply_override(data, assignment)
    return parse_config(model, data, source)


def config_hash(config: BaseModel, exclude: set[str] | None = None) -> str:
    """A stable fingerprint of what a config asks for (used to detect 'same job, already done')."""
    payload = config.model_dump(mode="json", exclude=exclude or set())
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
