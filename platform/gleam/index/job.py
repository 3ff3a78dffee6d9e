"""The index build job: tiles -> embeddings -> FAISS -> recall check -> versioned publish (docs/index.md).

Safe to run unattended on a timer: a lease keeps builds of one index apart, nothing is published
before the recall check passes, CURRENT is written last, a rebuild whose inputs (tiles and their bytes,
the encoder, the index settings) have not changed publishes nothing, and `incremental` re-embeds only
tiles that are new or whose bytes changed since CURRENT (with the same encoder; another encoder means
every vector changes, so it rebuilds in full).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gleam import tracking
from gleam.corpus.reader import PreparedCorpus, open_corpus
from gleam.errors import RefusedError
from gleam.index import build as faiss_build
from gleam.index.calibrate import ValidationQueries, calibrate_sampled, index_quality, sample_queries
from gleam.index.catalog import read_meta
from gleam.index.config import IndexBuildConfig
from gleam.index.embed import EmbedStats, embed_tiles, embeddings_schema
from gleam.index.factory import plan_index
from gleam.index.layout import IndexLocation
from gleam.index.lease import hold_lease
from gleam.index.location_fit import fit_on_queries
from gleam.index.publish import clean_versions, point_current, read_embeddings, write_version
from gleam.retrieval.spread import embedding_spread

log = logging.getLogger(__name__)
META_FORMAT = "gleam-index"
META_FORMAT_VERSION = 1
# fields of the config that change what gets built; the rest (how to run it) does not
# (`location` too: an index built before locations were fitted gets one on its next scheduled build)
_BUILD_FIELDS = ("splits", "memory_budget", "index_key", "exact_limit", "recall", "seed", "location")
# per-tile geometry carried into ids.parquet for the location estimate (gsd_m: null where unknown)
GEOMETRY_COLUMNS = ("gsd_m", "width", "height")


class RecallTooLowError(RefusedError, RuntimeError):
    """The built index misses too many exact neighbours; it was not published."""


class NoTilesError(RefusedError, ValueError):
    """The corpus (or the chosen splits) has no tiles to index."""


@dataclass
class IndexBuildResult:
    name: str
    status: str  # "published" or "unchanged"
    version: str  # the new version, or CURRENT when unchanged
    meta: dict[str, Any]
    run_id: str | None
    removed_versions: list[str] = field(default_factory=list)


def build_index(config: IndexBuildConfig) -> IndexBuildResult:
    """Build and publish the index `config` describes (or nothing, when nothing changed)."""
    import ray

    from gleam.cluster import init_ray
    from gleam.model import weights

    location = IndexLocation(config.store, config.name)
    corpus = open_corpus(config.corpus)
    # checks the weights; fingerprint and dim for the index; the model itself calibrates the threshold
    model, spec, encoder = weights.load(config.encoder)
    if not ray.is_initialized():
        init_ray()
    with hold_lease(location.lease_uri, ttl_s=config.lease_ttl_s):
        return _build_locked(config, location, corpus, encoder, (model, spec))


def _build_locked(
    config: IndexBuildConfig,
    location: IndexLocation,
    corpus: PreparedCorpus,
    encoder: Any,
    model_and_spec: tuple[Any, Any],
) -> IndexBuildResult:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    tiles = _tiles(corpus, config)
    inputs_digest = _inputs_digest(tiles, encoder.fingerprint, config)
    current = location.current()
    previous = read_meta(location, current) if current else None
    if previous is not None and previous.get("inputs_digest") == inputs_digest:
        removed = clean_versions(location, config.keep_versions)
        log.info("index %s: tiles, encoder and settings unchanged since %s", config.name, current)
        return IndexBuildResult(config.name, "unchanged", current, previous, None, removed)
    dim = encoder.embedding_dim
    reused = _reusable(location, current, previous, encoder.fingerprint, dim, tiles, config.incremental)
    todo = sorted(set(tiles["tile_id"].to_pylist()) - set(reused["tile_id"].to_pylist()))
    tags = {"gleam.index": config.name, "gleam.encoder_fingerprint": encoder.fingerprint}
    with tracking.job_run("index", config, config.tracking, tags=tags) as run:
        fresh, embed_stats = embed_tiles(
            corpus,
            todo,
            config.encoder,
            encoder.fingerprint,
            encoder.embedding_dim,
            config.embed,
        )
        timings["embed"] = embed_stats.seconds
        embeddings = _ordered(pa.concat_tables([reused, fresh.cast(reused.schema)]), tiles)
        vectors = _vectors(embeddings, dim)
        plan = plan_index(len(vectors), dim, int(config.memory_budget), config.exact_limit, config.index_key)
        built = faiss_build.train_and_add(
            vectors, plan, config.add_batch_size, seed=config.seed, recall=_recall_target(config)
        )
        report = built.recall
        assert report is not None  # train_and_add was given a target
        timings["train"], timings["add"] = built.train_seconds, built.add_seconds
        timings["validate"] = built.check_seconds
        version = location.new_version()
        meta = _meta(config, version, encoder, plan, built, report, tiles, reused, embed_stats, inputs_digest)
        meta["seconds"] = dict(timings)
        meta["spread"] = embedding_spread(vectors, seed=config.seed).to_dict()
        run.log_params({"built.version": version, "built.index_key": plan.key, "built.plan": plan.reason})
        try:
            refuse_below_floor(config.name, plan.key, len(vectors), report, config.recall.floor)
        except RecallTooLowError:
            run.set_tags({"gleam.index.published": "false"})
            raise
        calibrate_started = time.perf_counter()
        sampled = _validation_queries(corpus, config, model_and_spec, tiles)
        meta["calibration"] = (
            calibrate_sampled(sampled, tiles["tile_id"].to_pylist(), vectors) if sampled else None
        )
        meta["seconds"]["calibrate"] = time.perf_counter() - calibrate_started
        locate_started = time.perf_counter()
        meta["location"] = _location(sampled, meta, corpus, config, model_and_spec, tiles, vectors)
        meta["seconds"]["locate"] = time.perf_counter() - locate_started
        _warn_if_unreliable(config.name, meta)
        meta["seconds"]["total"] = time.perf_counter() - started
        meta = write_version(location, version, built.index, _ids_table(tiles), embeddings, meta)
        point_current(location, version)
        removed = clean_versions(location, config.keep_versions)
        _log_run(run, meta)
    return IndexBuildResult(config.name, "published", version, meta, run.run_id, removed)


# --- inputs ---------------------------------------------------------------------------------------------


def _validation_queries(
    corpus: PreparedCorpus,
    config: IndexBuildConfig,
    model_and_spec: tuple[Any, Any],
    tiles: pa.Table,
) -> ValidationQueries | None:
    """The calibration's sampled queries, embedded once for the calibration and the location fit."""
    if config.calibration.split is None:
        return None
    model, spec = model_and_spec
    return sample_queries(
        corpus,
        model,
        spec,
        tiles["tile_id"].to_pylist(),
        config.calibration.split,
        config.calibration.max_queries,
        config.seed,
        config.embed.batch_size,
    )


