"""Evaluate retrieval through a published index, next to exact search over the same gallery.

The served index is what users get, so its figures are the ones production sees; exact search over
the *same* vectors (the index's own embeddings, read back from its version folder: reconstructing PQ
codes would be lossy) says how much of that the index's approximation costs. The gap is index minus
exact, per modality and metric, in percentage points; a Flat index has a gap of exactly 0.

The gallery is every tile the index holds, whatever its split (a served index usually holds all of
them), so the figures are below the split-only exact evaluation whenever the index holds more tiles.

Both sides are top-D lists scored by `ranked_metrics` (`gleam.retrieval.search.list_metrics`), with D
one more than the deepest rank any metric needs (max(ks), the R@1% rank, `index_depth`) and at most
the gallery size: the extra result settles ties at the cut, so exact R@k equals the full-ranking R@k.
A positive the search does not return within D is a miss beyond D (every R@k fails, AP gets 0;
counted in `beyond_depth`), so AP is truncated at D on both sides alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gleam.corpus.reader import PreparedCorpus
from gleam.corpus.schema import Modality
from gleam.evaluation.config import EvaluateConfig
from gleam.evaluation.grid import GRID_TOP_K, search_grid
from gleam.evaluation.locate import distances_json, index_distances, index_fit, index_geometry, log_distances
from gleam.evaluation.metric_log import log_modality
from gleam.evaluation.result import EvaluationResult, IndexComparison
from gleam.evaluation.sets import list_scorer, log_sets, modality_set_metrics
from gleam.evaluation.split import EmptySplitError, gallery_spread, split_queries, split_semi_positives
from gleam.index.catalog import IndexChecksumError, OpenedIndex, open_index
from gleam.index.layout import IndexLocation
from gleam.index.publish import read_embeddings
from gleam.model.embedding import Embedded
from gleam.retrieval.metrics import COUNT_NAMES, OnePercent, one_percent_rank
from gleam.retrieval.search import exact_search, flat_index, list_metrics
from gleam.tracking import JobRun


def open_published(config: EvaluateConfig, fingerprint: str) -> OpenedIndex:
    """The index to evaluate; EncoderMismatchError when it was built with another encoder."""
    if config.index is None:
        raise ValueError("the config names no index")
    return open_index(config.store, config.index, config.index_version, expect_fingerprint=fingerprint)


def tags(opened: OpenedIndex) -> dict[str, str]:
    return {"gleam.index": opened.name, "gleam.index.version": opened.version}


def search_depth(
    gallery_size: int, ks: Sequence[int], depth: int, one_percent: OnePercent = "platform"
) -> int:
    """Results per query: one past the deepest rank a metric needs, at most the whole gallery."""
    return min(gallery_size, max(*ks, one_percent_rank(gallery_size, one_percent), depth) + 1)


def index_gallery(store: str, opened: OpenedIndex) -> Embedded:
    """The vectors the index was built from, in FAISS id order (ids and labels are tile ids)."""
    table = read_embeddings(IndexLocation(store, opened.name), opened.version)
    ids = opened.tile_ids.tolist()
    if table.num_rows != len(ids) or "vector" not in table.column_names:
        raise IndexChecksumError(
            f"index {opened.name}/{opened.version} holds {len(ids)} vectors but its embeddings "
            f"{table.num_rows} rows"
        )
    order = pc.index_in(
        pa.array(ids, type=table["tile_id"].type), value_set=table["tile_id"].combine_chunks()
    )
    if order.null_count:
        raise IndexChecksumError(f"index {opened.name}/{opened.version}: embeddings miss some of its tiles")
    flat = table["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = flat.reshape(table.num_rows, -1)[order.to_numpy()]
    return Embedded(ids, ids, np.ascontiguousarray(vectors, dtype=np.float32))


def gap(index: dict[str, float], exact: dict[str, float]) -> dict[str, float]:
    """Index minus exact for every percentage (counts are not compared)."""
    return {name: index[name] - exact[name] for name in index if name not in COUNT_NAMES}


def evaluate_through(
    config: EvaluateConfig,
    corpus: PreparedCorpus,
    modalities: Sequence[Modality],
    encoder: Any,
    spec: Any,
    info: Any,
    opened: OpenedIndex,
    run: JobRun,
) -> EvaluationResult:
    """Per modality: metrics through `opened`, exact over its vectors, and the gap; logged to `run`."""
    gallery = index_gallery(config.store, opened)
    depth = search_depth(len(gallery.ids), config.ks, config.index_depth, config.one_percent)
    exact = exact_search(flat_index(gallery.vectors), gallery.ids)
    # "index.*", not the config's own `index_version` param (None when CURRENT was meant)
    run.log_params(
        {
            "index.name": opened.name,
            "index.version": opened.version,
            "index.key": opened.meta.get("index_key"),
            "index.search_params": opened.meta.get("search_params") or {},
            "index.depth": depth,
        }
    )
    spread = gallery_spread(gallery.vectors)
    run.log_metrics(
        {"gallery_size": len(gallery.ids), "chance.R_at_1": 100.0 / len(gallery.ids), **spread.metrics()}
    )
    found: dict[str, dict[str, float]] = {}
    exact_metrics: dict[str, dict[str, float]] = {}
    gaps: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    geometry = index_geometry(opened)
    distances = {}
    sets: dict[str, dict[str, Any]] = {}
    for modality in modalities:
        queries = split_queries(
            corpus, config.split, modality, encoder, spec, config.batch_size, config.precision
        )
        name = modality.value
        semi = split_semi_positives(corpus, config.split, modality, queries.ids)
        found[name] = list_metrics(
            opened.search,
            queries.vectors,
            queries.labels,
            gallery.ids,
            config.ks,
            depth,
            config.one_percent,
            semi,
        )
        if not found[name]["queries"]:
            raise EmptySplitError(
                f"index {opened.name}/{opened.version} holds none of the tiles of the {len(queries.ids)} "
                f"{name} queries of split {config.split!r} (built from {opened.meta.get('corpus')})"
            )
        exact_metrics[name] = list_metrics(
            exact, queries.vectors, queries.labels, gallery.ids, config.ks, depth, config.one_percent, semi
        )
        gaps[name] = gap(found[name], exact_metrics[name])
        counts[name] = len(queries.ids)
        log_modality(run, name, found[name], "index.")
        log_modality(run, name, exact_metrics[name], "exact.")
        log_modality(run, name, gaps[name], "gap.")
        scorer = list_scorer(opened.search, gallery.ids, depth, config.ks, config.one_percent)
        found_sets = modality_set_metrics(corpus, config.split, modality, queries, scorer)
        if found_sets is not None:
            sets[name] = found_sets
            log_sets(run, name, found_sets, "index.")
        refine_with = (encoder, spec) if config.refine else None
        distances[name] = index_distances(corpus, opened, geometry, queries, name, refine_with)
        if config.grid_queries and run.active:
            title = f"{name} -> satellite through {opened.name}: top {GRID_TOP_K} of {len(gallery.ids)}"
            grid = search_grid(corpus, opened.search, depth, queries, config.grid_queries, title)
            run.log_image(grid, f"retrieval_grid/{name}.png")
    comparison = IndexComparison(
        opened.name,
        opened.version,
        str(opened.meta.get("index_key")),
        dict(opened.meta.get("search_params") or {}),
        depth,
        exact_metrics,
        gaps,
    )
    log_distances(run, distances, "index.")
    run.log_dict(
        {
            "split": config.split,
            "gallery_size": len(gallery.ids),
            "index": {"name": opened.name, "version": opened.version, "key": comparison.index_key},
            "depth": depth,
            "one_percent": config.one_percent,
            "metrics": {"index": found, "exact": exact_metrics, "gap": gaps},
            "spread": spread.to_dict(),
            "distances": distances_json(distances, index_fit(opened)),
            "sets": sets,
        },
        "metrics.json",
    )
    return EvaluationResult(
        found,
        len(gallery.ids),
        counts,
        run.run_id,
        config.split,
        info.fingerprint,
        comparison,
        spread,
        one_percent=config.one_percent,
        distances=distances,
        location_fit=index_fit(opened),
        sets=sets or None,
    )
