"""The synthetic world as a source: `<uri>/manifest.csv` (generic manifest format, relative URIs).

`gleam world` writes `world.json` last, as its completion marker, so a world without it is still being
written or was never made; listing it would give a partial corpus, hence the error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from gleam import storage
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
    """The world's manifest, listed under the world source's name."""
    root = storage.normalize(source.uri)
    if not storage.is_file(storage.join(root, MARKER_FILE)):
        raise SourceLayoutError(
            f"world at {root} is incomplete or absent (no {MARKER_FILE}): run `gleam world --output {root}` "
            "first, or point the source uri at the folder it wrote"
        )
    as_manifest = ManifestSource(
        kind="manifest", uri=storage.join(root, MANIFEST_FILE), name=source.source_name
    )
    return list_manifest(as_manifest)
