"""VIGOR in its native layout: city panoramas and satellite tiles, paired by the official label files.

    <City>/panorama/<panoid>,<lat>,<lon>,.jpg     -> panorama query (lat/lon from the name)
    <City>/satellite/satellite_<lat>_<lon>.png    -> satellite tile (lat/lon of its centre)
    splits/<City>/same_area_balanced_{train,test}.txt, splits/<City>/pano_label_balanced.txt
    splits__corrected/<City>/ (optional): the same files, named `<name>__corrected.txt` or `<name>.txt`

A label line has 13 whitespace-separated fields (as Sample4Geo and the VIGOR authors read them): the
panorama file name, then four times `<satellite file> <dlat> <dlon>`. The first satellite is the positive;
the other three are semi-positives (satellites that also cover the panorama's place, off centre): their
tile ids are the query's `semi_positives` (those present in the satellite folder), which VIGOR's hit rate
accepts as a top-1 (`gleam.retrieval.metrics`).

Label files: `labels: auto` (default) reads a city's corrected file (SliceMatch's `splits__corrected/`,
which fixes the dlat/dlon offsets of the original labels and is what recent papers evaluate on) where it
is present, under its `__corrected` name or the original one, and the original `splits/` file otherwise;
`corrected` and `original` read only those. Which files were read is logged per city, and a panorama left
unlabelled names the files it was looked up in. Pairs and splits are the same in both; only offsets differ.

Mode `same_area` lists every city (or `cities`) with the split of the train/test label file. Mode
`cross_area` lists the benchmark's cities from `pano_label_balanced.txt`, NewYork and Seattle as train,
Chicago and SanFrancisco as test (other cities are skipped unless named, which is an error).

Every file of the satellite folders is a tile. Its split in `same_area`: "test" if it is the positive of a
listed test panorama, else "train" if it is the positive of a listed train panorama, else "test" (a gallery
distractor). In `cross_area` a tile takes its city's split, so no tile of a training city enters the test
gallery. Rejects: a panorama in no label file of the mode -> `missing_pair`; a label line naming an absent
panorama -> `missing_file`, an absent positive satellite -> `missing_pair`; a malformed line -> `bad_record`;
a panorama labelled twice -> `duplicate`; a file in a sub-folder of panorama/ or satellite/ -> `bad_record`.
Names starting with "." (`.DS_Store`) are skipped. A root with neither `splits/` nor `splits__corrected/` is
an error; a city without the mode's label files lists its panoramas as `missing_pair`.

Tile geometry: a tile's `gsd_m` is its city's metres per pixel of the released 640 x 640 aerial images
(`GSD_M_BY_CITY`, sources in the comment there); a city folder outside the four of the benchmark gets
null. The values hold for the images as released: a copy resized before listing would need its own.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from gleam import storage
from gleam.corpus.schema import Modality, RejectReason, Role, Split
from gleam.corpus.sources.base import Listed, SourceLayoutError, make_id, not_a_root
from gleam.corpus.sources.registry import SourceBase, register

log = logging.getLogger(__name__)

PANORAMA_DIR = "panorama"
SATELLITE_DIR = "satellite"
SPLITS_DIR = "splits"
CORRECTED_DIR = "splits__corrected"
CORRECTED_SUFFIX = "__corrected"  # same_area_balanced_train.txt -> same_area_balanced_train__corrected.txt
SAME_AREA_FILES = (("same_area_balanced_train.txt", Split.TRAIN), ("same_area_balanced_test.txt", Split.TEST))
CROSS_AREA_FILE = "pano_label_balanced.txt"
CROSS_AREA_SPLITS = {
    "NewYork": Split.TRAIN,
    "Seattle": Split.TRAIN,
    "Chicago": Split.TEST,
    "SanFrancisco": Split.TEST,
}
LABEL_FIELDS = 13  # panorama + 4 x (satellite, dlat, dlon)
# Metres per pixel of VIGOR's 640 x 640 aerial images, per city. VIGOR itself states one rounded figure
# for all cities: Google Maps imagery at zoom level 20, 0.114 m (Zhu et al., CVPR 2021; its code release
# github.com/Jeff-Zilence/VIGOR, evaluate_from_npy.py: "0.114 is resolution in meter", 320 px = half an
# image = 320 * 0.114 m; the authors stand by the figure in the repository's issue #14);
# these per-city values are the ones CCVPE converts VIGOR's pixel errors to metres with (Xia et al.,
# "Convolutional Cross-View Pose Estimation", TPAMI 2023, github.com/tudelft-iv/CCVPE, train_VIGOR.py:
# `pixel_distance * <m/px> / 512 * 640`), and they agree with VIGOR's 0.114 to within 12 % (Seattle, the
# northernmost city, has the smallest pixels, as a Web Mercator capture at a fixed zoom gives).
GSD_M_BY_CITY = {
    "Chicago": 0.111262,
    "NewYork": 0.113248,
    "SanFrancisco": 0.118141,
    "Seattle": 0.100817,
}
LAYOUT = (
    f"<City>/{PANORAMA_DIR}/, <City>/{SATELLITE_DIR}/ and {SPLITS_DIR}/<City>/ (or {CORRECTED_DIR}/<City>/) "
    "with the label files "
    f"({', '.join(f for f, _ in SAME_AREA_FILES)} for same_area, {CROSS_AREA_FILE} for cross_area)"
)


class VIGORSource(SourceBase):
    kind: Literal["vigor"]
    mode: Literal["same_area", "cross_area"] = "same_area"
    cities: list[str] | None = Field(None, description="default: every city folder found")
    labels: Literal["auto", "corrected", "original"] = Field(
        "auto",
        description=(
            f"label files: {CORRECTED_DIR}/ where present (auto), only {CORRECTED_DIR}/ (corrected) "
            f"or only {SPLITS_DIR}/ (original)"
        ),
    )

    default_name: ClassVar[str] = "vigor"


@dataclass(frozen=True)
class _Label:
    """One parsed label line: the panorama, its positive and semi-positive satellites, its file's split."""

    pano: str
    positive: str
    semi: tuple[str, ...]
    split: Split
    where: str  # `<label uri>#L<line>`, for messages


