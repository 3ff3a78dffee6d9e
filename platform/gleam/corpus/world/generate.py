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

import pyarrow.fs as pafs

from gleam import storage
from gleam.config import config_hash
from gleam.corpus.schema import Modality
from gleam.corpus.world.city import CityMap
from gleam.corpus.world.config import WorldConfig
from gleam.corpus.world.fanout import render_all
from gleam.corpus.world.layout import (
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    MARKER_FILE,
    POSE_COLUMNS,
    POSES_FILE,
    owned_names,
    owned_paths,
    relative_uri,
)
from gleam.corpus.world.sites import Site, sample_sites, world_side
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
    """What decides the bytes of the corpus: the config (less where it goes) and the renderer."""
    return f"{RENDERER_VERSION}-{config_hash(config, exclude={'output', 'overwrite'})}"


def manifest_rows(config: WorldConfig, sites: list[Site]) -> list[dict[str, str]]:
    """One row per query; a distractor tile is a row without a query. URIs are relative."""
    rows = []
    for site in sites:
        common = {
            "tile_uri": relative_uri(Modality.SATELLITE, site.location_id),
            "location_id": site.location_id,
            "lat": f"{site.lat:.8f}",
            "lon": f"{site.lon:.8f}",
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
    city = CityMap(config.seed, world_side(config))
    sites = sample_sites(config, city)
    poses = sorted(render_all(config, sites, root), key=lambda r: r["location_id"])
    manifest = _csv(MANIFEST_COLUMNS, manifest_rows(config, sites))
    storage.write_text(storage.join(root, MANIFEST_FILE), manifest)
    storage.write_text(storage.join(root, POSES_FILE), _csv(POSE_COLUMNS, poses))
    counts = {Modality.SATELLITE.value: len(sites)}
    counts.update({m.value: config.locations for m in config.modalities})
    meta = {
        "fingerprint": print_id,
        "renderer_version": RENDERER_VERSION,
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
        "counts": counts,
        "tiles": len(sites),
        "locations": config.locations,
        "distractors": config.distractors,
        "world_side_m": world_side(config),
        "metres_per_pixel": config.tile_metres / config.tile_size,
        "conventions": CONVENTIONS,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    storage.write_json(marker, meta)
    return _summary(root, meta, time.perf_counter() - start, reused=False)
