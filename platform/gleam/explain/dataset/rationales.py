"""The teacher stage on Ray Data: pairs in, one result per (pair, language) out.

A small actor pool (`RationaleWorker`) holds the teacher: an HTTP client with a thread pool for an
endpoint (the pool's size times the threads is the configured concurrency), or a loaded MLLM for a
local model (one per GPU). For each pair a worker reads the two images from the corpus, and for each
language renders the prompt, looks the answer up in the cache, asks the teacher only when it is not
there (writing the answer to the cache as soon as it arrives), and checks it. The driver gets small
rows back (ids, reasoning or reject reason, whether it was cached or asked), never images. An endpoint
that refuses the job itself comes back as rows too (`refused`), and the driver raises it once the
stage has ended: an actor pool whose task raised keeps its actors, and their CPUs or GPUs, alive for
as long as that error is referenced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from gleam import runtime_env
from gleam.corpus.reader import open_corpus
from gleam.explain.dataset.answers import check_answer
from gleam.explain.dataset.cache import AnswerCache, cache_key
from gleam.explain.dataset.config import LocalTeacher, OpenAITeacher
from gleam.explain.dataset.teacher_prompts import teacher_prompt
from gleam.explain.dataset.teachers import TeacherRefused, TeacherUnavailable, make_teacher
from gleam.explain.explanation_set import ExplainRejectReason
from gleam.resources import size_pool

TASK_COLUMNS = ["pair_id", "query_id", "tile_id", "modality", "match"]
RESULT_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("language", pa.string(), nullable=False),
        pa.field("reasoning", pa.string()),  # set when accepted
        pa.field("reason", pa.string()),  # an ExplainRejectReason value when rejected
        pa.field("detail", pa.string(), nullable=False),
        pa.field("cached", pa.bool_(), nullable=False),  # the answer came from the cache
        pa.field("asked", pa.bool_(), nullable=False),  # the teacher was asked (an answer, or a failure)
        pa.field("refused", pa.string()),  # the endpoint refused the job (TeacherRefused): why; stops it
    ]
)


@dataclass(frozen=True)
class Plan:
    """How the stage runs: actors, threads per actor, resources, the environment the teacher needs."""

    actors: int
    threads: int
    num_gpus: float
    num_cpus: float
    env: dict[str, str]


def plan_for(teacher: OpenAITeacher | LocalTeacher, cluster_gpus: float, env: dict[str, str]) -> Plan:
    if isinstance(teacher, OpenAITeacher):
        threads = math.ceil(teacher.concurrency / teacher.actors)
        return Plan(teacher.actors, threads, 0.0, teacher.num_cpus, env)
    pool = size_pool(teacher.num_gpus, teacher.actors, cluster_gpus)
    return Plan(pool.actors, 1, pool.num_gpus, teacher.num_cpus, env)


class RationaleWorker:
    """A Ray Data actor: a batch of pairs -> RESULT_SCHEMA rows, one per (pair, language)."""

    def __init__(
        self,
        set_uri: str,
        corpus_uri: str,
        teacher: dict[str, Any],
        languages: Sequence[str],
        settings: dict[str, str],
        threads: int,
    ) -> None:
        from pydantic import TypeAdapter

        from gleam.explain.dataset.config import Teacher

        runtime_env.apply(settings)  # the driver's store and registry, whatever this actor's folder
        # a refusal is returned as rows, never raised: an actor pool whose task failed is not released
        # until its error is gone, and holds its CPUs or GPU meanwhile (the driver raises it instead)
        self.refused: str | None = None
        self.teacher: Any = None
        try:
            self.teacher = make_teacher(TypeAdapter(Teacher).validate_python(teacher))
        except TeacherRefused as exc:
            self.refused = str(exc)
        self.cache = AnswerCache(set_uri)
        self.corpus = open_corpus(corpus_uri)
        self.languages = list(languages)
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="teacher")

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.select(TASK_COLUMNS).to_pylist()
        queries = self._images("queries", "query_id", {r["query_id"] for r in rows})
        tiles = self._images("tiles", "tile_id", {r["tile_id"] for r in rows})
        work = [(row, language) for row in rows for language in self.languages]
        results = list(self.pool.map(lambda item: self._one(*item, queries, tiles), work))
        return pa.Table.from_pylist(results, schema=RESULT_SCHEMA)

    def _images(self, part: str, column: str, ids: set[str]) -> dict[str, bytes]:
        table = self.corpus.read(part, [column, "image"], pc.field(column).isin(sorted(ids)))
        return dict(zip(table[column].to_pylist(), table["image"].to_pylist(), strict=True))

    def _one(
        self, row: dict[str, Any], language: str, queries: dict[str, bytes], tiles: dict[str, bytes]
    ) -> dict[str, Any]:
        result = {"pair_id": row["pair_id"], "language": language, "reasoning": None, "reason": None}
        result.update(detail="", cached=False, asked=False, refused=None)
        if self.refused is not None:  # every other request would be refused too: none is sent
            result["refused"] = self.refused
            return result
        query, tile = queries.get(row["query_id"]), tiles.get(row["tile_id"])
        if query is None or tile is None:
            missing = row["query_id"] if query is None else row["tile_id"]
            result.update(
                reason=ExplainRejectReason.MISSING_IMAGE.value, detail=f"{missing} is not in the corpus"
            )
            return result
        prompt = teacher_prompt(row["modality"], language, row["match"])
        key = cache_key(row["pair_id"], prompt.text, self.teacher.identity)
        text = self.cache.get(key)
        if text is None and self.refused is not None:  # refused by another thread meanwhile
            result["refused"] = self.refused
            return result
        if text is not None:
            result["cached"] = True
        else:
            result["asked"] = True
            try:
                text = self.teacher.ask(prompt, [query, tile])
            except TeacherUnavailable as exc:
                result.update(reason=ExplainRejectReason.TEACHER_UNAVAILABLE.value, detail=str(exc))
                return result
            except TeacherRefused as exc:
                self.refused = result["refused"] = str(exc)
                return result
            self.cache.put(key, row["pair_id"], language, self.teacher.identity, text)
        checked = check_answer(text, bool(row["match"]), language)
        if checked.accepted:
            result["reasoning"] = checked.reasoning
        else:
            result.update(reason=checked.reason.value if checked.reason else None, detail=checked.detail)
        return result


def ask_teacher(
    pairs: pa.Table,
    set_uri: str,
    corpus_uri: str,
    teacher: OpenAITeacher | LocalTeacher,
    languages: Sequence[str],
    batch_size: int,
    plan: Plan,
) -> pa.Table:
    """RESULT_SCHEMA rows for every pair and language (the teacher's failures are rows, not errors);
    TeacherRefused when the endpoint refused the job."""
    import ray.data

    if not pairs.num_rows:
        return RESULT_SCHEMA.empty_table()
    tasks = pairs.select(TASK_COLUMNS)
    blocks = [tasks.slice(i, batch_size) for i in range(0, tasks.num_rows, batch_size)]
    remote_args: dict[str, Any] = {"num_cpus": plan.num_cpus}
    if plan.num_gpus:
        remote_args["num_gpus"] = plan.num_gpus
    if plan.env:  # the teacher's key: only in the actors' environment, never in a config, log or run
        remote_args["runtime_env"] = {"env_vars": plan.env}
    dataset = ray.data.from_arrow(blocks).map_batches(
        RationaleWorker,
        fn_constructor_kwargs={
            "set_uri": set_uri,
            "corpus_uri": corpus_uri,
            "teacher": teacher.model_dump(mode="json"),
            "languages": list(languages),
            "settings": runtime_env.resolved(),
            "threads": plan.threads,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        **remote_args,
    )
    parts = list(dataset.iter_batches(batch_format="pyarrow", batch_size=None))
    refused = sorted({r for p in parts for r in p["refused"].to_pylist() if r is not None})
    if refused:  # the endpoint refuses the job itself: stop, naming why (the first line of its reason)
        raise TeacherRefused(refused[0].splitlines()[0])
    return pa.concat_tables([p.cast(RESULT_SCHEMA) for p in parts]) if parts else RESULT_SCHEMA.empty_table()
