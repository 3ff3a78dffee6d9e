"""The synthetic world as a source: `<uri>/manifest.csv` (generic manifest format, relative URIs).

`gleam world` writes `world.json` last, as its completion marker, so a world without it is still being
written or was never made; listing it would give a partial corpus, hence the error.
"""

from __future__ import annotations

from collections.abc import Iterator

from gleam import storage
from gleam.config import ManifestSource, WorldSource
from gleam.corpus.sources import manifest
from gleam.corpus.sources.base import Listed

MANIFEST_FILE = "manifest.csv"
MARKER_FILE = "world.json"


def list_records(source: WorldSource) -> Iterator[Listed]:
    """The world's manifest, listed under the world source's name."""
    root = storage.normalize(source.uri)
    if not storage.is_file(storage.join(root, MARKER_FILE)):
        raise ValueError(
            f"world at {root} is incomplete or absent (no {MARKER_FILE}): run `gleam world` first"
        )
    as_manifest = ManifestSource(
        kind="manifest", uri=storage.join(root, MANIFEST_FILE), name=source.source_name
    )
    return manifest.list_records(as_manifest)
