"""The `prepare` job: raw corpora in object storage -> a prepared, validated, de-duplicated corpus.

Flow (Ray Data, streaming): list sources -> read bytes -> decode/validate -> resize -> encode, written
to a work area; then a metadata-only resolution on the driver (duplicates, missing pairs); then the
work area is routed into `tiles/`, `queries/`, `rejects/` Parquet and `manifest.json` is written last.

Re-running is safe: a corpus whose manifest matches the config is left alone, and anything without a
manifest is an interrupted run whose leftovers are deleted before starting again, so a crash never
leaves duplicates behind. Every listed input ends in exactly one output: accepted + rejected == listed.

A failing store is not bad input: reads it fails are retried with backoff (`RetryPolicy`, set by
GLEAM_READ_ATTEMPTS / GLEAM_READ_BACKOFF_S / GLEAM_READ_MAX_S), and when it does not recover the job
fails with a StorageError before anything is published, so the next run reads everything again.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from gleam import __version__, storage
from gleam.cluster import init_ray
from gleam.config import config_hash
from gleam.corpus.config import PrepareConfig
from gleam.corpus.contact_sheet import contact_sheets
from gleam.corpus.listing import build_listing
from gleam.corpus.reader import PARTS, PreparedCorpus, open_corpus
from gleam.corpus.resolve import Resolution, resolve
from gleam.corpus.schema import OUTPUT_SCHEMAS, SCHEMA_VERSION, Role
from gleam.corpus.stages import WORK_SCHEMA, decode_batch, route_batch
from gleam.errors import RefusedError, StorageError
from gleam.storage_errors import RetryPolicy, causes
from gleam.tracking import JobRun, job_run

log = logging.getLogger(__name__)
WORK_DIR = "_work"
MAX_INPUT_BLOCKS = 2000
# Settings that change how fast the job runs but not what it writes: not part of the config hash.
RUNTIME_ONLY = {"tracking", "overwrite", "concurrency", "batch_size", "rows_per_shard", "contact_sheet_pairs"}


class CorpusExistsError(RefusedError, RuntimeError):
    pass


@dataclass(frozen=True)
class PrepareResult:
    corpus_uri: str
    manifest: dict[str, Any]
    skipped: bool  # True when an identical complete corpus was already there


def prepare(config: PrepareConfig) -> PrepareResult:
    retry = RetryPolicy.from_env()  # read on the driver and shipped with the tasks
    corpus_uri = config.corpus_uri
    wanted_hash = config_hash(config, exclude=RUNTIME_ONLY)
    existing = _existing_manifest(corpus_uri)
    if existing is not None:
        if existing.get("config_hash") == wanted_hash:
            log.info("corpus %s is already complete for this config: nothing to do", corpus_uri)
            return PrepareResult(corpus_uri, existing, skipped=True)
        if not config.overwrite:
            raise CorpusExistsError(
                f"{corpus_uri} holds a corpus prepared from another config "
                f"(hash {existing.get('config_hash')} != {wanted_hash}); set overwrite: true to replace it"
            )
        storage.delete(storage.join(corpus_uri, "manifest.json"))  # unpublish first: never half-visible
    for leftover in (*PARTS, WORK_DIR):
        storage.delete(storage.join(corpus_uri, leftover))

    init_ray()
    with job_run("prepare", config, config.tracking, tags={"gleam.corpus": config.name}) as run:
        manifest = _run(config, corpus_uri, wanted_hash, run, retry)
    return PrepareResult(corpus_uri, manifest, skipped=False)


def _existing_manifest(corpus_uri: str) -> dict[str, Any] | None:
    uri = storage.join(corpus_uri, "manifest.json")
    return storage.read_json(uri) if storage.exists(uri) else None


def _run(
    config: PrepareConfig, corpus_uri: str, wanted_hash: str, run: JobRun, retry: RetryPolicy
) -> dict[str, Any]:
    import ray.data

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    listing, per_source = build_listing(config)
    seconds["listing"] = time.perf_counter() - start
    log.info("listed %d records from %d sources", listing.num_rows, len(config.sources))

    fs, _ = storage.resolve(corpus_uri)
    work_uri = storage.join(corpus_uri, WORK_DIR)
    t = time.perf_counter()
    sizes = {m.value: size for m, size in config.sizes.items()}
    data_context = ray.data.DataContext.get_current()
    wrap_errors = data_context.raise_original_map_exception
    data_context.raise_original_map_exception = True  # a read's StorageError comes back as itself
    try:
        (
            ray.data.from_arrow(_blocks(listing, config.batch_size))
            .map_batches(
                decode_batch,
                batch_size=config.batch_size,
                batch_format="pyarrow",
                fn_kwargs={"sizes": sizes, "limits": config.limits, "retry": retry},
                num_cpus=1,
                compute=ray.data.TaskPoolStrategy(size=config.concurrency),
            )
            .write_parquet(
                storage.resolve(work_uri)[1], filesystem=fs, min_rows_per_file=config.rows_per_shard
            )
        )
    except Exception as exc:
        failure = _storage_failure(exc)
        if failure is None:
            raise
        first_line = str(failure).splitlines()[0]  # Ray Data appends lines of its own to the message
        raise StorageError(
            f"{first_line}. Nothing was published; run the same prepare again once the store answers "
            "and it finishes the work"
        ) from exc
    finally:
        data_context.raise_original_map_exception = wrap_errors
    seconds["decode"] = time.perf_counter() - t

    t = time.perf_counter()
    work = pads.dataset(storage.resolve(work_uri)[1], filesystem=fs, format="parquet", schema=WORK_SCHEMA)
    meta = work.to_table(columns=[c for c in WORK_SCHEMA.names if c != "image"])
    resolution = resolve(meta)
    seconds["resolve"] = time.perf_counter() - t

    t = time.perf_counter()
    files = _route_work(corpus_uri, work_uri, resolution)
    storage.delete(work_uri)
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start

    manifest = _manifest(config, wanted_hash, meta, resolution, files, per_source, seconds)
    _log_run(run, config, corpus_uri, manifest)
    storage.write_json(storage.join(corpus_uri, "manifest.json"), manifest)  # published last
    return manifest


def _storage_failure(exc: BaseException) -> StorageError | None:
    """The StorageError a read task raised: Ray hands it back wrapped (RayTaskError keeps it as
    `.cause`), and the wrapper, a StorageError too, carries the worker's traceback in its text."""
    for item in causes(exc):
        if isinstance(item, StorageError) and not isinstance(getattr(item, "cause", None), BaseException):
            return item
    return None


