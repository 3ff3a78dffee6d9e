"""Step one of `prepare`: list every source, then make the listing safe to process in parallel.

Record ids must be unique before workers see them (a second record with an id already listed becomes a
`duplicate` reject), and every accepted record gets its split here, so splits never depend on which
worker handled which image.
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa

from gleam.corpus.config import PrepareConfig, SplitConfig
from gleam.corpus.schema import RejectReason
from gleam.corpus.sources import Listed, list_records, to_table
from gleam.corpus.splits import split_for_location


def unique_ids(records: list[Listed]) -> list[Listed]:
    seen: dict[tuple[str, str], str] = {}
    out: list[Listed] = []
    for record in records:
        key = (record.role, record.record_id)
        if not record.rejected and key in seen:
            out.append(
                Listed.reject(
                    role=record.role,  # type: ignore[arg-type]
                    record_id=record.record_id,
                    source=record.source,
                    source_uri=record.source_uri,
                    modality=record.modality,
                    reason=RejectReason.DUPLICATE,
                    detail=f"{record.role} id {record.record_id} already listed from {seen[key]}",
                )
            )
            continue
        if not record.rejected:
            seen[key] = record.source_uri
        out.append(record)
    return out


def with_splits(records: list[Listed], config: SplitConfig) -> list[Listed]:
    out = []
    for record in records:
        if record.rejected or record.split:
            out.append(record)
        else:
            location = record.location_id or record.record_id
            out.append(replace(record, split=split_for_location(location, config)))
    return out


def build_listing(config: PrepareConfig) -> tuple[pa.Table, dict[str, int]]:
    """(listing table, records listed per source name)."""
    records: list[Listed] = []
    per_source: dict[str, int] = {}
    for source in config.sources:
        listed = list_records(source)
        per_source[source.source_name] = per_source.get(source.source_name, 0) + len(listed)
        records.extend(listed)
    return to_table(with_splits(unique_ids(records), config.split)), per_source
