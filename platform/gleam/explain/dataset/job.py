"""The `explain-data` job: a prepared corpus and a published index -> a GLEAM-X explanation set.

Driver: check the config, the corpus, the index and its encoder, the teacher (its key is set, its model
is on this machine) before Ray starts. Then: choose queries (balanced), embed them with the index's
encoder (Ray Data actors), mine each query's pairs from its search in the index, ask the teacher
(Ray Data actors, cached answers first), keep the pairs every language accepted, write the parts and
the manifest last, and record one MLflow run.

Re-running: a complete set built from the same config (and the same index version) with no pair left
unasked is left alone ("nothing to do"). One whose teacher was unavailable for some pairs is built
again: every cached answer is reused (no request is paid twice) and only the missing ones are asked;
rows a person reviewed keep their reviewed words. A set built from another config is refused: a name
means one set.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gleam import __version__, storage
from gleam.config import config_hash
from gleam.corpus.reader import PreparedCorpus, open_corpus
from gleam.errors import ConfigError, RefusedError
from gleam.explain.dataset.config import ExplainDataConfig, LocalTeacher, OpenAITeacher
from gleam.explain.dataset.embed import embed_queries
from gleam.explain.dataset.manifest import (
    count_pairs,
    count_rejects,
    data_contract,
    publish,
    write_pairs,
    write_rejects,
)
from gleam.explain.dataset.pairs import (
    IndexAccess,
    SearchIndex,
    choose_queries,
    keep_balanced,
    mine,
    pair_rows,
)
from gleam.explain.dataset.rationales import RESULT_SCHEMA, ask_teacher, plan_for
from gleam.explain.explanation_set import (
    LANGUAGE_COLUMNS,
    MANIFEST,
    PAIRS_SCHEMA,
    REJECTS_SCHEMA,
    SCHEMA_VERSION,
    ExplainRejectReason,
    Review,
    open_explanation_set,
)
from gleam.tracking import JobRun, job_run

log = logging.getLogger(__name__)
JOB = "explain-data"


class ExplanationSetExistsError(RefusedError, RuntimeError):
    """The set's name is taken by a set built from another config (or another index version)."""


@dataclass(frozen=True)
class ExplainDataResult:
    set_uri: str
    manifest: dict[str, Any]
    skipped: bool  # True: the set was complete for this config, nothing was done
    run_id: str | None = None


def build_explanation_set(config: ExplainDataConfig, index_access: IndexAccess) -> ExplainDataResult:
    """Build (or finish) the set `config` describes; see the module docstring for re-runs."""
    import ray

    from gleam.cluster import init_ray

    set_uri = config.set_uri
    corpus = open_corpus(config.corpus)
    modalities = query_modalities(config, corpus)
    index = index_access.open(config.index.store, config.index.name, config.index.version)
    encoder_uri, fingerprint = query_encoder(config, index.meta)
    wanted_hash = set_hash(config, index.version)
    existing = _existing(set_uri)
    if existing is not None:
        if existing.get("config_hash") != wanted_hash:
            raise ExplanationSetExistsError(_other_config(set_uri, existing, wanted_hash, index.version))
        if not unavailable(existing):
            log.info("explanation set %s is already complete for this config: nothing to do", set_uri)
            return ExplainDataResult(set_uri, existing, skipped=True)
    env = teacher_environment(config.teacher)
    check_local_model(config.teacher)
    if not ray.is_initialized():
        init_ray()
    tags = {"gleam.explain_set": set_uri, "gleam.index": index.name, "gleam.index.version": index.version}
    with job_run(JOB, config, config.tracking, tags=tags) as run:
        manifest, accepted, rejected = _build(
            config, corpus, modalities, index, index_access, (encoder_uri, fingerprint), env
        )
        manifest["config_hash"] = wanted_hash
        if existing is not None:
            reviewed = open_explanation_set(set_uri).read("pairs", pc.field("review") != Review.NONE.value)
            accepted, rejected = carry_reviews(accepted, rejected, reviewed)
            manifest["reviews"] = list(existing.get("reviews") or [])
        manifest["counts"].update(count_pairs(accepted), rejects=count_rejects(rejected))
        manifest["files"] = {
            "pairs": write_pairs(set_uri, accepted),
            "rejects": write_rejects(set_uri, rejected),
        }
        _log_run(run, manifest)
        publish(set_uri, manifest)
    return ExplainDataResult(set_uri, manifest, skipped=False, run_id=run.run_id)