def _blocks(listing: pa.Table, batch_size: int) -> list[pa.Table]:
    """Slice the listing into input blocks: several per CPU, but never a flood of tiny tasks."""
    rows = max(batch_size * 2, math.ceil(listing.num_rows / MAX_INPUT_BLOCKS))
    return [listing.slice(i, rows) for i in range(0, listing.num_rows, rows)] or [listing]


def _route_work(corpus_uri: str, work_uri: str, resolution: Resolution) -> dict[str, list[str]]:
    """One Ray task per work shard writes its rows to all three parts (one read of the work area)."""
    import ray

    shards = [e.uri for e in storage.list_files(work_uri) if e.uri.endswith(".parquet")]
    route = ray.remote(num_cpus=0.5, max_retries=3)(_route_shard)
    decisions = ray.put(resolution)
    written = ray.get([route.remote(uri, corpus_uri, decisions) for uri in shards])
    files: dict[str, list[str]] = {part: [] for part in PARTS}
    for per_part in written:
        for part, name in per_part.items():
            files[part].append(name)
    for part in PARTS:
        if not files[part]:  # an empty part still gets one file, so readers always find the schema
            files[part].append(_write_table(OUTPUT_SCHEMAS[part].empty_table(), corpus_uri, part, "empty"))
    return {part: sorted(names) for part, names in files.items()}


