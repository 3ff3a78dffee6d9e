"""One split of a prepared corpus, embedded and scored: what evaluation and training's validation share.

Gallery = every satellite tile of the split (distractors included); queries = the split's queries of each
modality, labelled by the tile_id of their positive. Embedding goes through `gleam.model.embedding` and
search through `gleam.retrieval.search`, so this module sits above both and below every job: training
imports it without importing the evaluation job, and the job without importing training.

`split_semi_positives` reads the queries' semi-positive tiles (VIGOR) for the hit rate; a corpus without
them, or prepared before the column existed, has none, and its evaluation reports no hit rate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyarrow.compute as pc

from gleam.corpus.reader import PreparedCorpus
from gleam.corpus.schema import SEMI_POSITIVES, Modality
from gleam.errors import RefusedError
from gleam.model.embedding import Embedded, embed_corpus
from gleam.model.encoder import GleamEncoder
from gleam.model.spec import EncoderSpec
from gleam.retrieval.search import flat_index, search_metrics
from gleam.retrieval.spread import Spread, embedding_spread

log = logging.getLogger(__name__)


class EmptySplitError(RefusedError, ValueError):
    """The requested split has no tiles, or no queries of a requested modality: nothing to evaluate."""


def split_filter(split: str) -> pc.Expression:
    return pc.field("split") == split


def queries_per_modality(corpus: PreparedCorpus, split: str) -> dict[str, int]:
    """Query counts of the split by modality, from the Parquet files (the manifest could be older)."""
    table = corpus.read("queries", ["modality"], filter=split_filter(split))
    if not table.num_rows:
        return {}
    counts = pc.value_counts(table["modality"]).to_pylist()
    return {row["values"]: int(row["counts"]) for row in counts}


def requested_modalities(
    corpus: PreparedCorpus, split: str, modalities: Sequence[Modality] | None
) -> list[Modality]:
    """`modalities`, or every query modality the split holds; an empty split or modality fails here, early."""
    present = queries_per_modality(corpus, split)
    if not present:
        raise EmptySplitError(f"split {split!r} of {corpus.uri} has no queries")
    if modalities is None:
        return [Modality(m) for m in sorted(present)]
    missing = [m.value for m in modalities if not present.get(m.value)]
    if missing:
        held = ", ".join(f"{m}: {n}" for m, n in sorted(present.items()))
        raise EmptySplitError(f"split {split!r} of {corpus.uri} has no {', '.join(missing)} queries ({held})")
    return list(modalities)


def split_gallery(
    corpus: PreparedCorpus,
    split: str,
    encoder: GleamEncoder,
    spec: EncoderSpec,
    batch_size: int,
    precision: str = "auto",
) -> Embedded:
    """The split's satellite tiles, embedded (possibly none)."""
    where = split_filter(split)
    return embed_corpus(corpus, "tiles", where, Modality.SATELLITE, encoder, spec, batch_size, precision)


def split_queries(
    corpus: PreparedCorpus,
    split: str,
    modality: Modality,
    encoder: GleamEncoder,
    spec: EncoderSpec,
    batch_size: int,
    precision: str = "auto",
) -> Embedded:
    """The split's queries of one modality, embedded; none at all is an EmptySplitError."""
    where = split_filter(split) & (pc.field("modality") == modality.value)
    queries = embed_corpus(corpus, "queries", where, modality, encoder, spec, batch_size, precision)
    if not queries.ids:
        raise EmptySplitError(f"split {split!r} of {corpus.uri} has no {modality.value} queries")
    return queries


def split_semi_positives(
    corpus: PreparedCorpus, split: str, modality: Modality, query_ids: Sequence[str]
) -> list[list[str]] | None:
    """Each query's semi-positive tile ids, in `query_ids` order; None when no query has any."""
    if SEMI_POSITIVES not in corpus.dataset("queries").schema.names:
        return None  # prepared before the column existed
    where = split_filter(split) & (pc.field("modality") == modality.value)
    table = corpus.read("queries", ["query_id", SEMI_POSITIVES], filter=where)
    by_id = dict(zip(table["query_id"].to_pylist(), table[SEMI_POSITIVES].to_pylist(), strict=True))
    if not any(by_id.values()):
        return None
    return [by_id.get(query_id) or [] for query_id in query_ids]


def gallery_spread(vectors: np.ndarray) -> Spread:
    """The spread of a gallery's tile embeddings, with a warning when they have collapsed."""
    spread = embedding_spread(vectors)
    if spread.collapsed:
        log.warning(
            "%s: the encoder maps every tile to nearly the same vector and cannot tell places apart",
            spread.summary(),
        )
    return spread


def split_metrics(
    corpus: PreparedCorpus,
    encoder: GleamEncoder,
    spec: EncoderSpec,
    split: str,
    modalities: Sequence[Modality | str] | None = None,
    batch_size: int = 64,
    ks: Sequence[int] = (1, 5, 10),
    precision: str = "auto",
) -> tuple[dict[str, dict[str, float]], int, Spread]:
    """(metrics per modality, gallery size, the gallery's spread) of an in-memory encoder: training's
    validation, no MLflow. Modalities the split holds no query of are left out."""
    present = queries_per_modality(corpus, split)
    wanted = [Modality(m) for m in (modalities or sorted(present)) if present.get(Modality(m).value)]
    gallery = split_gallery(corpus, split, encoder, spec, batch_size, precision)
    if not gallery.ids or not wanted:
        raise EmptySplitError(f"split {split!r} of {corpus.uri} has no tiles or no queries to validate with")
    index = flat_index(gallery.vectors)
    metrics = {}
    for modality in wanted:
        queries = split_queries(corpus, split, modality, encoder, spec, batch_size, precision)
        metrics[modality.value] = search_metrics(index, queries.vectors, queries.labels, gallery.ids, ks)
    return metrics, len(gallery.ids), gallery_spread(gallery.vectors)