@dataclass
class _City:
    """The files of one city folder, by file name, and the rejects found while listing them."""

    root: str
    name: str
    panoramas: dict[str, str]
    satellites: dict[str, str]
    rejects: list[Listed]


@register(VIGORSource)
def list_records(source: VIGORSource) -> Iterator[Listed]:
    """City by city (sorted): tiles sorted by name, queries sorted by panorama name, then rejects."""
    root = storage.normalize(source.uri)
    name = source.source_name
    for city_name in _select_cities(root, source):
        city = _list_city(root, city_name, name)
        files = _label_files(root, city_name, source.mode, source.labels)
        labels, label_rejects = _read_labels(files, city_name, name)
        yield from _list_city_records(city, labels, files, source.mode, name)
        yield from label_rejects
        yield from city.rejects


def _select_cities(root: str, source: VIGORSource) -> list[str]:
    """The cities to list; a root without city folders or without splits/ is unusable."""
    found = [
        d
        for d in storage.list_dirs(root)
        if not d.startswith(".")
        and d != SPLITS_DIR
        and {PANORAMA_DIR, SATELLITE_DIR} & set(storage.list_dirs(storage.join(root, d)))
    ]
    if not found:
        problem = f"no <City>/{PANORAMA_DIR}/ or <City>/{SATELLITE_DIR}/ folder in it"
        raise not_a_root(root, "VIGOR", problem, LAYOUT)
    if not {SPLITS_DIR, CORRECTED_DIR} & set(storage.list_dirs(root)):
        raise not_a_root(root, "VIGOR", f"no {SPLITS_DIR}/ or {CORRECTED_DIR}/ folder in it", LAYOUT)
    if source.cities is not None:
        missing = sorted(set(source.cities) - set(found))
        if missing:
            raise SourceLayoutError(
                f"VIGOR root {root} has no city folder {missing} named in cities; found {found} "
                "(fix the names in cities or leave it unset for every city)"
            )
        if source.mode == "cross_area":
            unknown = sorted(set(source.cities) - set(CROSS_AREA_SPLITS))
            if unknown:
                raise SourceLayoutError(
                    f"cross_area defines splits only for {sorted(CROSS_AREA_SPLITS)}, not {unknown}: "
                    "remove them from cities or use mode same_area"
                )
        return sorted(set(source.cities))
    if source.mode == "cross_area":
        return [c for c in found if c in CROSS_AREA_SPLITS]
    return found


def _list_city(root: str, city: str, name: str) -> _City:
    panoramas, pano_bad = _flat_files(root, city, PANORAMA_DIR, Role.QUERY, name)
    satellites, sat_bad = _flat_files(root, city, SATELLITE_DIR, Role.TILE, name)
    return _City(root, city, panoramas, satellites, sat_bad + pano_bad)


