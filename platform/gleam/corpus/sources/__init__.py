"""Dataset adapters: each turns a raw corpus in its native layout into `Listed` records.

Each kind is one module of this package that holds its config model and its adapter and registers them
(`registry.register`); `list_records(source)` dispatches on the source's `kind`. Adapters list every file
of the folders they own (a stray `.txt` in a dataset folder is listed and later rejected as
`not_an_image`, never silently skipped), read no image bytes, and decide ids, modality, pairing, location
and split where the dataset defines them. A root they cannot list at all is a `SourceLayoutError`.
"""

from __future__ import annotations

from gleam.corpus.sources.base import Listed, SourceLayoutError, make_id, to_table
from gleam.corpus.sources.registry import SourceBase, SourceConfig, adapter_for, kinds, register

__all__ = [
    "Listed",
    "SourceBase",
    "SourceConfig",
    "SourceLayoutError",
    "adapter_for",
    "kinds",
    "list_records",
    "make_id",
    "register",
    "to_table",
]


def list_records(source: SourceBase) -> list[Listed]:
    """Every record of one source, in a stable order (sorted listing), so re-runs list identically."""
    return list(adapter_for(source.kind)(source))
