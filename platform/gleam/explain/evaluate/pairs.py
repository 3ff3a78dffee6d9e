"""Which pairs of an explanation set are evaluated: one split, some modalities, a deterministic limit."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, zip_longest

import pyarrow as pa
import pyarrow.compute as pc

from gleam.errors import RefusedError
from gleam.explain.explanation_set import ExplanationSet


class NoPairsError(RefusedError, ValueError):
    """The split (or a modality asked for) has no pairs in the explanation set."""


def select_pairs(
    explanation_set: ExplanationSet, split: str, modalities: Sequence[str] | None, limit: int | None
) -> pa.Table:
    """The split's pairs of `modalities` (None: all present), at most `limit` per modality, by pair_id.

    The limit takes matches and non-matches alternately, each in pair_id order (a stable hash), so a
    limited run is the same on every call and keeps the set's balance as far as it goes.
    """
    table = explanation_set.read("pairs", filter=pc.field("split") == split)
    present = sorted(set(table["modality"].to_pylist()))
    if not present:
        raise NoPairsError(f"explanation set {explanation_set.uri} has no pairs in split {split!r}")
    wanted = list(modalities) if modalities is not None else present
    missing = [m for m in wanted if m not in present]
    if missing:
        raise NoPairsError(
            f"explanation set {explanation_set.uri} has no {', '.join(missing)} pairs in split {split!r} "
            f"(it has: {', '.join(present)})"
        )
    rows = sorted(table.to_pylist(), key=lambda r: r["pair_id"])
    chosen = []
    for modality in sorted(wanted):
        matches = [r for r in rows if r["modality"] == modality and r["match"]]
        others = [r for r in rows if r["modality"] == modality and not r["match"]]
        alternating = [r for r in chain.from_iterable(zip_longest(matches, others)) if r is not None]
        chosen.extend(alternating[:limit] if limit is not None else alternating)
    return pa.Table.from_pylist(chosen, schema=table.schema)
