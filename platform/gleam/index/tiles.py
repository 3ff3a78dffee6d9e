"""The satellite tile images behind an index: tile_id -> JPEG bytes, read from the corpus it was built from.

An index stores vectors and ids, not pixels; the pixels stay in the prepared corpus (`tiles/`). Opening
reads only the `tile_id` column of each file (cheap even for millions of tiles), so a lookup reads one
row group of one file; recent tiles are kept in a small LRU, since a page of results is asked for again
as soon as a user clicks a candidate.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from gleam import storage
from gleam.corpus.reader import open_corpus


class TileImages:
    def __init__(self, corpus_uri: str, cache_size: int = 512) -> None:
        corpus = open_corpus(corpus_uri)
        self.corpus_uri = corpus.uri
        self._fs, _ = storage.resolve(corpus.uri)
        self._files: dict[str, str] = {}
        for uri in corpus.files("tiles"):
            path = storage.resolve(uri)[1]
            for tile_id in pq.read_table(path, columns=["tile_id"], filesystem=self._fs)[
                "tile_id"
            ].to_pylist():
                self._files[tile_id] = path
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def __contains__(self, tile_id: str) -> bool:
        return tile_id in self._files

    def __len__(self) -> int:
        return len(self._files)

    def get(self, tile_id: str) -> bytes | None:
        """The tile's prepared JPEG, or None when the corpus has no such tile."""
        with self._lock:
            if tile_id in self._cache:
                self._cache.move_to_end(tile_id)
                return self._cache[tile_id]
        path = self._files.get(tile_id)
        if path is None:
            return None
        dataset = pads.dataset(path, filesystem=self._fs, format="parquet")
        table = dataset.to_table(columns=["image"], filter=pc.field("tile_id") == tile_id)
        if table.num_rows == 0:
            return None
        data = table["image"][0].as_py()
        with self._lock:
            self._cache[tile_id] = data
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return data