def _flat_files(
    root: str, city: str, folder: str, role: Role, name: str
) -> tuple[dict[str, str], list[Listed]]:
    """file name -> URI of one flat folder; files in sub-folders are rejects (VIGOR folders are flat)."""
    base = storage.join(root, city, folder)
    files: dict[str, str] = {}
    bad: list[Listed] = []
    for entry in storage.list_files(base):
        rel = entry.uri[len(base) :].lstrip("/")  # by prefix: storage.relative_to resolves symlinks
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # hidden files (.DS_Store) are not data
        if "/" not in rel:
            files[rel] = entry.uri
            continue
        bad.append(
            Listed.reject(
                role=role,
                record_id=make_id(name, city, folder, posixpath.splitext(rel)[0]),
                source=name,
                source_uri=entry.uri,
                reason=RejectReason.BAD_RECORD,
                detail=f"not directly in {city}/{folder}/: {rel}",
                modality=(Modality.SATELLITE if role is Role.TILE else Modality.PANORAMA).value,
            )
        )
    return files, bad


@dataclass(frozen=True)
class _LabelFile:
    uri: str  # the file read, or (absent) the one it was looked for under first
    split: Split
    present: bool


def _label_files(root: str, city: str, mode: str, labels: str = "auto") -> list[_LabelFile]:
    """The mode's label files of a city, each the corrected or the original file as `labels` asks."""
    wanted = list(SAME_AREA_FILES) if mode == "same_area" else [(CROSS_AREA_FILE, CROSS_AREA_SPLITS[city])]
    folders = {"auto": (CORRECTED_DIR, SPLITS_DIR), "corrected": (CORRECTED_DIR,), "original": (SPLITS_DIR,)}
    # one listing per folder rather than a request per candidate name (S3 roots)
    existing = {e.uri for d in folders[labels] for e in storage.list_files(storage.join(root, d, city))}
    files = []
    for file, split in wanted:
        stem, suffix = posixpath.splitext(file)
        names = {CORRECTED_DIR: (f"{stem}{CORRECTED_SUFFIX}{suffix}", file), SPLITS_DIR: (file,)}
        candidates = [storage.join(root, d, city, n) for d in folders[labels] for n in names[d]]
        found = next((uri for uri in candidates if uri in existing), None)
        files.append(_LabelFile(found or candidates[0], split, found is not None))
    return files


