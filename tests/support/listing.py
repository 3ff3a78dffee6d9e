"""Assertions shared by the source adapter tests."""

from __future__ import annotations

from pathlib import Path

from gleam.corpus.sources import Listed


def assert_same_listing(local: list[Listed], remote: list[Listed], root: Path, uri: str) -> None:
    """Listing a copy of `root` uploaded to `uri` gives the same records, with the URIs re-rooted."""
    assert [(r.record_id, r.split, r.reason) for r in remote] == [
        (r.record_id, r.split, r.reason) for r in local
    ]
    assert [r.source_uri for r in remote] == [r.source_uri.replace(str(root), uri) for r in local]
