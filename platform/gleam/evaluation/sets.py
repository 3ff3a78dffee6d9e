"""Sets of photos scored as sets: each set fused into one query per fusion method, then searched.

A corpus whose queries carry a `set_id` (photos of one place taken together) is served one fused vector
per set, so evaluating its photos one by one measures something a user never sees. Here the vectors of
each (modality, set_id) group are fused with every method of `gleam.retrieval.fusion` and the fused
queries are scored by the same search and metrics as single photos (a `Scorer`: exact search over the
split's gallery, `exact_scorer`, or the top lists of a published index, `list_scorer`), so "mean" and
"agreement" sit side by side on the same sets. Photos without a set_id are single photos: left out.

A set's positive is the tile most of its photos name (the first named on a tie): a set that holds a
photo of another place (an outlier) is still a query for the place the rest of it shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc

from gleam.corpus.reader import PreparedCorpus
from gleam.corpus.schema import SET_ID, Modality
from gleam.evaluation.metric_log import log_modality
from gleam.retrieval.fusion import FUSIONS, fuse_set
from gleam.retrieval.metrics import OnePercent
from gleam.retrieval.search import SearchFn, list_metrics, search_metrics

if TYPE_CHECKING:
    from gleam.model.embedding import Embedded

SETS = "sets"  # key of the set count beside each method's metrics
# fused vectors (S, D), their positive labels -> retrieval metrics (R@k, AP, counts)
Scorer = Callable[[np.ndarray, list[str]], dict[str, float]]


@dataclass(frozen=True)
class FusedSets:
    """One fused query per set, in set_id order: what a search of the sets gets."""

    set_ids: list[str]
    labels: list[str]  # each set's positive tile (its photos' majority)
    vectors: np.ndarray  # (S, D) unit vectors
    members: list[list[int]]  # per set, the rows of the input vectors it fused
    weights: list[np.ndarray]  # per set, each member's weight


def group_sets(set_ids: Sequence[str | None]) -> dict[str, list[int]]:
    """set_id -> rows holding it, in set_id order; rows without a set_id are single photos, left out."""
    groups: dict[str, list[int]] = {}
    for row, set_id in enumerate(set_ids):
        if set_id is not None:
            groups.setdefault(set_id, []).append(row)
    return dict(sorted(groups.items()))


def set_label(labels: Sequence[str]) -> str:
    """The tile most of a set's photos name; on a tie the first of them in the set."""
    counts = Counter(labels)
    best = max(counts.values())
    return next(label for label in labels if counts[label] == best)


def fuse_sets(
    vectors: np.ndarray, labels: Sequence[str], set_ids: Sequence[str | None], method: str
) -> FusedSets:
    """Every set of the queries (`vectors` (N, D), positive `labels`, `set_ids`) fused with `method`."""
    if not (len(vectors) == len(labels) == len(set_ids)):
        raise ValueError(f"{len(vectors)} vectors, {len(labels)} labels and {len(set_ids)} set ids")
    groups = group_sets(set_ids)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    fused = np.zeros((len(groups), dim), dtype=np.float32)
    weights = []
    for n, rows in enumerate(groups.values()):
        fused[n], w = fuse_set(vectors[rows], method)
        weights.append(w)
    return FusedSets(
        list(groups),
        [set_label([labels[r] for r in rows]) for rows in groups.values()],
        fused,
        list(groups.values()),
        weights,
    )


def exact_scorer(
    index: Any,
    gallery_ids: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
    one_percent: OnePercent = "platform",
) -> Scorer:
    """Score fused queries by exact search over a flat FAISS `index` of `gallery_ids` (`search_metrics`)."""
    return lambda vectors, labels: search_metrics(index, vectors, labels, gallery_ids, ks, one_percent)


def list_scorer(
    search: SearchFn,
    gallery_ids: Sequence[str],
    depth: int,
    ks: Sequence[int] = (1, 5, 10),
    one_percent: OnePercent = "platform",
) -> Scorer:
    """Score fused queries by the top-`depth` lists of any search, e.g. a published index (`list_metrics`)."""
    return lambda vectors, labels: list_metrics(search, vectors, labels, gallery_ids, ks, depth, one_percent)


def set_metrics(
    score: Scorer,
    vectors: np.ndarray,
    labels: Sequence[str],
    set_ids: Sequence[str | None],
    methods: Sequence[str] = FUSIONS,
) -> dict[str, Any] | None:
    """{method: retrieval metrics of the fused sets, "sets": count}; None when no query is in a set."""
    if not group_sets(set_ids):
        return None
    result: dict[str, Any] = {}
    for method in methods:
        fused = fuse_sets(vectors, labels, set_ids, method)
        result[method] = score(fused.vectors, fused.labels)
        result[SETS] = len(fused.set_ids)
    return result


def split_set_ids(
    corpus: PreparedCorpus, split: str, modality: Modality, query_ids: Sequence[str]
) -> list[str | None] | None:
    """Each query's set_id in `query_ids` order; None when the corpus has no sets for this modality."""
    if SET_ID not in corpus.dataset("queries").schema.names:
        return None  # prepared before the column existed
    where = (pc.field("split") == split) & (pc.field("modality") == modality.value)
    table = corpus.read("queries", ["query_id", SET_ID], filter=where)
    by_id = dict(zip(table["query_id"].to_pylist(), table[SET_ID].to_pylist(), strict=True))
    set_ids = [by_id.get(query_id) for query_id in query_ids]
    return set_ids if any(s is not None for s in set_ids) else None


def modality_set_metrics(
    corpus: PreparedCorpus, split: str, modality: Modality, queries: Embedded, score: Scorer
) -> dict[str, Any] | None:
    """`set_metrics` of one modality's embedded queries of a split; None when it has no sets."""
    set_ids = split_set_ids(corpus, split, modality, queries.ids)
    if set_ids is None:
        return None
    return set_metrics(score, queries.vectors, queries.labels, set_ids)


def log_sets(run: Any, modality: str, found: dict[str, Any], prefix: str = "") -> None:
    """One modality's set metrics to the run: `<prefix>sets.<method>.<modality>.R_at_1`, ..."""
    for method in FUSIONS:
        if method in found:
            log_modality(run, modality, found[method], f"{prefix}sets.{method}.")
