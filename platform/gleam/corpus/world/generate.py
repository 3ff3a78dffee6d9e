"""Write a world corpus: images, manifest and poses, then `world.json` last as its completion marker.

A complete world made from the same config is reused as is; one made from another config is refused
unless `overwrite`; an incomplete one (no marker) is rewritten from scratch. An output that holds
anything the world did not write is refused: a rewrite deletes the world's own folders there.
"""

from __future__ import annotations

import csv
import io
import posixpath
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from gleam import storage
from gleam.config import config_hash
from gleam.corpus.schema import Modality
from gleam.corpus.world.city import CityMap
from gleam.corpus.world.config import WorldConfig
from gleam.corpus.world.fanout import Unit, render_all
from gleam.corpus.world.gallery import Tile, build_gallery
from gleam.corpus.world.layout import (
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    MARKER_FILE,
    POSE_COLUMNS,
    POSES_FILE,
    owned_names,
    owned_paths,
)
from gleam.corpus.world.shots import Shot, plan_shots
from gleam.corpus.world.sites import Site, sample_sites, world_side
from gleam.corpus.world.tables import (
    LOCATED_MANIFEST_COLUMNS,
    LOCATED_POSE_COLUMNS,
    first_manifest,
    first_poses,
    located_manifest,
    located_poses,
)
from gleam.errors import RefusedError, StorageError

RENDERER_VERSION = "1"
CONVENTIONS = {
    "coordinates": "x east, y north, metres from the world centre = (origin_lat, origin_lon)",
    "satellite": "north-up, centred on the location, tile_metres wide",
    "streetmap": "north-up, centred on the location, tile_metres wide +-15 % zoom",
    "panorama": "equirectangular; column c looks at azimuth (c + 0.5) / width * 360 - 180 degrees clockwise"
    " from north: north at the centre, east at 3/4 width, south at both edges; row 0 = zenith",
    "ground": f"90-degree pinhole, level, random heading ({POSES_FILE}), same camera as the panorama",
    "drone": f"pinhole 50-degree FOV, 55-65 degrees below the horizon, random azimuth ({POSES_FILE})",
}

LOCATED_CONVENTIONS = {
    "manifest": "tile rows first (tile centre lat/lon, gsd_m = tile_metres / tile_size), then one row per"
    " photo at its camera's own lat/lon with its set_id",
    "offsets": f"{POSES_FILE} east_m/north_m: camera minus its positive tile's centre; place_east_m/"
    "place_north_m: camera minus the centre of the place it shows (metres, east and north positive)",
    "drone": "its camera position is the ground point its view is centred on",
    "grid": "tiles centred on whole multiples of grid_stride_m from the world centre, ids row by row from"
    " the north-west; a photo's tile is the one whose centre is nearest its camera",
    "outliers": f"{POSES_FILE} outlier_of names the set a photo is the odd one out in; shown_place_id the"
    " place it shows; it is listed with its set's tile",
}


class WorldExistsError(RefusedError, RuntimeError):
    """The output already holds a complete world made from another config."""


class OutputOccupiedError(RefusedError):
    """The output is a file, or a folder holding things that are not a world's."""


@dataclass(frozen=True)
class WorldSummary:
    uri: str
    counts: dict[str, int]  # images per modality, satellite tiles included
    tiles: int
    locations: int
    distractors: int
    seconds: float
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fingerprint(config: WorldConfig) -> str:
    """What decides the bytes of the corpus: the config (less where it goes) and the renderer.

    Options added later count only when set, so the first worlds keep their fingerprints."""
    return f"{RENDERER_VERSION}-{config_hash(config, exclude=_not_config(config))}"


def _not_config(config: WorldConfig) -> set[str]:
    return {"output", "overwrite", *config.default_located_fields()}


@dataclass(frozen=True)
class Plan:
    """Everything a world holds before it is rendered: places, photos, tiles and each photo's tile."""

    config: WorldConfig
    sites: list[Site]
    shots: list[Shot]
    tiles: list[Tile]
    positives: list[Tile]

    def clearings(self) -> np.ndarray:
        """Where cameras stand (kept clear of tree crowns): the places, then other cameras once each."""
        points = {(s.x, s.y): None for s in self.sites}
        points.update({(shot.x, shot.y): None for shot in self.shots})
        return np.array(list(points), dtype=np.float64)

    def units(self) -> list[Unit]:
        """Render units: a place's tile with its photos (they share the place's crop), grid tiles alone."""
        by_place: dict[int, Unit] = {s.index: Unit() for s in self.sites}
        for shot in self.shots:
            by_place[shot.place.index].shots.append(shot)
        if self.config.gallery == "sites":
            for site, tile in zip(self.sites, self.tiles, strict=True):
                by_place[site.index].tiles.append(tile)
            return list(by_place.values())
        return [Unit(tiles=[t]) for t in self.tiles] + [u for u in by_place.values() if u.shots]


