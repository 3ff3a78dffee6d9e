"""The `prepare` job: raw corpora in object storage -> a prepared, validated, de-duplicated corpus.

Flow (one Ray Data execution, streaming): list sources -> read bytes -> decode/validate -> resize ->
encode -> route, each task writing its block's rows to the work area already split into tiles, queries
and rejects; then a metadata-only resolution on the driver (duplicates, missing pairs); then the work
files are moved into `tiles/`, `queries/`, `rejects/` (only blocks the resolution changes are
rewritten) and `manifest.json` is written last. docs/prepare.md says why it is shaped this way.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gleam import __version__, storage
from gleam.cluster import init_ray
from gleam.config import config_hash
from gleam.corpus.config import PrepareConfig
from gleam.corpus.contact_sheet import contact_sheets
from gleam.corpus.listing import build_listing
from gleam.corpus.reader import PARTS, PreparedCorpus, open_corpus
from gleam.corpus.resolve import Resolution, resolve
from gleam.corpus.schema import OUTPUT_SCHEMAS, SCHEMA_VERSION, SEMI_POSITIVES, Role
from gleam.corpus.stages import FILE, PART, decode_block, empty_meta, reroute, work_file, write_parquet
from gleam.errors import RefusedError, StorageError
from gleam.storage_errors import RetryPolicy, causes
from gleam.tracking import JobRun, job_run

log = logging.getLogger(__name__)
WORK_DIR = "_work"
MAX_INPUT_BLOCKS = 2000
TASKS_PER_WORKER = 4  # input blocks per decode worker when batch_size is not set
MOVE_THREADS = 16
MAX_WARM_TASKS = 64  # a big cluster gets some workers warmed, not a task per CPU
# Settings that change how fast the job runs but not what it writes: not part of the config hash.
RUNTIME_ONLY = {
    "tracking",
    "overwrite",
    "concurrency",
    "batch_size",
    "rows_per_shard",
    "contact_sheet_pairs",
    "image_codec",
    "warm_workers",
}


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
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    warming = _warm_workers(config.concurrency) if config.warm_workers else []
    listing, per_source = build_listing(config)
    seconds["listing"] = time.perf_counter() - start
    log.info("listed %d records from %d sources", listing.num_rows, len(config.sources))

    work_uri = storage.join(corpus_uri, WORK_DIR)
    t = time.perf_counter()
    meta = _decode(config, listing, work_uri, retry)
    seconds["decode"] = time.perf_counter() - t
    _settle(warming)

    t = time.perf_counter()
    resolution = resolve(meta)
    seconds["resolve"] = time.perf_counter() - t

    t = time.perf_counter()
    files = _publish(corpus_uri, work_uri, meta, resolution, config.image_codec)
    storage.delete(work_uri)
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start

    manifest = _manifest(config, wanted_hash, meta, resolution, files, per_source, seconds)
    _log_run(run, config, corpus_uri, manifest)
    storage.write_json(storage.join(corpus_uri, "manifest.json"), manifest)  # published last
    return manifest


def _warm_workers(concurrency: int | None) -> list[Any]:
    """Start the decode workers' imports (Ray Data, PIL, the stages) while the driver lists: the first
    task on a fresh worker otherwise pays them on the job's critical path."""
    import ray

    warm = ray.remote(num_cpus=1, max_retries=0)(_import_stages)
    return [warm.remote() for _ in range(min(concurrency or _cluster_cpus(), MAX_WARM_TASKS))]


def _import_stages() -> None:
    import ray.data._internal.execution.operators.map_transformer  # noqa: F401  # what a map task runs
    from PIL import Image

    import gleam.corpus.stages  # noqa: F401

    Image.preinit()  # the common formats' plugins (JPEG, PNG, ...), as the first open would


def _settle(warming: list[Any]) -> None:
    """A warm-up that failed changes nothing: the decode tasks import what they need themselves."""
    import ray

    for ref in warming:
        try:
            ray.get(ref)
        except Exception as exc:
            log.debug("worker warm-up failed: %s", exc)


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _decode(config: PrepareConfig, listing: pa.Table, work_uri: str, retry: RetryPolicy) -> pa.Table:
    """One Dataset execution: each task decodes one block and writes its rows, routed, to the work
    area; the driver gets back only metadata (no pixels)."""
    import ray
    import ray.data

    sizes = {m.value: size for m, size in config.sizes.items()}
    rows = _block_rows(listing.num_rows, config.batch_size, config.rows_per_shard, config.concurrency)
    data_context = ray.data.DataContext.get_current()
    wrap_errors = data_context.raise_original_map_exception
    data_context.raise_original_map_exception = True  # a read's StorageError comes back as itself
    try:
        dataset = ray.data.from_arrow(_blocks(listing, rows)).map_batches(
            decode_block,
            batch_size=None,  # one block per call: one set of work files per task
            batch_format="pyarrow",
            fn_kwargs={
                "work_uri": work_uri,
                "sizes": sizes,
                "limits": config.limits,
                "retry": retry,
                "image_codec": config.image_codec,
            },
            num_cpus=1,
            compute=ray.data.TaskPoolStrategy(size=config.concurrency),
        )
        tables = ray.get(dataset.to_arrow_refs())
        return pa.concat_tables(tables) if tables else empty_meta()
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