def _location(
    sampled: ValidationQueries | None,
    meta: dict[str, Any],
    corpus: PreparedCorpus,
    config: IndexBuildConfig,
    model_and_spec: tuple[Any, Any],
    tiles: pa.Table,
    vectors: np.ndarray,
) -> dict[str, Any] | None:
    """meta.json's `location` (gleam.index.location_fit), None without calibrated queries."""
    if sampled is None or not meta.get("calibration"):
        return None
    location = config.location
    fitted = fit_on_queries(
        sampled,
        meta,
        corpus,
        tiles,
        vectors,
        model_and_spec,
        location.coverage,
        location.k,
        location.refine_queries,
        config.seed,
    )
    if fitted is None:
        log.info("index %s: no location radius (no validation query with coordinates)", config.name)
    return fitted


def _tiles(corpus: PreparedCorpus, config: IndexBuildConfig) -> pa.Table:
    """tile_id, sha256, lat, lon, gsd_m, width, height of the tiles to index, sorted by tile_id (positions
    = FAISS ids); gsd_m is null for a corpus prepared before it existed."""
    where = pc.field("split").isin([s.value for s in config.splits]) if config.splits else None
    columns = ["tile_id", "sha256", "lat", "lon", *GEOMETRY_COLUMNS]
    tiles = corpus.read("tiles", columns, filter=where).sort_by("tile_id")
    if not tiles.num_rows:
        which = f"splits {[s.value for s in config.splits]}" if config.splits else "any split"
        raise NoTilesError(f"corpus {corpus.uri} has no tiles in {which}: nothing to index")
    return tiles


