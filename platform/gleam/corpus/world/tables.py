"""The rows of `manifest.csv` and `poses.csv`, in one of two layouts.

First layout (a config with none of the located options: the first worlds, byte for byte): one manifest
row per query carrying its tile's centre, a distractor as a row without a query; one pose row per place.

Located layout (query offsets, a grid gallery or sets): the manifest lists every tile first, once, with
its centre and `gsd_m`, then one row per photo with the camera's own lat/lon and its `set_id`; poses.csv
has one row per photo: the camera, its offset from its positive tile's centre (`east_m`, `north_m`) and
from the place it shows (`place_east_m`, `place_north_m`), and `outlier_of` (the set it is the odd photo
out in; empty for the others). Offsets are metres east and north: camera = centre + offset.
"""

from __future__ import annotations

from typing import Any

from gleam.corpus.schema import Modality
from gleam.corpus.world.config import WorldConfig
from gleam.corpus.world.gallery import Tile
from gleam.corpus.world.layout import MANIFEST_COLUMNS, relative_uri
from gleam.corpus.world.shots import Shot
from gleam.corpus.world.sites import Site, to_latlon

LOCATED_MANIFEST_COLUMNS = [*MANIFEST_COLUMNS, "gsd_m", "set_id"]
LOCATED_POSE_COLUMNS = [
    "query_uri",
    "modality",
    "location_id",  # the positive tile (the manifest's location_id)
    "place_id",  # the place whose set lists the photo
    "set_id",
    "shown_place_id",  # the place the photo shows: place_id, except for an outlier
    "outlier_of",  # the set_id of the set it is the odd photo out in; empty otherwise
    "x_m",
    "y_m",
    "east_m",
    "north_m",
    "place_east_m",
    "place_north_m",
    "drone_azimuth_deg",
    "drone_pitch_deg",
    "ground_heading_deg",
]


def _degrees(value: float) -> str:
    return f"{value:.8f}"


def _metres(value: float) -> float:
    return round(value, 4)


def first_manifest(config: WorldConfig, sites: list[Site]) -> list[dict[str, str]]:
    """One row per query at its tile's centre; a distractor tile is a row without a query."""
    rows = []
    for site in sites:
        common = {
            "tile_uri": relative_uri(Modality.SATELLITE, site.location_id),
            "location_id": site.location_id,
            "lat": _degrees(site.lat),
            "lon": _degrees(site.lon),
            "split": "",
        }
        if not site.queries:
            rows.append({"query_uri": "", "modality": "", **common})
            continue
        for modality in config.modalities:
            rows.append(
                {"query_uri": relative_uri(modality, site.location_id), "modality": modality.value, **common}
            )
    return rows


def first_poses(
    sites: list[Site], shots: list[Shot], poses: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per place: where it is and the random pose of each of its views."""
    rows = {s.index: {"location_id": s.location_id, "x_m": _metres(s.x), "y_m": _metres(s.y)} for s in sites}
    for shot in shots:
        pose = poses[relative_uri(shot.modality, shot.name)]
        rows[shot.place.index].update({k: _metres(v) for k, v in pose.items()})
    return [rows[s.index] for s in sites]


def located_manifest(
    config: WorldConfig, tiles: list[Tile], shots: list[Shot], positives: list[Tile]
) -> list[dict[str, str]]:
    """Every tile once (centre, gsd_m), then one row per photo at its camera."""
    gsd = format(config.tile_metres / config.tile_size, ".10g")
    rows = [
        {
            "query_uri": "",
            "modality": "",
            "tile_uri": relative_uri(Modality.SATELLITE, t.tile_id),
            "location_id": t.tile_id,
            "lat": _degrees(t.lat),
            "lon": _degrees(t.lon),
            "split": "",
            "gsd_m": gsd,
            "set_id": "",
        }
        for t in tiles
    ]
    for shot, tile in zip(shots, positives, strict=True):
        lat, lon = to_latlon(shot.x, shot.y, config.origin_lat, config.origin_lon)
        rows.append(
            {
                "query_uri": relative_uri(shot.modality, shot.name),
                "modality": shot.modality.value,
                "tile_uri": relative_uri(Modality.SATELLITE, tile.tile_id),
                "location_id": tile.tile_id,
                "lat": _degrees(lat),
                "lon": _degrees(lon),
                "split": "",
                "gsd_m": "",
                "set_id": shot.set_id or "",
            }
        )
    return rows


def located_poses(
    shots: list[Shot], positives: list[Tile], poses: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per photo: its camera, offsets from its tile and from the place it shows, its pose."""
    rows = []
    for shot, tile in zip(shots, positives, strict=True):
        uri = relative_uri(shot.modality, shot.name)
        rows.append(
            {
                "query_uri": uri,
                "modality": shot.modality.value,
                "location_id": tile.tile_id,
                "place_id": shot.place.location_id,
                "set_id": shot.set_id or "",
                "shown_place_id": shot.shown.location_id,
                "outlier_of": (shot.set_id or shot.place.location_id) if shot.outlier else "",
                "x_m": _metres(shot.x),
                "y_m": _metres(shot.y),
                "east_m": _metres(shot.x - tile.x),
                "north_m": _metres(shot.y - tile.y),
                "place_east_m": _metres(shot.x - shot.shown.x),
                "place_north_m": _metres(shot.y - shot.shown.y),
                **{k: _metres(v) for k, v in poses[uri].items()},
            }
        )
    return rows
