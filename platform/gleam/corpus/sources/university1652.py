"""University-1652 in its native layout: satellite tiles with drone, street and web-photo queries.

    train/{satellite,drone,street,google}/<loc>/<files>          split "train"
    test/{query,gallery}_{satellite,drone,street}/<loc>/<files>  split "test"

A location (building) has one satellite tile. The real test set repeats each satellite image in
`gallery_satellite` and `query_satellite`, so the tile is taken from the first of `test/gallery_satellite`,
`test/query_satellite`, `train/satellite` that has the location; its copies in the later folders are not
listed. Within that one location folder the first file (image names first, then sorted) is the tile and any
other file is rejected as `duplicate`. Gallery locations without any query are distractors and are kept.

Queries are every file of the location folders of `train/{drone,street,google}` (google only with
`include_google`) and `test/query_{drone,street}`; drone is `drone`, street and google are `ground`. A query
whose location has no tile is rejected as `missing_pair`. `test/gallery_{drone,street}` serve the reverse
task of University-1652 (satellite -> view) and are not listed; neither are folders the layout does not name
(e.g. `4K_drone`). Files or folders whose name starts with "." (`.DS_Store`) are skipped; a file not exactly
at `<view folder>/<loc>/<file>` is rejected as `bad_record`.

Tile geometry: `gsd_m` is left null (unknown). Neither the University-1652 paper (Zheng et al., ACM MM
2020) nor its release (github.com/layumi/University1652-Baseline) states a ground resolution for the
satellite images, so a figure here would be invented. A corpus that knows it can set it through a
manifest's `gsd_m`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from gleam import storage
from gleam.corpus.schema import Modality, RejectReason, Role, Split
from gleam.corpus.sources.base import Listed, make_id, not_a_root
from gleam.corpus.sources.registry import SourceBase, register

_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


class University1652Source(SourceBase):
    kind: Literal["university1652"]
    include_google: bool = Field(True, description="list train/google web photos as ground queries")

    default_name: ClassVar[str] = "u1652"


@dataclass(frozen=True)
class _Folder:
    """One view folder of the layout: where it is, which view it holds, which split it belongs to."""

    path: str
    view: str
    split: Split

    @property
    def modality(self) -> Modality:
        return Modality.DRONE if self.view == "drone" else Modality.GROUND


# Tile folders in order of preference: the first one holding a location provides its tile.
TILE_FOLDERS = (
    _Folder("test/gallery_satellite", "satellite", Split.TEST),
    _Folder("test/query_satellite", "satellite", Split.TEST),
    _Folder("train/satellite", "satellite", Split.TRAIN),
)
QUERY_FOLDERS = (
    _Folder("train/drone", "drone", Split.TRAIN),
    _Folder("train/street", "street", Split.TRAIN),
    _Folder("train/google", "google", Split.TRAIN),
    _Folder("test/query_drone", "drone", Split.TEST),
    _Folder("test/query_street", "street", Split.TEST),
)
_KNOWN_SUBFOLDERS = {
    "train": {"satellite", "drone", "street", "google"},
    "test": {f"{side}_{view}" for side in ("query", "gallery") for view in ("satellite", "drone", "street")},
}


@dataclass(frozen=True)
class _File:
    uri: str
    loc: str
    name: str

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]


@register(University1652Source)
def list_records(source: University1652Source) -> Iterator[Listed]:
    """Tiles (sorted by location), then their rejects, then queries folder by folder in sorted order."""
    root = storage.normalize(source.uri)
    _check_root(root)
    name = source.source_name
    tiles, tile_rejects = _list_tiles(root, name)
    yield from (tiles[loc] for loc in sorted(tiles))
    yield from tile_rejects
    folders = [f for f in QUERY_FOLDERS if source.include_google or f.view != "google"]
    seen: dict[str, str] = {}
    for folder in folders:
        yield from _list_queries(root, folder, name, tiles, seen)


def _check_root(root: str) -> None:
    """A root must hold at least one view folder of the train or test layout."""
    for top, known in _KNOWN_SUBFOLDERS.items():
        if known & set(storage.list_dirs(storage.join(root, top))):
            return
    raise not_a_root(
        root,
        "University-1652",
        "no view folder of the train or test layout in it",
        "train/{satellite,drone,street,google}/<location>/<files> "
        "and/or test/{query,gallery}_{satellite,drone,street}/<location>/<files> below it",
    )


def _list_tiles(root: str, name: str) -> tuple[dict[str, Listed], list[Listed]]:
    """One tile per location from the most preferred folder holding it; other files there are rejects."""
    tiles: dict[str, Listed] = {}
    rejects: list[Listed] = []
    for folder in TILE_FOLDERS:
        by_loc, bad = _walk(root, folder, name, Role.TILE)
        rejects.extend(bad)
        for loc, files in by_loc.items():
            if loc in tiles:
                continue  # the same satellite image, already taken from a preferred folder
            kept, *others = sorted(files, key=_tile_preference)
            tile_id = make_id(name, loc)
            tiles[loc] = Listed.tile(
                tile_id=tile_id,
                source=name,
                source_uri=kept.uri,
                location_id=make_id(name, loc),
                split=folder.split.value,
            )
            rejects.extend(_duplicate_tile(other, kept, tile_id, name) for other in others)
    return tiles, rejects


def _tile_preference(file: _File) -> tuple[bool, str]:
    """Image-looking names first (so a stray notes.txt never displaces the image), then by name."""
    return (posixpath.splitext(file.name)[1].lower() not in _IMAGE_SUFFIXES, file.name)


def _duplicate_tile(file: _File, kept: _File, tile_id: str, name: str) -> Listed:
    return Listed.reject(
        role=Role.TILE,
        record_id=make_id(name, file.loc, file.stem),
        source=name,
        source_uri=file.uri,
        reason=RejectReason.DUPLICATE,
        detail=f"location {file.loc} already has tile {tile_id} from {kept.uri}; one tile per location",
        modality=Modality.SATELLITE.value,
    )


def _list_queries(
    root: str, folder: _Folder, name: str, tiles: dict[str, Listed], seen: dict[str, str]
) -> Iterator[Listed]:
    """Every file of the folder's location folders as a query paired with its location's tile."""
    by_loc, bad = _walk(root, folder, name, Role.QUERY)
    for loc in sorted(by_loc):
        for file in sorted(by_loc[loc], key=lambda f: f.name):
            yield _query(file, folder, name, tiles.get(loc), seen)
    yield from bad


def _query(file: _File, folder: _Folder, name: str, tile: Listed | None, seen: dict[str, str]) -> Listed:
    query_id = make_id(name, folder.view, file.loc, file.stem)
    modality = folder.modality

    def reject(reason: RejectReason, detail: str) -> Listed:
        return Listed.reject(
            role=Role.QUERY,
            record_id=query_id,
            source=name,
            source_uri=file.uri,
            reason=reason,
            detail=detail,
            modality=modality.value,
        )

    if query_id in seen:
        return reject(RejectReason.DUPLICATE, f"query id {query_id} is already used by {seen[query_id]}")
    seen[query_id] = file.uri
    if tile is None:
        return reject(RejectReason.MISSING_PAIR, f"location {file.loc} has no satellite tile")
    return Listed.query(
        query_id=query_id,
        modality=modality,
        tile_id=tile.record_id,
        source=name,
        source_uri=file.uri,
        location_id=tile.location_id or tile.record_id,
        split=folder.split.value,
    )


def _walk(root: str, folder: _Folder, name: str, role: Role) -> tuple[dict[str, list[_File]], list[Listed]]:
    """Files of a view folder grouped by location; files off the `<loc>/<file>` layout are rejects."""
    base = storage.join(root, folder.path)
    by_loc: dict[str, list[_File]] = {}
    bad: list[Listed] = []
    for entry in storage.list_files(base):
        rel = _relative(entry.uri, base)
        parts = rel.split("/")
        if any(part.startswith(".") for part in parts):
            continue  # hidden files and folders (.DS_Store, .ipynb_checkpoints) are not data
        if len(parts) == 2:
            by_loc.setdefault(parts[0], []).append(_File(entry.uri, parts[0], parts[1]))
            continue
        bad.append(
            Listed.reject(
                role=role,
                record_id=make_id(name, folder.view, posixpath.splitext(rel)[0]),
                source=name,
                source_uri=entry.uri,
                reason=RejectReason.BAD_RECORD,
                detail=f"not at {folder.path}/<location>/<file>: {rel}",
                modality=Modality.SATELLITE.value if role is Role.TILE else folder.modality.value,
            )
        )
    return by_loc, bad


def _relative(uri: str, base: str) -> str:
    """The path of a listed file below `base` (by prefix: `storage.relative_to` resolves symlinks)."""
    return uri[len(base) :].lstrip("/")
