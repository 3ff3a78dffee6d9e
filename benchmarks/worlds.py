"""A synthetic world prepared as a corpus, for benchmarks that need real JPEG tiles and queries."""

from __future__ import annotations

import json
from pathlib import Path


def prepare_world(raw: Path, output: Path, size: int, *extra: str) -> str:
    """Prepare the world rendered at `raw` into `output` with every modality at `size` px (panoramas
    2:1); `extra` are further `key=value` overrides of PrepareConfig. Returns the corpus URI."""
    from gleam.config import load_config
    from gleam.corpus.config import PrepareConfig
    from gleam.corpus.prepare import prepare

    sizes = {m: [size, size] for m in ("satellite", "drone", "streetmap", "ground")} | {
        "panorama": [2 * size, size]
    }
    overrides = [
        "name=bench",
        f"output={output}",
        "sources.0.kind=world",
        f"sources.0.uri={raw}",
        "tracking.enabled=false",
        *extra,
        *(f"sizes.{m}={json.dumps(s)}" for m, s in sizes.items()),
    ]
    return prepare(load_config(PrepareConfig, None, overrides)).corpus_uri