def _read_labels(files: list[_LabelFile], city: str, name: str) -> tuple[list[_Label], list[Listed]]:
    """Parsed lines of the city's label files (absent files add none); bad lines as rejects."""
    labels: list[_Label] = []
    rejects: list[Listed] = []
    read = [f.uri for f in files if f.present]
    log.info("VIGOR %s: labels from %s", city, ", ".join(read) if read else "no label file")
    for file in (f for f in files if f.present):
        uri, split = file.uri, file.split
        for number, line in enumerate(storage.read_text(uri).splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{uri}#L{number}"
            problem = _label_problem(fields)
            if problem is None:
                semi = (fields[4], fields[7], fields[10])
                labels.append(_Label(fields[0], fields[1], semi, split, where))
                continue
            rejects.append(
                Listed.reject(
                    role=Role.QUERY,
                    record_id=make_id(
                        name, city, posixpath.splitext(posixpath.basename(uri))[0], f"L{number}"
                    ),
                    source=name,
                    source_uri=where,
                    reason=RejectReason.BAD_RECORD,
                    detail=f"malformed label line ({problem}): {line.strip()[:200]}",
                    modality=Modality.PANORAMA.value,
                )
            )
    return labels, rejects


def _label_problem(fields: list[str]) -> str | None:
    if len(fields) != LABEL_FIELDS:
        return f"expected {LABEL_FIELDS} fields, panorama + 4 x (satellite, dlat, dlon), got {len(fields)}"
    for i in range(2, LABEL_FIELDS, 3):
        if _float(fields[i]) is None or _float(fields[i + 1]) is None:
            return f"offsets {fields[i]!r} {fields[i + 1]!r} are not numbers"
    return None


def _list_city_records(
    city: _City, labels: list[_Label], files: list[_LabelFile], mode: str, name: str
) -> Iterator[Listed]:
    """Tiles, then panoramas of the folder, then labelled-but-absent panoramas, then repeated labels."""
    queries: dict[str, Listed] = {}  # panorama file name -> its first label's query (or reject)
    repeated: list[Listed] = []
    positive_splits: dict[str, set[str]] = {}
    for label in labels:
        if label.pano in queries:
            repeated.append(
                _label_reject(city, label, RejectReason.DUPLICATE, "labelled more than once", name)
            )
            continue
        record = _query(city, label, name)
        queries[label.pano] = record
        if not record.rejected:
            positive_splits.setdefault(label.positive, set()).add(label.split.value)
    for file in sorted(city.satellites):
        yield _tile(city, file, _tile_split(positive_splits.get(file, set()), mode, city.name), name)
    for pano in sorted(city.panoramas):
        yield queries.get(pano) or _unlabelled(city, pano, files, mode, name)
    yield from (queries[pano] for pano in sorted(queries) if pano not in city.panoramas)
    yield from repeated


def _query(city: _City, label: _Label, name: str) -> Listed:
    """The query of one label line, or why it cannot be one."""
    if label.pano not in city.panoramas:
        return _label_reject(
            city, label, RejectReason.MISSING_FILE, "is absent from the panorama folder", name
        )
    if label.positive not in city.satellites:
        detail = f"has no positive: {city.name}/{SATELLITE_DIR}/{label.positive} is absent"
        return _label_reject(city, label, RejectReason.MISSING_PAIR, detail, name)
    _, lat, lon = _parse_panorama_name(label.pano)
    tile_id = _tile_id(city.name, label.positive, name)
    semi = [_tile_id(city.name, s, name) for s in label.semi if s in city.satellites and s != label.positive]
    return Listed.query(
        query_id=_query_id(city.name, label.pano, name),
        modality=Modality.PANORAMA,
        tile_id=tile_id,
        source=name,
        source_uri=city.panoramas[label.pano],
        location_id=tile_id,
        lat=lat,
        lon=lon,
        split=label.split.value,
        semi_positives=tuple(dict.fromkeys(semi)),
    )


def _label_reject(city: _City, label: _Label, reason: RejectReason, problem: str, name: str) -> Listed:
    uri = city.panoramas.get(label.pano) or storage.join(city.root, city.name, PANORAMA_DIR, label.pano)
    return Listed.reject(
        role=Role.QUERY,
        record_id=_query_id(city.name, label.pano, name),
        source=name,
        source_uri=uri,
        reason=reason,
        detail=f"panorama {label.pano} {problem} ({label.where})",
        modality=Modality.PANORAMA.value,
    )


def _unlabelled(city: _City, pano: str, files: list[_LabelFile], mode: str, name: str) -> Listed:
    names = ", ".join(f.uri[len(city.root) :].lstrip("/") for f in files)  # splits*/<City>/<file>
    return Listed.reject(
        role=Role.QUERY,
        record_id=_query_id(city.name, pano, name),
        source=name,
        source_uri=city.panoramas[pano],
        reason=RejectReason.MISSING_PAIR,
        detail=f"no positive: not in {names} (mode {mode})",
        modality=Modality.PANORAMA.value,
    )


def _tile(city: _City, file: str, split: str, name: str) -> Listed:
    lat, lon = _parse_satellite_name(file)
    return Listed.tile(
        tile_id=_tile_id(city.name, file, name),
        source=name,
        source_uri=city.satellites[file],
        lat=lat,
        lon=lon,
        split=split,
        gsd_m=GSD_M_BY_CITY.get(city.name),
    )


def _tile_split(positive_of: set[str], mode: str, city: str) -> str:
    if mode == "cross_area":
        return CROSS_AREA_SPLITS[city].value
    if Split.TEST.value in positive_of or not positive_of:
        return Split.TEST.value  # a test positive, or a gallery distractor
    return Split.TRAIN.value


def _tile_id(city: str, file: str, name: str) -> str:
    return make_id(name, city, posixpath.splitext(file)[0])


def _query_id(city: str, pano_file: str, name: str) -> str:
    return make_id(name, "pano", city, _parse_panorama_name(pano_file)[0])


def _parse_panorama_name(file: str) -> tuple[str, float | None, float | None]:
    """`<panoid>,<lat>,<lon>,.jpg` -> (panoid, lat, lon); lat/lon None when the name does not say."""
    parts = posixpath.splitext(file)[0].split(",")
    if len(parts) >= 3:
        return parts[0], _float(parts[1]), _float(parts[2])
    return parts[0], None, None


def _parse_satellite_name(file: str) -> tuple[float | None, float | None]:
    """`satellite_<lat>_<lon>.png` -> (lat, lon); None when the name does not say."""
    parts = posixpath.splitext(file)[0].removeprefix("satellite_").split("_")
    if len(parts) == 2:
        return _float(parts[0]), _float(parts[1])
    return None, None


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None
