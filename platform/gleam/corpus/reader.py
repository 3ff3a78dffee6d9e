"""Read a prepared corpus, trusting only what its manifest says is complete.

A corpus without manifest.json is unfinished (a crashed or running `prepare`), and only the Parquet
files the manifest lists are part of it, so a stray file in the folder never leaks into training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from gleam import storage
from gleam.errors import RefusedError

if TYPE_CHECKING:
    import pyarrow.dataset as pads

PARTS = ("tiles", "queries", "rejects")


class CorpusNotReady(RefusedError, RuntimeError):
    pass


@dataclass(frozen=True)
class PreparedCorpus:
    uri: str
    manifest: dict[str, Any]

    def files(self, part: str) -> list[str]:
        if part not in PARTS:
            raise ValueError(f"unknown corpus part {part!r}; expected one of {PARTS}")
        return [storage.join(self.uri, part, name) for name in self.manifest["files"][part]]

    def dataset(self, part: str) -> pads.Dataset:
        import pyarrow.dataset as pads  # imported here: decode workers need PARTS, not datasets (pandas)

        files = self.files(part)
        fs, _ = storage.resolve(self.uri)
        return pads.dataset([storage.resolve(f)[1] for f in files], filesystem=fs, format="parquet")

    def read(self, part: str, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
        return self.dataset(part).to_table(columns=columns, filter=filter)


def open_corpus(uri: str) -> PreparedCorpus:
    uri = storage.normalize(uri)
    manifest_uri = storage.join(uri, "manifest.json")
    if not storage.exists(manifest_uri):
        raise CorpusNotReady(f"no complete corpus at {uri}: manifest.json is missing (run `gleam prepare`)")
    return PreparedCorpus(uri, storage.read_json(manifest_uri))
