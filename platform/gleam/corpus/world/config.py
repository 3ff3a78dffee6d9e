"""The config of `gleam world`: what decides the bytes of a synthetic world, and where it goes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from gleam.config import StrictModel
from gleam.corpus.schema import Modality

# Options added after the first worlds were made, with their defaults: a config leaving them at these
# values is the same world as before (same fingerprint, same bytes), so the fingerprint omits them then.
LOCATED_DEFAULTS: dict[str, Any] = {
    "query_offset_m": 0.0,
    "gallery": "sites",
    "grid_stride_m": None,
    "set_size": 1,
    "set_outliers": 0.0,
}
MAX_SET_SIZE = 16


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
    query_offset_m: float = Field(
        0.0,
        ge=0,
        description="each query's camera stands at a random offset up to this distance from its place"
        " (uniform over the open ground of that disc; at most tile_metres / 2)",
    )
    gallery: Literal["sites", "grid"] = Field(
        "sites",
        description="sites: one tile centred on each place; grid: north-up tiles on a regular grid over"
        " the places (a raster cut with overlap), a query's tile being the one nearest its camera",
    )
    grid_stride_m: float | None = Field(
        None, gt=0, description="distance between grid tile centres (default tile_metres / 2)"
    )
    set_size: int = Field(1, ge=1, le=MAX_SET_SIZE, description="photos per place and query modality")
    set_outliers: float = Field(
        0.0, ge=0, le=1, description="share of sets whose one photo shows another place (the odd one out)"
    )
    overwrite: bool = False

    @field_validator("output")
    @classmethod
    def _somewhere(cls, value: str) -> str:
        # a blank output would resolve to the working directory and fill it with the world's folders
        if not value.strip():
            raise ValueError("give a store URI or a folder to write the world to")
        return value

    @field_validator("modalities")
    @classmethod
    def _queries_only(cls, value: list[Modality]) -> list[Modality]:
        if Modality.SATELLITE in value:
            raise ValueError("satellite tiles are always rendered; list query modalities only")
        if not value:
            raise ValueError("at least one query modality")
        return list(dict.fromkeys(value))

    # Field validators (not one model validator) so that an error names the field to fix; each reads the
    # fields declared before it from `info.data` (absent when that field failed on its own).
    @field_validator("query_offset_m")
    @classmethod
    def _inside_the_tile(cls, value: float, info: ValidationInfo) -> float:
        half = info.data.get("tile_metres", 0) / 2
        if half and value > half:
            raise ValueError(
                f"query_offset_m {value:g} is more than tile_metres / 2 = {half:g}: a query would stand"
                " outside its place's tile"
            )
        return value

    @field_validator("gallery")
    @classmethod
    def _grid_has_no_distractors(cls, value: str, info: ValidationInfo) -> str:
        if value == "grid" and info.data.get("distractors"):
            raise ValueError(
                "distractors must be 0 with gallery: grid (the grid already covers the whole area;"
                " every grid tile without a query is a distractor)"
            )
        return value

    @field_validator("grid_stride_m")
    @classmethod
    def _stride_fits(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None:
            return value
        if info.data.get("gallery", "grid") != "grid":
            raise ValueError("grid_stride_m applies to gallery: grid only")
        tile = info.data.get("tile_metres")
        if tile and not tile / 8 <= value <= tile:
            raise ValueError(
                f"grid_stride_m {value:g} must be between tile_metres / 8 = {tile / 8:g} and tile_metres"
                f" = {tile:g} (tiles overlap or touch; no gaps)"
            )
        return value

    @field_validator("set_outliers")
    @classmethod
    def _outliers_need_sets(cls, value: float, info: ValidationInfo) -> float:
        if value > 0 and info.data.get("set_size", 2) < 2:
            raise ValueError("set_outliers needs set_size >= 2: an outlier is one odd photo in a set")
        return value

    @property
    def stride_m(self) -> float:
        """Distance between grid tile centres (gallery: grid)."""
        return self.grid_stride_m if self.grid_stride_m is not None else self.tile_metres / 2

    @property
    def located(self) -> bool:
        """True when any option beyond the first worlds' is set: the manifest and poses then describe
        each photo (tile rows first, queries at their cameras, gsd_m, set_id); else the first layout."""
        return any(getattr(self, name) != default for name, default in LOCATED_DEFAULTS.items())

    def default_located_fields(self) -> set[str]:
        """The later options left at their defaults (omitted from the fingerprint)."""
        return {name for name, default in LOCATED_DEFAULTS.items() if getattr(self, name) == default}
