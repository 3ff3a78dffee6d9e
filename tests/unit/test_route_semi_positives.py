"""Prepare's routing keeps a query's semi-positives and names a dropped duplicate tile by its kept copy."""

from __future__ import annotations

import pyarrow as pa

from gleam.corpus.stages import WORK_SCHEMA, route_rows


def _row(role: str, record_id: str, tile_id: str, semi: list[str] | None = None) -> dict:
    row = dict.fromkeys(WORK_SCHEMA.names)
    fields = {"role": role, "record_id": record_id, "tile_id": tile_id, "source": "s", "split": "test"}
    return (
        row
        | fields
        | {
            "modality": "panorama",
            "source_uri": f"mem://{record_id}",
            "sha256": record_id,
            "image": b"x",
            "height": 1,
            "width": 1,
            "location_id": tile_id,
            "semi_positives": semi,
        }
    )


def test_semi_positives_reach_the_queries_part_remapped() -> None:
    batch = pa.Table.from_pylist(
        [_row("query", "q1", "t1", ["t2", "t3"]), _row("query", "q2", "t3"), _row("tile", "t1", "t1")],
        schema=WORK_SCHEMA,
    )
    queries = route_rows(batch.to_pylist(), "queries", {}, {"t2": "t1"}).to_pylist()
    assert {r["query_id"]: r["semi_positives"] for r in queries} == {"q1": ["t1", "t3"], "q2": None}
    assert "semi_positives" not in route_rows(batch.to_pylist(), "tiles", {}, {}).column_names