def plan_world(config: WorldConfig) -> Plan:
    """Places, photos and tiles of a world: cheap (labels at a few points), no rendering."""
    city = CityMap(config.seed, world_side(config))
    sites = sample_sites(config, city)
    shots = plan_shots(config, city, sites)
    tiles, positives = build_gallery(config, sites, shots)
    return Plan(config, sites, shots, tiles, positives)


def manifest_rows(plan: Plan) -> list[dict[str, str]]:
    """The manifest: the first layout for a config without located options, else the located one."""
    if not plan.config.located:
        return first_manifest(plan.config, plan.sites)
    return located_manifest(plan.config, plan.tiles, plan.shots, plan.positives)


def pose_rows(plan: Plan, poses: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    if not plan.config.located:
        return first_poses(plan.sites, plan.shots, poses)
    return located_poses(plan.shots, plan.positives, poses)


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _summary(root: str, meta: dict[str, Any], seconds: float, reused: bool) -> WorldSummary:
    return WorldSummary(
        uri=root,
        counts=dict(meta["counts"]),
        tiles=int(meta["tiles"]),
        locations=int(meta["locations"]),
        distractors=int(meta["distractors"]),
        seconds=seconds,
        reused=reused,
    )


def check_output(root: str) -> None:
    """Refuse an output the world would damage: a file, or a folder holding what the world did not write."""
    if storage.is_file(root):
        raise OutputOccupiedError(f"output {root} is a file; give a folder (new or empty) for the world")
    fs, path = storage.resolve(root)
    try:  # the top level only: an output mistaken for a home folder must not be walked
        entries = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    except OSError as exc:
        raise StorageError(f"cannot list {root}: {exc}") from exc
    foreign = sorted({posixpath.basename(e.path.rstrip("/")) for e in entries} - set(owned_names()))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputOccupiedError(
            f"output {root} holds files that are not part of a world ({shown}); choose a new or empty"
            " folder, since writing a world there deletes its own folders and files"
        )


def _located_meta(plan: Plan) -> dict[str, Any]:
    """What world.json adds for the located options: the photos and the gallery as rendered."""
    config = plan.config
    gallery: dict[str, Any] = {"kind": config.gallery, "tiles": len(plan.tiles)}
    if config.gallery == "grid":
        gallery["stride_m"] = config.stride_m
        gallery["north_west_centre_m"] = {"x": plan.tiles[0].x, "y": plan.tiles[0].y}
    return {
        "queries": len(plan.shots),
        "sets": len(plan.shots) // config.set_size if config.set_size > 1 else 0,
        "outliers": sum(shot.outlier for shot in plan.shots),
        "gallery": gallery,
        "located_conventions": LOCATED_CONVENTIONS,
    }


def generate_world(config: WorldConfig) -> WorldSummary:
    """Render the world into `config.output`; world.json is written last and marks it complete."""
    start = time.perf_counter()
    root = storage.normalize(config.output)
    marker = storage.join(root, MARKER_FILE)
    print_id = fingerprint(config)
    check_output(root)
    if storage.exists(marker):
        meta = storage.read_json(marker)
        if meta.get("fingerprint") == print_id:
            return _summary(root, meta, time.perf_counter() - start, reused=True)
        if not config.overwrite:
            raise WorldExistsError(
                f"{root} already holds a world made from another config (fingerprint"
                f" {meta.get('fingerprint')}, this config {print_id}); choose another output or set"
                " overwrite=true"
            )
    storage.delete(marker)  # from here on the output is incomplete until the marker is back
    for path in owned_paths(root):
        storage.delete(path)
    plan = plan_world(config)
    poses = {r.pop("query_uri"): r for r in render_all(config, plan.units(), plan.clearings(), root)}
    located = config.located
    manifest = _csv(LOCATED_MANIFEST_COLUMNS if located else MANIFEST_COLUMNS, manifest_rows(plan))
    storage.write_text(storage.join(root, MANIFEST_FILE), manifest)
    pose_columns = LOCATED_POSE_COLUMNS if located else POSE_COLUMNS
    storage.write_text(storage.join(root, POSES_FILE), _csv(pose_columns, pose_rows(plan, poses)))
    counts = {Modality.SATELLITE.value: len(plan.tiles)}
    counts.update({m.value: config.locations * config.set_size for m in config.modalities})
    meta = {
        "fingerprint": print_id,
        "renderer_version": RENDERER_VERSION,
        "seed": config.seed,
        "config": config.model_dump(mode="json", exclude={*config.default_located_fields()}),
        "counts": counts,
        "tiles": len(plan.tiles),
        "locations": config.locations,
        "distractors": config.distractors,
        "world_side_m": world_side(config),
        "metres_per_pixel": config.tile_metres / config.tile_size,
        "conventions": CONVENTIONS,
        **(_located_meta(plan) if located else {}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    storage.write_json(marker, meta)
    return _summary(root, meta, time.perf_counter() - start, reused=False)
