"""Dataset adapters: each turns a raw corpus in its native layout into `Listed` records.

`list_records(source)` dispatches on the source config's `kind`. Adapters list every file of the
folders they own (a stray `.txt` in a dataset folder is listed and later rejected as `not_an_image`,
never silently skipped), read no image bytes, and decide ids, modality, pairing, location and split
where the dataset defines them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import import_module

from gleam.config import SourceConfig
from gleam.corpus.sources.base import Listed, make_id, to_table

__all__ = ["Listed", "list_records", "make_id", "to_table"]

# kind -> "module:function"; imported lazily so one broken optional dependency breaks one kind only.
ADAPTERS: dict[str, str] = {
    "university1652": "gleam.corpus.sources.university1652:list_records",
    "cvact": "gleam.corpus.sources.cvact:list_records",
    "vigor": "gleam.corpus.sources.vigor:list_records",
    "manifest": "gleam.corpus.sources.manifest:list_records",
    "world": "gleam.corpus.sources.world:list_records",
    "raster": "gleam.corpus.sources.raster:list_records",
}


def adapter_for(kind: str) -> Callable[..., Iterator[Listed]]:
    try:
        target = ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"no adapter for source kind {kind!r}; known: {', '.join(ADAPTERS)}") from None
    module_name, function_name = target.split(":")
    return getattr(import_module(module_name), function_name)


def list_records(source: SourceConfig) -> list[Listed]:
    """Every record of one source, in a stable order (sorted listing), so re-runs list identically."""
    return list(adapter_for(source.kind)(source))
