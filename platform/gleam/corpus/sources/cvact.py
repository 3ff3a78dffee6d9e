"""CVACT in its native layout: street-level panoramas paired with north-up satellite tiles by id.

    streetview/<id>_grdView.jpg             -> panorama query
    satview_polish/<id>_satView_polish.jpg  -> satellite tile (the location)

A panorama without its satellite is rejected as `missing_pair`; a satellite without a panorama is a
distractor tile and kept. A file in those folders that does not follow the naming pattern (or sits in a
sub-folder) is rejected as `bad_record`; a second file with the same id and role (e.g. `.jpg` and `.png`)
as `duplicate`. Names starting with "." (`.DS_Store`) are skipped.

Splits come from the standard `ACT_data.mat` (`trainSet.trainInd` -> train, `valSet.valInd` -> test,
1-based indices into `panoIds`) when it lies at the root or in its parent folder (the real dataset keeps it
next to `ANU_data_small/`); this needs scipy (installed with the platform's dependencies). Without the file,
or for ids it does not name, the split is left to prepare's location hash. A present but unreadable file is
an error, so a broken download never silently changes the benchmark split.

The same file's `utm` array (one row per `panoIds` entry: easting and northing in metres, WGS84 UTM zone
55 south, where Canberra lies) becomes each place's lat/lon (`gleam.corpus.utm`, PROJ's inverse), set on
the tile and its panorama alike, so GPS batching and maps work on CVACT. The column order is read from
the values (an easting is below 1,000 km, a Canberra northing above 6,000 km), so a file that stores
northing first converts the same. Without `utm`, or for a row that is not a UTM coordinate (NaN, 0),
lat/lon stay empty; a `utm` that does not have one row of two numbers per panorama id is an error.

Tile geometry: `gsd_m` is left null (unknown). The CVACT paper (Liu & Li, CVPR 2019) states 0.12 m per
pixel at Google Maps zoom level 20 for its 1200 x 1200 satellite images, which would make a tile 144 m
across; but a tile measured against Google Maps covers about 68 m (github.com/Liumouliu/OriCNN issue #5),
and the authors' answer there mentions an x2 upsampling step while calling 0.1219 m the ground truth. The
metres per pixel of the released files is therefore not settled, and a wrong figure would move every
refined position by a factor of two; a corpus that knows it can set it through a manifest's `gsd_m`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from gleam import storage
from gleam.corpus.schema import Modality, RejectReason, Role, Split
from gleam.corpus.sources.base import Listed, SourceLayoutError, make_id, not_a_root
from gleam.corpus.sources.registry import SourceBase, register
from gleam.corpus.utm import MAX_EASTING, utm_to_latlon

GROUND_DIR = "streetview"
SATELLITE_DIR = "satview_polish"
SPLITS_FILE = "ACT_data.mat"
_GROUND_NAME = re.compile(r"^(?P<id>.+)_grdView\.(?i:jpe?g|png)$")
_SATELLITE_NAME = re.compile(r"^(?P<id>.+)_satView_polish\.(?i:jpe?g|png)$")
# (struct, field, split): valSet is the standard CVACT_val benchmark, listed as our test split.
_MAT_SPLITS = (("trainSet", "trainInd", Split.TRAIN), ("valSet", "valInd", Split.TEST))
LAYOUT = f"{GROUND_DIR}/<id>_grdView.jpg and {SATELLITE_DIR}/<id>_satView_polish.jpg below it"
UTM_ZONE, UTM_SOUTH = 55, True  # Canberra: WGS84 / UTM zone 55S (EPSG:32755)


class CVACTSource(SourceBase):
    kind: Literal["cvact"]
    default_name: ClassVar[str] = "cvact"


@register(CVACTSource)
def list_records(source: CVACTSource) -> Iterator[Listed]:
    """Tiles sorted by id, then panoramas sorted by id, then naming rejects."""
    root = storage.normalize(source.uri)
    _check_root(root)
    name = source.source_name
    satellites, sat_rejects = _by_id(root, SATELLITE_DIR, _SATELLITE_NAME, Role.TILE, name)
    panoramas, pano_rejects = _by_id(root, GROUND_DIR, _GROUND_NAME, Role.QUERY, name)
    act = read_act_data(root)
    for pano_id in sorted(satellites):
        lat, lon = act.places.get(pano_id, (None, None))
        yield Listed.tile(
            tile_id=make_id(name, pano_id),
            source=name,
            source_uri=satellites[pano_id],
            location_id=make_id(name, pano_id),
            lat=lat,
            lon=lon,
            split=act.splits.get(pano_id),
        )
    for pano_id in sorted(panoramas):
        yield _query(pano_id, panoramas[pano_id], pano_id in satellites, act, name)
    yield from sat_rejects
    yield from pano_rejects


def _check_root(root: str) -> None:
    if not {GROUND_DIR, SATELLITE_DIR} & set(storage.list_dirs(root)):
        raise not_a_root(root, "CVACT", f"neither {GROUND_DIR}/ nor {SATELLITE_DIR}/ is in it", LAYOUT)


def _query(pano_id: str, uri: str, paired: bool, act: ActData, name: str) -> Listed:
    query_id = make_id(name, "pano", pano_id)
    if not paired:
        return Listed.reject(
            role=Role.QUERY,
            record_id=query_id,
            source=name,
            source_uri=uri,
            reason=RejectReason.MISSING_PAIR,
            detail=f"no {SATELLITE_DIR}/{pano_id}_satView_polish.jpg for this panorama",
            modality=Modality.PANORAMA.value,
        )
    lat, lon = act.places.get(pano_id, (None, None))
    return Listed.query(
        query_id=query_id,
        modality=Modality.PANORAMA,
        tile_id=make_id(name, pano_id),
        source=name,
        source_uri=uri,
        location_id=make_id(name, pano_id),
        lat=lat,
        lon=lon,
        split=act.splits.get(pano_id),
    )


def _by_id(
    root: str, folder: str, pattern: re.Pattern[str], role: Role, name: str
) -> tuple[dict[str, str], list[Listed]]:
    """id -> URI for the files of one folder; misnamed, nested and repeated files become rejects."""
    base = storage.join(root, folder)
    modality = (Modality.SATELLITE if role is Role.TILE else Modality.PANORAMA).value
    found: dict[str, str] = {}
    rejects: list[Listed] = []

    def reject(uri: str, rel: str, reason: RejectReason, detail: str) -> None:
        rejects.append(
            Listed.reject(
                role=role,
                record_id=make_id(name, folder, rel),
                source=name,
                source_uri=uri,
                reason=reason,
                detail=detail,
                modality=modality,
            )
        )

    for entry in storage.list_files(base):
        rel = entry.uri[len(base) :].lstrip("/")  # by prefix: storage.relative_to resolves symlinks
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # hidden files (.DS_Store) are not data
        match = pattern.match(rel)
        if match is None or "/" in rel:
            reject(entry.uri, rel, RejectReason.BAD_RECORD, f"name does not match {pattern.pattern}: {rel}")
        elif match["id"] in found:
            reject(
                entry.uri, rel, RejectReason.DUPLICATE, f"id {match['id']} is already {found[match['id']]}"
            )
        else:
            found[match["id"]] = entry.uri
    return found, rejects


@dataclass(frozen=True)
class ActData:
    """What ACT_data.mat says about each pano id: its split and its (lat, lon)."""

    splits: dict[str, str] = field(default_factory=dict)
    places: dict[str, tuple[float, float]] = field(default_factory=dict)


def read_act_data(root: str) -> ActData:
    """Splits ("train"/"test") and lat/lon by pano id from ACT_data.mat; empty without the file (or scipy)."""
    uri = _find_splits_file(root)
    if uri is None:
        return ActData()
    try:
        import numpy as np
        import scipy.io
    except ImportError:
        return ActData()
    try:
        data = scipy.io.loadmat(io.BytesIO(storage.read_bytes(uri)))
        ids = [_mat_string(value) for value in np.asarray(data["panoIds"]).ravel()]
        splits: dict[str, str] = {}
        for struct, field_name, split in _MAT_SPLITS:  # valSet last: test wins if a set overlaps
            indices = np.asarray(data[struct][field_name][0][0]).ravel().astype(int) - 1
            splits.update((ids[i], split.value) for i in indices)
        places = _places(ids, data["utm"]) if "utm" in data else {}
        return ActData(splits, places)
    except (
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        NotImplementedError,
        scipy.io.matlab.MatReadError,
    ) as exc:
        raise SourceLayoutError(
            f"cannot read CVACT splits from {uri} ({type(exc).__name__}: {exc}): it must be the standard "
            "ACT_data.mat with panoIds, trainSet.trainInd, valSet.valInd and (optionally) utm, one "
            "easting/northing row per panoIds entry; fix or remove it "
            "(without it splits fall back to the location hash)"
        ) from exc


def _places(ids: list[str], utm: Any) -> dict[str, tuple[float, float]]:
    """pano id -> (lat, lon) from the (N, 2) UTM array; rows that are not UTM coordinates are left out."""
    import numpy as np

    coords = np.asarray(utm, dtype=np.float64)
    if coords.ndim != 2 or coords.shape != (len(ids), 2):
        raise ValueError(f"utm has shape {coords.shape}, expected ({len(ids)}, 2) for {len(ids)} panoIds")
    eastings, northings = coords[:, 0], coords[:, 1]
    first = eastings[np.isfinite(eastings)]
    if first.size and np.median(first) > MAX_EASTING:  # stored northing first
        eastings, northings = northings, eastings
    converted = utm_to_latlon(eastings.tolist(), northings.tolist(), UTM_ZONE, UTM_SOUTH)
    return {pano_id: place for pano_id, place in zip(ids, converted, strict=True) if place is not None}


def _find_splits_file(root: str) -> str | None:
    candidates = [storage.join(root, SPLITS_FILE)]
    parent = storage.parent(root)
    if parent != root and parent.rstrip("/") not in ("s3:", ""):
        candidates.append(storage.join(parent, SPLITS_FILE))
    return next((uri for uri in candidates if storage.is_file(uri)), None)


def _mat_string(value: Any) -> str:
    """A MATLAB string as loadmat returns it: a str, or a (nested) array holding one (cell arrays)."""
    import numpy as np

    while isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else ""
    return str(value).strip()
