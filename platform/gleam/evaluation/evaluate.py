"""The evaluation job: embed one split of a prepared corpus, search it exactly, report per-modality metrics.

Gallery and queries are the split's (`gleam.evaluation.split`), embedded on the one path every stage
shares (`gleam.model.embedding`, the config's `precision`). Tiles go into a FAISS `IndexFlatIP` over unit
vectors (exact cosine search, the same kind of search the served index is validated against) and the
metrics come from that search (`gleam.retrieval.search.search_metrics`: University-1652 convention,
pessimistic ties, chunked so memory stays bounded for large galleries), with VIGOR's hit rate beside
R@k for queries that have semi-positive tiles.

Images are streamed from Parquet in batches and only ids and vectors are kept, so a large test split
does not have to fit in memory as JPEG bytes; the few images of the retrieval grid are read back by id.
Embedding is a plain in-process loop: evaluation runs on one split, and the Ray Data actor pool of the
index job is not worth its start-up cost here.

With `index` set, the split's queries are searched through a published index instead (its gallery is
every tile it holds) and compared with exact search over the same vectors: see `through_index`.
"""

from __future__ import annotations

from typing import Any

import torch

from gleam.corpus.reader import open_corpus
from gleam.evaluation import through_index
from gleam.evaluation.config import EvaluateConfig
from gleam.evaluation.distance import tile_geometry
from gleam.evaluation.grid import GRID_TOP_K, search_grid
from gleam.evaluation.locate import CROSS_FITTED, distances_json, exact_distances, exact_inputs, log_distances
from gleam.evaluation.metric_log import log_modality
from gleam.evaluation.result import EvaluationResult
from gleam.evaluation.sets import exact_scorer, log_sets, modality_set_metrics
from gleam.evaluation.split import (
    EmptySplitError,
    gallery_spread,
    requested_modalities,
    split_gallery,
    split_queries,
    split_semi_positives,
)
from gleam.model import weights
from gleam.retrieval.search import exact_search, flat_index, search_metrics
from gleam.tracking import job_run


def evaluate(config: EvaluateConfig) -> EvaluationResult:
    """Run the evaluation described by `config` and log it as one MLflow run."""
    corpus = open_corpus(config.corpus)  # CorpusNotReady before any model is loaded
    modalities = requested_modalities(corpus, config.split, config.modalities)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder, spec, info = weights.load(config.encoder, map_location=device)
    tags = {"gleam.encoder_fingerprint": info.fingerprint, "gleam.corpus": corpus.uri}
    if config.index is not None:
        # another encoder's index is refused here, before a run is opened or anything is embedded
        opened = through_index.open_published(config, info.fingerprint)
        with job_run("evaluate", config, config.tracking, tags=tags | through_index.tags(opened)) as run:
            run.log_params({"encoder_uri": info.uri, "encoder_model_version": info.model_version})
            return through_index.evaluate_through(
                config, corpus, modalities, encoder, spec, info, opened, run
            )
    with job_run("evaluate", config, config.tracking, tags=tags) as run:
        run.log_params({"encoder_uri": info.uri, "encoder_model_version": info.model_version})
        gallery = split_gallery(corpus, config.split, encoder, spec, config.batch_size, config.precision)
        if not gallery.ids:
            raise EmptySplitError(f"split {config.split!r} of {corpus.uri} has no tiles")
        index = flat_index(gallery.vectors)
        spread = gallery_spread(gallery.vectors)
        run.log_metrics(
            {"gallery_size": len(gallery.ids), "chance.R_at_1": 100.0 / len(gallery.ids), **spread.metrics()}
        )
        metrics: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        search = exact_search(index, gallery.ids)
        geometry = tile_geometry(corpus, gallery.ids)
        located = {}
        sets: dict[str, dict[str, Any]] = {}
        for modality in modalities:
            queries = split_queries(
                corpus, config.split, modality, encoder, spec, config.batch_size, config.precision
            )
            semi = split_semi_positives(corpus, config.split, modality, queries.ids)
            metrics[modality.value] = search_metrics(
                index, queries.vectors, queries.labels, gallery.ids, config.ks, config.one_percent, semi
            )
            counts[modality.value] = len(queries.ids)
            log_modality(run, modality.value, metrics[modality.value])
            scorer = exact_scorer(index, gallery.ids, config.ks, config.one_percent)
            found_sets = modality_set_metrics(corpus, config.split, modality, queries, scorer)
            if found_sets is not None:
                sets[modality.value] = found_sets
                log_sets(run, modality.value, found_sets)
            refine_with = (encoder, spec) if config.refine else None
            located[modality.value] = exact_inputs(
                corpus, search, gallery, geometry, queries, modality.value, refine_with
            )
            if config.grid_queries and run.active:
                title = f"{modality.value} -> satellite: top {GRID_TOP_K} of {index.ntotal}"
                grid = search_grid(corpus, search, index.ntotal, queries, config.grid_queries, title)
                run.log_image(grid, f"retrieval_grid/{modality.value}.png")
        distances = exact_distances(located, spread.to_dict(), config.coverage)
        log_distances(run, distances)
        run.log_dict(
            {
                "split": config.split,
                "gallery_size": len(gallery.ids),
                "one_percent": config.one_percent,
                "metrics": metrics,
                "spread": spread.to_dict(),
                "distances": distances_json(distances, CROSS_FITTED),
                "sets": sets,
            },
            "metrics.json",
        )
    return EvaluationResult(
        metrics,
        len(gallery.ids),
        counts,
        run.run_id,
        config.split,
        info.fingerprint,
        spread=spread,
        one_percent=config.one_percent,
        distances=distances,
        location_fit=CROSS_FITTED,
        sets=sets or None,
    )