def _storage_failure(exc: BaseException) -> StorageError | None:
    """The StorageError a read task raised: Ray hands it back wrapped (RayTaskError keeps it as
    `.cause`), and the wrapper, a StorageError too, carries the worker's traceback in its text."""
    for item in causes(exc):
        if isinstance(item, StorageError) and not isinstance(getattr(item, "cause", None), BaseException):
            return item
    return None


def _block_rows(listed: int, batch_size: int | None, rows_per_shard: int, concurrency: int | None) -> int:
    """Rows per decode task. Few large tasks: each task's fixed cost (scheduling, a thread pool, up to
    three files) is paid per block, and its I/O threads keep the cores busy even when the other tasks
    are done, so a large last block costs little. Never over rows_per_shard, never over
    MAX_INPUT_BLOCKS blocks."""
    if batch_size is not None:
        rows = batch_size
    else:
        tasks = (concurrency or _cluster_cpus()) * TASKS_PER_WORKER
        rows = math.ceil(listed / tasks)
    rows = max(rows, math.ceil(listed / MAX_INPUT_BLOCKS))
    return max(1, min(rows, rows_per_shard))


def _blocks(listing: pa.Table, rows: int) -> list[pa.Table]:
    return [listing.slice(i, rows) for i in range(0, listing.num_rows, rows)] or [listing]


def _touched_blocks(meta: pa.Table, resolution: Resolution) -> set[str]:
    """Blocks holding a row the late decisions change: only these are rewritten."""
    late, remap = resolution.late_rejects, resolution.tile_remap
    if not late and not remap:
        return set()
    touched = set()
    columns = meta.select(["role", "record_id", "tile_id", SEMI_POSITIVES, FILE]).to_pydict()
    for role, record_id, tile_id, semi, stem in zip(*columns.values(), strict=True):
        if f"{role}:{record_id}" in late or (
            role == Role.QUERY.value and (tile_id in remap or any(t in remap for t in semi or ()))
        ):
            touched.add(stem)
    return touched


def _publish(
    corpus_uri: str, work_uri: str, meta: pa.Table, resolution: Resolution, image_codec: str
) -> dict[str, list[str]]:
    """Move each block's work files to their outputs (a rename locally, a server-side copy on S3); the
    few blocks that the late decisions touch are rewritten by Ray tasks instead."""
    touched = _touched_blocks(meta, resolution)
    written = sorted(set(zip(meta.column(FILE).to_pylist(), meta.column(PART).to_pylist(), strict=True)))
    files: dict[str, list[str]] = {part: [] for part in PARTS}
    moves = []
    for stem, part in written:
        if stem not in touched:
            moves.append((work_file(work_uri, stem, part), storage.join(corpus_uri, part, f"{stem}.parquet")))
            files[part].append(f"{stem}.parquet")
    _move_all(moves)
    if touched:
        import ray

        parts_of: dict[str, list[str]] = {}
        for stem, part in written:
            if stem in touched:
                parts_of.setdefault(stem, []).append(part)
        task = ray.remote(num_cpus=0.5, max_retries=3)(_reroute_block)
        decisions = ray.put(resolution)
        for names in ray.get(
            [
                task.remote(work_uri, corpus_uri, stem, parts, decisions, image_codec)
                for stem, parts in sorted(parts_of.items())
            ]
        ):
            for part, name in names.items():
                files[part].append(name)
    for part in PARTS:
        if not files[part]:  # an empty part still gets one file, so readers always find the schema
            empty = OUTPUT_SCHEMAS[part].empty_table()
            write_parquet(empty, storage.join(corpus_uri, part, "empty.parquet"), image_codec)
            files[part].append("empty.parquet")
    return {part: sorted(names) for part, names in files.items()}


def _move_all(moves: list[tuple[str, str]]) -> None:
    if not moves:
        return
    fs, _ = storage.resolve(moves[0][0])
    if storage.is_local(moves[0][0]):
        for part_dir in {storage.parent(target) for _, target in moves}:
            storage.makedirs(part_dir)
        for source, target in moves:
            fs.move(source, target)
        return
    with ThreadPoolExecutor(MOVE_THREADS) as pool:  # S3: each move is a copy request and a delete
        list(pool.map(lambda m: fs.move(storage.resolve(m[0])[1], storage.resolve(m[1])[1]), moves))


def _reroute_block(
    work_uri: str, corpus_uri: str, stem: str, parts: list[str], resolution: Resolution, image_codec: str
) -> dict[str, str]:
    tables = {}
    for part in parts:
        fs, path = storage.resolve(work_file(work_uri, stem, part))
        with fs.open_input_file(path) as handle:
            tables[part] = pq.read_table(handle, schema=OUTPUT_SCHEMAS[part])
    names = {}
    for part, table in reroute(tables, resolution.late_rejects, resolution.tile_remap).items():
        if table.num_rows:
            names[part] = f"{stem}.parquet"
            write_parquet(table, storage.join(corpus_uri, part, names[part]), image_codec)
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
