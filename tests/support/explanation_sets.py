"""Explanation sets written directly in the store layout (gleam.explain.explanation_set), for the tests of
the jobs that read one (fine-tuning, evaluation) without running the teacher job first."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gleam.corpus.reader import open_corpus
from gleam.explain.explanation_set import PAIRS_SCHEMA, SCHEMA_VERSION, Review

REASONS = {
    True: ("The road layout and the roofs agree.", "道路布局和屋顶颜色一致。"),
    False: ("The river bends the other way.", "河流弯曲的方向不同。"),
}


def pair_id(query_id: str, tile_id: str) -> str:
    return hashlib.sha256(f"{query_id}\0{tile_id}".encode()).hexdigest()[:16]


def pairs_from_corpus(
    corpus_uri: str, modalities: Iterable[str] | None = None, per_query_negatives: int = 1
) -> list[dict[str, Any]]:
    """One match and `per_query_negatives` non-matches (other tiles of the same split) per query."""
    corpus = open_corpus(corpus_uri)
    queries = corpus.read("queries", ["query_id", "modality", "tile_id", "split"]).to_pylist()
    tiles = corpus.read("tiles", ["tile_id", "split"]).to_pylist()
    by_split: dict[str, list[str]] = {}
    for tile in sorted(tiles, key=lambda t: t["tile_id"]):
        by_split.setdefault(tile["split"], []).append(tile["tile_id"])
    wanted = set(modalities) if modalities is not None else None
    rows = []
    for query in sorted(queries, key=lambda q: q["query_id"]):
        if wanted is not None and query["modality"] not in wanted:
            continue
        others = [t for t in by_split.get(query["split"], []) if t != query["tile_id"]]
        chosen = [(query["tile_id"], True, 1, 0.8)]
        chosen += [(t, False, 2 + i, 0.3) for i, t in enumerate(others[:per_query_negatives])]
        for tile_id, match, rank, similarity in chosen:
            en, zh = REASONS[match]
            rows.append(
                {
                    "pair_id": pair_id(query["query_id"], tile_id),
                    "query_id": query["query_id"],
                    "tile_id": tile_id,
                    "modality": query["modality"],
                    "match": match,
                    "rank": rank,
                    "similarity": similarity,
                    "split": query["split"],
                    "reasoning_en": en,
                    "reasoning_zh": zh,
                    "teacher": "test:fixed",
                    "review": Review.NONE.value,
                }
            )
    return rows


def write_explanation_set(
    folder: Path,
    corpus_uri: str,
    rows: list[Mapping[str, Any]],
    calibration: Mapping[str, Any] | None = None,
    name: str = "test-set",
) -> str:
    """Write `rows` as the set's one pairs file and its manifest (last); returns the set's URI."""
    folder = Path(folder)
    (folder / "pairs").mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([dict(r) for r in rows], schema=PAIRS_SCHEMA)
    pq.write_table(table, folder / "pairs" / "part-00000.parquet")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["split"]] = counts.get(row["split"], 0) + 1
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "corpus": corpus_uri,
        "index": None,
        "calibration": dict(calibration) if calibration else None,
        "quality": None,
        "files": {"pairs": ["part-00000.parquet"], "rejects": []},
        "counts": {"pairs": len(rows), "by_split": counts},
    }
    import json

    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return str(folder)