def _inputs_digest(tiles: pa.Table, fingerprint: str, config: IndexBuildConfig) -> str:
    """What the index depends on: every (tile_id, sha256), the encoder, the settings that shape it."""
    digest = hashlib.sha256()
    digest.update(fingerprint.encode())
    settings = config.model_dump(mode="json", include=set(_BUILD_FIELDS))
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for tile_id, sha in zip(tiles["tile_id"].to_pylist(), tiles["sha256"].to_pylist(), strict=True):
        digest.update(f"{tile_id}\0{sha}\n".encode())
    if tiles["gsd_m"].null_count < tiles.num_rows:  # a ground size is known: it shapes the location radius
        digest.update(json.dumps(tiles["gsd_m"].to_pylist()).encode())
    return digest.hexdigest()


def _reusable(
    location: IndexLocation,
    current: str | None,
    previous: dict[str, Any] | None,
    fingerprint: str,
    dim: int,
    tiles: pa.Table,
    incremental: bool,
) -> pa.Table:
    """Vectors of CURRENT still valid for this build: same encoder, same tile id, same bytes."""
    if not incremental or previous is None or current is None:
        return embeddings_schema(dim).empty_table()
    if previous["encoder"]["fingerprint"] != fingerprint:
        log.info("index %s: encoder changed since %s, rebuilding in full", location.name, current)
        return embeddings_schema(dim).empty_table()
    old = read_embeddings(location, current).cast(embeddings_schema(dim))
    keys = pc.binary_join_element_wise(tiles["tile_id"], tiles["sha256"], "\0")
    old_keys = pc.binary_join_element_wise(old["tile_id"], old["sha256"], "\0")
    return old.filter(pc.is_in(old_keys, value_set=keys))


def _ordered(embeddings: pa.Table, tiles: pa.Table) -> pa.Table:
    """Embeddings in the order of `tiles` (by tile_id), checked to cover every tile exactly once."""
    embeddings = embeddings.sort_by("tile_id")
    if embeddings["tile_id"].to_pylist() != tiles["tile_id"].to_pylist():
        raise RuntimeError("embeddings do not match the tiles one to one (duplicate or missing tile ids)")
    return embeddings


def _vectors(embeddings: pa.Table, dim: int) -> np.ndarray:
    flat = embeddings["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(-1, dim), dtype=np.float32)


def _ids_table(tiles: pa.Table) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(np.arange(tiles.num_rows, dtype=np.int64)),
            "tile_id": tiles["tile_id"],
            "sha256": tiles["sha256"],
            "lat": tiles["lat"],
            "lon": tiles["lon"],
            "gsd_m": tiles["gsd_m"].cast(pa.float64()),
            "width": tiles["width"].cast(pa.int32()),
            "height": tiles["height"].cast(pa.int32()),
        }
    )


# --- checks and records ---------------------------------------------------------------------------------


def _recall_target(config: IndexBuildConfig) -> faiss_build.RecallTarget:
    """The check on tiles held out of the index until it is done (gleam.index.build, docs/index.md)."""
    check = config.recall
    return faiss_build.RecallTarget(k=check.k, floor=check.floor, sample=check.sample, seed=config.seed + 1)


def refuse_below_floor(
    name: str, key: str, vectors: int, report: faiss_build.RecallReport, floor: float
) -> None:
    """RecallTooLowError when the held-out recall of the built index is under the floor."""
    if report.recall < floor:
        raise RecallTooLowError(
            f"index {name} ({key}, {vectors} vectors) reaches recall@{report.k} {report.recall:.3f} "
            f"< floor {floor} on {report.queries} held-out tiles even with {report.search_params}; "
            "not published. Raise memory_budget, force a finer index_key or lower recall.floor"
        )