def _write_table(table: pa.Table, corpus_uri: str, part: str, stem: str) -> str:
    name = f"{stem}.parquet"
    fs, path = storage.resolve(storage.join(corpus_uri, part, name))
    if storage.is_local(corpus_uri):
        storage.makedirs(storage.join(corpus_uri, part))
    with fs.open_output_stream(path) as out:
        pq.write_table(table, out, compression="zstd")
    return name


def _route_shard(shard_uri: str, corpus_uri: str, resolution: Resolution) -> dict[str, str]:
    fs, path = storage.resolve(shard_uri)
    with fs.open_input_file(path) as handle:
        batch = pq.read_table(handle, schema=WORK_SCHEMA)
    stem = storage.basename(shard_uri).removesuffix(".parquet")
    names = {}
    for part in PARTS:
        table = route_batch(batch, part, resolution.late_rejects, resolution.tile_remap)
        if table.num_rows:
            names[part] = _write_table(table, corpus_uri, part, stem)
    return names


def _manifest(
    config: PrepareConfig,
    wanted_hash: str,
    meta: pa.Table,
    resolution: Resolution,
    files: dict[str, list[str]],
    per_source: dict[str, int],
    seconds: dict[str, float],
) -> dict[str, Any]:
    tiles: Counter[str] = Counter()
    queries: Counter[tuple[str, str]] = Counter()
    rejects: Counter[str] = Counter()
    for row in meta.select(["role", "record_id", "modality", "split", "reason"]).to_pylist():
        late = resolution.late_rejects.get(f"{row['role']}:{row['record_id']}")
        reason = late[0] if late else row["reason"]
        if reason is not None:
            rejects[reason] += 1
        elif row["role"] == Role.TILE.value:
            tiles[row["split"]] += 1
        else:
            queries[(row["modality"], row["split"])] += 1
    by_modality: Counter[str] = Counter()
    for (modality, _), n in queries.items():
        by_modality[modality] += n
    accepted = sum(tiles.values()) + sum(by_modality.values())
    return {
        "schema_version": SCHEMA_VERSION,
        "name": config.name,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
        "config_hash": wanted_hash,
        "counts": {
            "tiles": sum(tiles.values()),
            "queries": dict(sorted(by_modality.items())),
            "rejects": dict(sorted(rejects.items())),
            "listed": meta.num_rows,
            "accepted": accepted,
            "rejected": sum(rejects.values()),
        },
        "splits": {
            "tiles": dict(sorted(tiles.items())),
            "queries": {
                m: {s: n for (mm, s), n in sorted(queries.items()) if mm == m} for m in sorted(by_modality)
            },
        },
        "sources": [
            {"kind": s.kind, "uri": s.uri, "name": s.source_name, "listed": per_source.get(s.source_name, 0)}
            for s in config.sources
        ],
        "sizes": {m.value: list(size) for m, size in config.sizes.items()},
        "files": files,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "images_per_second": round(meta.num_rows / seconds["decode"], 2) if seconds["decode"] else None,
    }


def _log_run(run: JobRun, config: PrepareConfig, corpus_uri: str, manifest: dict[str, Any]) -> None:
    counts = manifest["counts"]
    run.log_metrics(
        {
            "listed": counts["listed"],
            "accepted": counts["accepted"],
            "rejected": counts["rejected"],
            "tiles": counts["tiles"],
            **{f"queries.{m}": n for m, n in counts["queries"].items()},
            **{f"rejects.{r}": n for r, n in counts["rejects"].items()},
            **{f"seconds.{k}": v for k, v in manifest["seconds"].items()},
            "images_per_second": manifest["images_per_second"] or 0.0,
        }
    )
    run.set_tags({"gleam.corpus_uri": corpus_uri})
    run.log_dict(manifest, "manifest.json")
    if run.active:
        for modality, sheet in contact_sheets(
            PreparedCorpus(corpus_uri, manifest), config.contact_sheet_pairs
        ).items():
            run.log_image(sheet, f"contact_sheets/{modality}.png")


__all__ = ["CorpusExistsError", "PrepareResult", "open_corpus", "prepare"]
