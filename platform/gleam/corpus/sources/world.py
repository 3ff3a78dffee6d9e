"""The synthetic world as a source: `<uri>/manifest.csv` (generic manifest format, relative URIs).

`gleam world` writes `world.json` last, as its completion marker, so a world without it is still being
written or was never made; listing it would give a partial corpus, hence the error.

Every world's tiles have a known ground size: `world.json` records `metres_per_pixel` (tile_metres /
tile_size). A world of the first layout has no `gsd_m` column in its manifest, so its tiles take it
from there; a located world states it in the manifest itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import ClassVar, Literal

from gleam import storage
from gleam.corpus.schema import Role
from gleam.corpus.sources.base import Listed, SourceLayoutError
from gleam.corpus.sources.manifest import ManifestSource
from gleam.corpus.sources.manifest import list_records as list_manifest
from gleam.corpus.sources.registry import SourceBase, register
from gleam.corpus.world.layout import MANIFEST_FILE, MARKER_FILE


class WorldSource(SourceBase):
    kind: Literal["world"]
    default_name: ClassVar[str] = "world"


@register(WorldSource)
def list_records(source: WorldSource) -> Iterator[Listed]:
    """The world's manifest, listed under the world source's name, each tile with its metres per pixel."""
    root = storage.normalize(source.uri)
    marker = storage.join(root, MARKER_FILE)
    if not storage.is_file(marker):
        raise SourceLayoutError(
            f"world at {root} is incomplete or absent (no {MARKER_FILE}): run `gleam world --output {root}` "
            "first, or point the source uri at the folder it wrote"
        )
    gsd_m = storage.read_json(marker).get("metres_per_pixel")
    as_manifest = ManifestSource(
        kind="manifest", uri=storage.join(root, MANIFEST_FILE), name=source.source_name
    )
    return _with_gsd(list_manifest(as_manifest), float(gsd_m) if gsd_m else None)


def _with_gsd(records: Iterator[Listed], gsd_m: float | None) -> Iterator[Listed]:
    """Tiles without a stated gsd_m (worlds of the first layout) take the world's metres per pixel."""
    for record in records:
        if gsd_m and record.role == Role.TILE.value and record.reason is None and record.gsd_m is None:
            record = dataclasses.replace(record, gsd_m=gsd_m)
        yield record
