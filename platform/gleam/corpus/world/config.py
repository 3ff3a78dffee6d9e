"""The config of `gleam world`: what decides the bytes of a synthetic world, and where it goes."""

from __future__ import annotations

from pydantic import Field, field_validator

from gleam.config import StrictModel
from gleam.corpus.schema import Modality


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
