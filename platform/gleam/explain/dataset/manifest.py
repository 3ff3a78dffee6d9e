"""The explanation set's manifest: data contract, counts, provenance; and writing the parts it lists.

Written last, as for corpora: a set is complete exactly when manifest.json exists, and only the files
it lists are part of it. A new version of the set (a re-run, a review import) writes its files under
fresh names, then the manifest, then deletes files no manifest lists any more, so a reader sees the old
set or the new one, never a mix, and a crash in between leaves the old set whole.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gleam import storage
from gleam.explain.explanation_set import MANIFEST, PARTS, REJECTS_SCHEMA, Review


def data_contract() -> dict[str, list[dict[str, Any]]]:
    """Each part's columns: name, Arrow type, nullable."""
    return {
        part: [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]
        for part, schema in PARTS.items()
    }


def count_pairs(pairs: pa.Table) -> dict[str, Any]:
    """pairs, by_split, by_split_modality_match ({split: {modality: {match, no_match}}}), review."""
    by_split: Counter[str] = Counter()
    detail: dict[str, dict[str, dict[str, int]]] = {}
    review: Counter[str] = Counter({r.value: 0 for r in Review})
    for row in pairs.select(["split", "modality", "match", "review"]).to_pylist():
        by_split[row["split"]] += 1
        cell = detail.setdefault(row["split"], {}).setdefault(row["modality"], {"match": 0, "no_match": 0})
        cell["match" if row["match"] else "no_match"] += 1
        review[row["review"]] += 1
    return {
        "pairs": pairs.num_rows,
        "by_split": dict(sorted(by_split.items())),
        "by_split_modality_match": {s: dict(sorted(m.items())) for s, m in sorted(detail.items())},
        "review": dict(sorted(review.items())),
    }


def count_rejects(rejects: pa.Table) -> dict[str, Any]:
    """total, by_reason, by_language ({language: {reason: n}}); one reject row per refused language."""
    by_reason: Counter[str] = Counter()
    by_language: dict[str, Counter[str]] = {}
    for row in rejects.select(["language", "reason"]).to_pylist():
        by_reason[row["reason"]] += 1
        by_language.setdefault(row["language"], Counter())[row["reason"]] += 1
    return {
        "total": rejects.num_rows,
        "pairs": len(set(rejects["pair_id"].to_pylist())),
        "by_reason": dict(sorted(by_reason.items())),
        "by_language": {lang: dict(sorted(c.items())) for lang, c in sorted(by_language.items())},
    }


def write_part(set_uri: str, part: str, table: pa.Table, stem: str) -> str:
    """Write one Parquet file of `part` under a fresh name; returns the name (for the manifest)."""
    name = f"{stem}-{uuid.uuid4().hex[:8]}.parquet"
    uri = storage.join(set_uri, part, name)
    if storage.is_local(uri):
        storage.makedirs(storage.join(set_uri, part))
    fs, path = storage.resolve(uri)
    with fs.open_output_stream(path) as out:
        pq.write_table(table.cast(PARTS[part]), out, compression="zstd")
    return name


def write_pairs(set_uri: str, pairs: pa.Table) -> list[str]:
    """One file per split (readers filter by split), at least one file so the schema is always there."""
    names = []
    for split in sorted(set(pairs["split"].to_pylist())):
        names.append(write_part(set_uri, "pairs", pairs.filter(pc.equal(pairs["split"], split)), split))
    return names or [write_part(set_uri, "pairs", pairs, "empty")]


def write_rejects(set_uri: str, rejects: pa.Table) -> list[str]:
    return [write_part(set_uri, "rejects", rejects.cast(REJECTS_SCHEMA), "rejects")]


def publish(set_uri: str, manifest: dict[str, Any]) -> None:
    """manifest.json last, then the files it no longer lists are deleted."""
    storage.write_json(storage.join(set_uri, MANIFEST), manifest)
    delete_unlisted(set_uri, manifest)


def delete_unlisted(set_uri: str, manifest: dict[str, Any]) -> list[str]:
    """Remove files of the parts that the manifest does not list (an older version, a crashed run)."""
    removed = []
    for part in PARTS:
        listed = set(manifest["files"].get(part, []))
        for entry in storage.list_files(storage.join(set_uri, part)):
            if storage.basename(entry.uri) not in listed:
                storage.delete(entry.uri)
                removed.append(entry.uri)
    return removed
