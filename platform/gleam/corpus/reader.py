"""Read a prepared corpus, trusting only what its manifest says is complete.

A corpus without manifest.json is unfinished (a crashed or running `prepare`), and only the Parquet
files the manifest lists are part of it, so a stray file in the folder never leaks into training.

A corpus prepared before a column was added (`schema.LATER_COLUMNS`: `gsd_m`, `set_id`, `semi_positives`)
still reads: `read` gives such a column as nulls, so a caller asks for it without checking the version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from gleam import storage
from gleam.corpus.schema import LATER_COLUMNS
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

    def has_column(self, part: str, column: str) -> bool:
        """Whether the corpus's files hold `column` (a later column is absent from older corpora)."""
        return column in self.dataset(part).schema.names

    def read(self, part: str, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
        """The rows (matching `filter`) with `columns` (all when None); a later column the corpus
        predates comes back as nulls of its schema type, in the order asked for."""
        dataset = self.dataset(part)
        if columns is None:
            return dataset.to_table(filter=filter)
        later = LATER_COLUMNS.get(part, {})
        absent = [c for c in columns if c in later and c not in dataset.schema.names]
        if not absent:
            return dataset.to_table(columns=columns, filter=filter)
        present = [c for c in columns if c not in absent]
        table = dataset.to_table(columns=present, filter=filter)
        arrays = [table[c] if c in present else pa.nulls(table.num_rows, later[c].type) for c in columns]
        return pa.Table.from_arrays(arrays, schema=pa.schema([_field(table, later, c) for c in columns]))


def _field(table: pa.Table, later: dict[str, pa.Field], column: str) -> pa.Field:
    return table.schema.field(column) if column in table.schema.names else later[column]


def open_corpus(uri: str) -> PreparedCorpus:
    uri = storage.normalize(uri)
    manifest_uri = storage.join(uri, "manifest.json")
    if not storage.exists(manifest_uri):
        raise CorpusNotReady(f"no complete corpus at {uri}: manifest.json is missing (run `gleam prepare`)")
    return PreparedCorpus(uri, storage.read_json(manifest_uri))