# --- driver checks -----------------------------------------------------------------------------------------


def teacher_environment(teacher: OpenAITeacher | LocalTeacher) -> dict[str, str]:
    """The environment the teacher's actors need (the API key under its own name); checked here."""
    if not isinstance(teacher, OpenAITeacher) or teacher.api_key_env is None:
        return {}
    value = os.environ.get(teacher.api_key_env)
    if not value:
        raise ConfigError(
            f"teacher.api_key_env: the environment variable {teacher.api_key_env} is not set; it must hold "
            "the endpoint's API key (set api_key_env: null for an endpoint that needs none)"
        )
    return {teacher.api_key_env: value}


def check_local_model(teacher: OpenAITeacher | LocalTeacher) -> None:
    """A local teacher's model must be on this machine (folder, HF cache or registry) before Ray starts."""
    if isinstance(teacher, LocalTeacher):
        from gleam.explain.mllm import resolve_source

        resolve_source(teacher.mllm.model, teacher.mllm.cache_dir)


def query_modalities(config: ExplainDataConfig, corpus: PreparedCorpus) -> list[str]:
    present = sorted(m for m, n in (corpus.manifest.get("counts", {}).get("queries") or {}).items() if n)
    if config.modalities is None:
        if not present:
            raise RefusedError(f"corpus {corpus.uri} has no queries")
        return present
    wanted = [m.value for m in config.modalities]
    absent = [m for m in wanted if m not in present]
    if absent:
        raise ConfigError(
            f"modalities: corpus {corpus.uri} has no {', '.join(absent)} queries (has: {present})"
        )
    return wanted


def query_encoder(config: ExplainDataConfig, meta: dict[str, Any]) -> tuple[str, str]:
    """(encoder URI pinned to exact weights, fingerprint): the index's own encoder, checked."""
    from gleam.model import weights

    recorded = meta["encoder"]
    expected = str(recorded["fingerprint"])
    if config.encoder:
        uri = config.encoder
    elif recorded.get("model_name") and recorded.get("model_version"):
        uri = f"models:/{recorded['model_name']}/{recorded['model_version']}"  # the alias may have moved
    else:
        uri = str(recorded["uri"])
    pinned, fingerprint = weights.pin(uri)
    if fingerprint != expected:
        raise weights.FingerprintMismatchError(
            f"encoder {uri} has fingerprint {fingerprint[:12]}, the index {meta.get('name')}/"
            f"{meta.get('version')} was built with {expected[:12]}: queries must be embedded with the "
            "index's own encoder (set `encoder` to it)"
        )
    return pinned, fingerprint


def set_hash(config: ExplainDataConfig, index_version: str) -> str:
    """What the set is made of: the config without its runtime-only fields, and the index version."""
    of_config = config_hash(config, exclude=config.runtime_only())  # type: ignore[arg-type]  # nested
    return hashlib.sha256(f"{of_config}\0{index_version}".encode()).hexdigest()[:16]


def unavailable(manifest: dict[str, Any]) -> int:
    """How many answers the teacher never gave (timeouts, 429, 5xx): what a re-run asks again."""
    by_reason = ((manifest.get("counts") or {}).get("rejects") or {}).get("by_reason") or {}
    return int(by_reason.get(ExplainRejectReason.TEACHER_UNAVAILABLE.value, 0))


