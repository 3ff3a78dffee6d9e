"""Content de-duplication and query/tile pairing decisions."""

from __future__ import annotations

import pyarrow as pa

from gleam.corpus.resolve import resolve


def meta(rows: list[tuple]) -> pa.Table:
    keys = ["role", "record_id", "tile_id", "sha256", "reason"]
    return pa.Table.from_pylist([dict(zip(keys, r, strict=True)) for r in rows])


def test_duplicate_tiles_are_kept_once_and_queries_follow_the_kept_tile() -> None:
    result = resolve(
        meta(
            [
                ("tile", "t2", "t2", "same", None),
                ("tile", "t1", "t1", "same", None),
                ("query", "q1", "t2", "qa", None),
            ]
        )
    )
    assert result.late_rejects == {"tile:t2": ("duplicate", "same bytes as tile t1")}
    assert result.tile_remap == {"t2": "t1"}


def test_queries_without_an_accepted_tile_are_missing_pairs() -> None:
    result = resolve(
        meta(
            [
                ("tile", "bad", "bad", "x", "decode_error"),
                ("query", "q1", "bad", "a", None),
                ("query", "q2", "absent", "b", None),
                ("query", "q3", "absent", "c", "not_an_image"),  # already rejected: left alone
            ]
        )
    )
    assert result.late_rejects["query:q1"][0] == "missing_pair"
    assert "decode_error" in result.late_rejects["query:q1"][1]
    assert result.late_rejects["query:q2"] == ("missing_pair", "tile absent is not in the corpus")
    assert "query:q3" not in result.late_rejects


def test_duplicate_queries_keep_the_first_id() -> None:
    result = resolve(
        meta(
            [
                ("tile", "t", "t", "tt", None),
                ("query", "qb", "t", "same", None),
                ("query", "qa", "t", "same", None),
            ]
        )
    )
    assert result.late_rejects == {"query:qb": ("duplicate", "same bytes as query qa")}
