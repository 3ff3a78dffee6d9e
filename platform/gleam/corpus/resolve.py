"""Decisions that need the whole corpus: de-duplication by content and query/tile pairing.

Runs on the driver over metadata only (ids, hashes, reasons: no pixels), so it scales to millions of
records. Tiles with identical bytes are kept once (first by id) and queries pointing at a dropped copy
are re-pointed at the kept one; a query whose tile is absent or rejected becomes `missing_pair`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from gleam.corpus.schema import RejectReason, Role


@dataclass
class Resolution:
    late_rejects: dict[str, tuple[str, str]] = field(default_factory=dict)  # "role:id" -> (reason, detail)
    tile_remap: dict[str, str] = field(default_factory=dict)  # dropped duplicate tile -> kept tile


def resolve(meta: pa.Table) -> Resolution:
    """meta: role, record_id, tile_id, sha256, reason (one row per listed record)."""
    rows = sorted(
        meta.select(["role", "record_id", "tile_id", "sha256", "reason"]).to_pylist(),
        key=lambda r: (r["role"], r["record_id"]),
    )
    result = Resolution()
    tile_reasons: dict[str, str] = {}
    kept_tile_by_sha: dict[str, str] = {}
    for row in (r for r in rows if r["role"] == Role.TILE.value):
        tile_id = row["record_id"]
        if row["reason"] is not None:
            tile_reasons[tile_id] = row["reason"]
            continue
        kept = kept_tile_by_sha.setdefault(row["sha256"], tile_id)
        if kept != tile_id:
            result.late_rejects[f"tile:{tile_id}"] = (
                RejectReason.DUPLICATE.value,
                f"same bytes as tile {kept}",
            )
            result.tile_remap[tile_id] = kept
    accepted_tiles = set(kept_tile_by_sha.values())
    kept_query_by_sha: dict[str, str] = {}
    for row in (r for r in rows if r["role"] == Role.QUERY.value and r["reason"] is None):
        key = f"query:{row['record_id']}"
        tile_id = result.tile_remap.get(row["tile_id"], row["tile_id"])
        if tile_id not in accepted_tiles:
            why = (
                f"tile {row['tile_id']} was rejected ({tile_reasons[row['tile_id']]})"
                if row["tile_id"] in tile_reasons
                else f"tile {row['tile_id']} is not in the corpus"
            )
            result.late_rejects[key] = (RejectReason.MISSING_PAIR.value, why)
            continue
        kept = kept_query_by_sha.setdefault(row["sha256"], row["record_id"])
        if kept != row["record_id"]:
            result.late_rejects[key] = (RejectReason.DUPLICATE.value, f"same bytes as query {kept}")
    return result