def _existing(set_uri: str) -> dict[str, Any] | None:
    uri = storage.join(set_uri, MANIFEST)
    return storage.read_json(uri) if storage.exists(uri) else None


def _other_config(set_uri: str, existing: dict[str, Any], wanted: str, index_version: str) -> str:
    built_from = (existing.get("index") or {}).get("version")
    also = (
        f" (it used index version {built_from}, this run {index_version})"
        if built_from != index_version
        else ""
    )
    return (
        f"{set_uri} holds an explanation set built from another config (hash {existing.get('config_hash')} "
        f"!= {wanted}){also}; choose another name, or delete the set to rebuild it"
    )


# --- the work ---------------------------------------------------------------------------------------------


def _build(
    config: ExplainDataConfig,
    corpus: PreparedCorpus,
    modalities: list[str],
    index: SearchIndex,
    index_access: IndexAccess,
    encoder: tuple[str, str],
    env: dict[str, str],
) -> tuple[dict[str, Any], pa.Table, pa.Table]:
    """(the manifest without its files and pair/reject counts, the accepted pairs, the rejects)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    splits = [s.value for s in config.splits]
    queries = corpus.read(
        "queries", ["query_id", "modality", "tile_id", "split"], pc.field("split").isin(splits)
    )
    tiles = corpus.read("tiles", ["tile_id", "split"])
    tile_split = dict(zip(tiles["tile_id"].to_pylist(), tiles["split"].to_pylist(), strict=True))
    counts = {s.value: config.queries_for(s) for s in config.splits}
    chosen, targets = choose_queries(
        queries.to_pylist(), lambda t: index.position(t) is not None, modalities, counts, config.seed
    )
    candidates = [row for key in sorted(chosen) for row in chosen[key]]
    seconds["choose"] = time.perf_counter() - started

    t = time.perf_counter()
    vectors = embed_queries(corpus, [r["query_id"] for r in candidates], *encoder, config.embed)
    seconds["embed"] = time.perf_counter() - t
    t = time.perf_counter()
    matrix = np.stack([vectors[r["query_id"]] for r in candidates]) if candidates else np.zeros((0, 1))
    mined = mine(index, matrix, candidates, tile_split, config.negatives_per_query)
    kept, skipped = keep_balanced(mined, targets)
    pairs = pair_rows(kept)
    if not pairs:
        raise RefusedError(
            f"no pairs: no query of splits {splits} and modalities {modalities} in {corpus.uri} has its tile "
            f"in index {index.name}/{index.version}"
        )
    seconds["mine"] = time.perf_counter() - t

    t = time.perf_counter()
    import ray

    plan = plan_for(config.teacher, float(ray.cluster_resources().get("GPU", 0)), env)
    task_table = pa.Table.from_pylist(pairs)
    results = ask_teacher(
        task_table, config.set_uri, corpus.uri, config.teacher, config.languages, config.batch_size, plan
    )
    seconds["teacher"] = time.perf_counter() - t
    accepted, rejected = assemble(pairs, results, config.languages, config.teacher.identity)
    queries_chosen: dict[str, dict[str, int]] = {}
    for item in kept:
        per_split = queries_chosen.setdefault(item.query["split"], {})
        per_split[item.query["modality"]] = per_split.get(item.query["modality"], 0) + 1
    seconds["total"] = time.perf_counter() - started
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "kind": "gleam-explanation-set",
        "name": config.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gleam_version": __version__,
        "corpus": corpus.uri,
        "index": _index_record(config, index, encoder),
        "calibration": index.meta.get("calibration"),
        "spread": index.meta.get("spread"),
        "quality": index_access.quality(index.meta.get("spread"), index.meta.get("calibration")),
        "evidence": {m: _facts(index_access, index.meta, m) for m in modalities},
        "teacher": config.teacher.identity,
        "languages": list(config.languages),
        "negatives": "top-ranked wrong tiles of the query's split, in the index's search",
        "data": data_contract(),
        "files": {},  # filled in when the parts are written
        "counts": {
            "queries": {s: dict(sorted(m.items())) for s, m in sorted(queries_chosen.items())},
            "skipped_queries": skipped,
            "teacher": {
                "asked": int(pc.sum(results["asked"]).as_py() or 0),
                "cache_hits": int(pc.sum(results["cached"]).as_py() or 0),
            },
        },
        "reviews": [],
        "seconds": seconds,
    }
    return manifest, accepted, rejected


def assemble(
    pairs: list[dict[str, Any]], results: pa.Table, languages: list[str], teacher: str
) -> tuple[pa.Table, pa.Table]:
    """(accepted pairs, rejects): a pair is accepted when every language is; else each refused language
    is one reject row with its reason."""
    by_pair: dict[str, dict[str, dict[str, Any]]] = {}
    for row in results.cast(RESULT_SCHEMA).to_pylist():
        by_pair.setdefault(row["pair_id"], {})[row["language"]] = row
    accepted, rejected = [], []
    for pair in pairs:
        answers = by_pair.get(pair["pair_id"], {})
        missing = [lang for lang in languages if lang not in answers]
        if missing:
            raise RuntimeError(
                f"the teacher stage returned no result for pair {pair['pair_id']} in {missing}"
            )
        refused = [answers[lang] for lang in languages if answers[lang]["reasoning"] is None]
        if not refused:
            reasoning = {column: None for column in LANGUAGE_COLUMNS.values()}
            reasoning.update({LANGUAGE_COLUMNS[lang]: answers[lang]["reasoning"] for lang in languages})
            accepted.append({**pair, **reasoning, "teacher": teacher, "review": Review.NONE.value})
            continue
        for answer in refused:
            rejected.append(
                {
                    **{k: pair[k] for k in ("pair_id", "query_id", "tile_id", "modality", "match", "split")},
                    "language": answer["language"],
                    "reason": answer["reason"],
                    "detail": answer["detail"],
                    "teacher": teacher,
                }
            )
    return (
        pa.Table.from_pylist(accepted, schema=PAIRS_SCHEMA),
        pa.Table.from_pylist(rejected, schema=REJECTS_SCHEMA),
    )


def _index_record(config: ExplainDataConfig, index: SearchIndex, encoder: tuple[str, str]) -> dict[str, Any]:
    recorded = index.meta.get("encoder") or {}
    return {
        "store": config.index.store,
        "name": index.name,
        "version": index.version,
        "encoder": {
            "uri": recorded.get("uri"),
            "queries_embedded_with": encoder[0],
            "fingerprint": encoder[1],
        },
    }


def _facts(index_access: IndexAccess, meta: dict[str, Any], modality: str) -> dict[str, Any]:
    facts = index_access.evidence_facts(meta, modality)
    return {k: v for k, v in facts.items() if k != "calibration"}  # the calibration is recorded once


def carry_reviews(accepted: pa.Table, rejected: pa.Table, reviewed: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Rows a person approved or revised keep their words and review state in a rebuilt set."""
    if not reviewed.num_rows:
        return accepted, rejected
    ids = reviewed["pair_id"].combine_chunks()
    fresh = accepted.filter(pc.invert(pc.is_in(accepted["pair_id"], value_set=ids)))
    kept = pa.concat_tables([fresh, reviewed.cast(PAIRS_SCHEMA)])
    return kept, rejected.filter(pc.invert(pc.is_in(rejected["pair_id"], value_set=ids)))


def _log_run(run: JobRun, manifest: dict[str, Any]) -> None:
    run.log_metrics({"counts": manifest["counts"], "seconds": manifest["seconds"]})
    run.set_tags({"gleam.explain_set.teacher": manifest["teacher"]})
    run.log_dict(manifest, "manifest.json")