def _meta(
    config: IndexBuildConfig,
    version: str,
    encoder: Any,
    plan: Any,
    built: faiss_build.BuiltIndex,
    report: faiss_build.RecallReport,
    tiles: pa.Table,
    reused: pa.Table,
    embed_stats: EmbedStats,
    inputs_digest: str,
) -> dict[str, Any]:
    return {
        "format": META_FORMAT,
        "format_version": META_FORMAT_VERSION,
        "name": config.name,
        "version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "corpus": config.corpus,
        "encoder": {
            "uri": config.encoder,
            "fingerprint": encoder.fingerprint,
            "model_name": encoder.model_name,
            "model_version": encoder.model_version,
        },
        "dim": encoder.embedding_dim,
        "metric": faiss_build.METRIC,
        "index_key": plan.key,
        "plan_reason": plan.reason,
        "search_params": report.search_params,
        "counts": {
            "vectors": tiles.num_rows,
            "embedded": embed_stats.tiles,
            "reused": reused.num_rows,
            "trained_on": len(built.trained_on),
        },
        "recall": {
            "k": report.k,
            "value": report.recall,
            "floor": config.recall.floor,
            "queries": report.queries,
            "queries_from": "tiles held out of the index until the check was done",
            "tried": [{"params": p, "recall": r} for p, r in report.tried],
        },
        "embedding": {
            "actors": embed_stats.actors,
            "num_gpus": embed_stats.num_gpus,
            "precision": embed_stats.precision,
            "tiles_per_second": embed_stats.tiles_per_second,
        },
        "used_gpu": built.used_gpu,
        "seconds": {},  # per stage, filled in by the caller
        "incremental": config.incremental,
        "inputs_digest": inputs_digest,
    }


def _log_run(run: tracking.JobRun, meta: dict[str, Any]) -> None:
    run.log_metrics(
        {
            "recall_at_k": meta["recall"]["value"],
            "vectors": meta["counts"]["vectors"],
            "embedded": meta["counts"]["embedded"],
            "reused": meta["counts"]["reused"],
            "index_bytes": meta["index_bytes"],
            "embed_tiles_per_second": meta["embedding"]["tiles_per_second"],
            **{f"seconds.{stage}": value for stage, value in meta["seconds"].items()},
            **_calibration_metrics(meta.get("calibration")),
            **_spread_metrics(meta.get("spread")),
            **_location_metrics(meta.get("location")),
        }
    )
    run.set_tags({"gleam.index.published": "true", "gleam.index.version": meta["version"]})
    warning = index_quality(meta.get("spread"), meta.get("calibration"))["warning"]
    if warning:
        run.set_tags({"gleam.index.warning": warning})
    run.log_dict(meta, "meta.json")


def _calibration_metrics(calibration: dict[str, Any] | None) -> dict[str, float]:
    if not calibration:
        return {}
    out = {
        "calibration.threshold": calibration["threshold"],
        "calibration.accuracy": calibration["accuracy"],
        "calibration.at_chance": float(bool(calibration.get("at_chance"))),
    }
    for modality, own in calibration["by_modality"].items():
        out[f"calibration.{modality}.threshold"] = own["threshold"]
        out[f"calibration.{modality}.accuracy"] = own["accuracy"]
    return out


def _location_metrics(location: dict[str, Any] | None) -> dict[str, float]:
    """location.radius_m.<method> and location.<modality>.radius_m.<method>, where fitted."""
    if not location:
        return {}
    out = {f"location.radius_m.{m}": r for m, r in location["radius_m"].items() if r is not None}
    for modality, own in location["by_modality"].items():
        out |= {f"location.{modality}.radius_m.{m}": r for m, r in own["radius_m"].items() if r is not None}
    return out


def _spread_metrics(spread: dict[str, Any] | None) -> dict[str, float]:
    if not spread or spread.get("mean_cosine") is None:
        return {}
    names = ("mean_cosine", "effective_rank", "cosine_std")
    return {f"spread.{k}": float(spread[k]) for k in names} | {"spread.collapsed": float(spread["collapsed"])}


def _warn_if_unreliable(name: str, meta: dict[str, Any]) -> None:
    """Loudly, but publish anyway: a collapsed encoder or a calibration at chance is recorded, not refused."""
    warning = index_quality(meta.get("spread"), meta.get("calibration"))["warning"]
    if warning:
        log.warning(
            "index %s %s: %s. It is published with this recorded in meta.json; serving gives no match "
            "verdict on it. Check the encoder (docs/index.md#spread-and-calibration-at-chance)",
            name,
            meta["version"],
            warning,
        )
