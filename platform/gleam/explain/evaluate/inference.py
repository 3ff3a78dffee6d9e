"""Ask the MLLM about every pair on Ray Data: pairs joined with their images, an actor pool that loads once.

The set holds ids, not images: its rows are joined with the prepared corpus's query and tile bytes (two
Ray Data hash joins, on query_id and tile_id, reading only the wanted ids' images). The joined pairs are
materialised before the pool starts, so the joins' workers are gone when the model actors need the CPUs.
Each actor loads `MultimodalLLM` once (a GPU each when the cluster has GPUs) and answers through the
served path, `Explainer(mllm).explain(...)`, once per pair and language, with the pair's evidence. Only
the answers travel back to the driver (ids and text, no images).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from gleam import runtime_env, storage
from gleam.corpus.reader import PreparedCorpus
from gleam.explain.evaluate.answers import pair_evidence
from gleam.explain.evaluate.config import InferenceConfig
from gleam.resources import pool_options, size_pool

PAIR_COLUMNS = ["pair_id", "query_id", "tile_id", "modality", "similarity", "rank"]
ANSWER_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("language", pa.string(), nullable=False),
        pa.field("parsed", pa.bool_(), nullable=False),
        pa.field("match", pa.bool_()),
        pa.field("confidence", pa.float64()),
        pa.field("reasoning", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("error", pa.string()),
        pa.field("seconds", pa.float64(), nullable=False),
        pa.field("new_tokens", pa.int64()),
        pa.field("model_fingerprint", pa.string()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.int64()),
    ]
)


@dataclass(frozen=True)
class InferenceStats:
    pairs: int  # pairs with both images, answered
    answers: int
    seconds: float
    actors: int
    num_gpus: float


class PairExplainer:
    """A Ray Data actor: joined pairs (with image bytes) in, one answer per pair and language out."""

    def __init__(
        self,
        mllm: dict[str, Any],
        share_evidence: bool,
        languages: list[str],
        facts: dict[str, dict[str, Any]],
        settings: dict[str, str],
        threads: int,
    ) -> None:
        import torch

        from gleam.explain.explainer import Explainer
        from gleam.explain.mllm import MLLMConfig, MultimodalLLM

        runtime_env.apply(settings)  # the driver's store, registry and caches, whatever this actor's folder
        torch.set_num_threads(threads)
        self.explainer = Explainer(MultimodalLLM.load(MLLMConfig(**mllm)), share_evidence=share_evidence)
        self.languages = languages
        self.facts = facts

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        for row in batch.to_pylist():
            evidence = pair_evidence(row, self.facts[row["modality"]])
            for language in self.languages:
                said = self.explainer.explain(
                    row["query_image"], row["tile_image"], row["modality"], language, evidence
                )
                model = said.model or {}
                out.append(
                    {
                        "pair_id": row["pair_id"],
                        "language": language,
                        "parsed": said.parsed,
                        "match": said.match,
                        "confidence": said.confidence,
                        "reasoning": said.reasoning,
                        "raw": said.raw,
                        "error": said.error,
                        "seconds": said.seconds,
                        "new_tokens": model.get("new_tokens"),
                        "model_fingerprint": model.get("fingerprint"),
                        "model_name": model.get("name"),
                        "model_version": model.get("version"),
                    }
                )
        return pa.Table.from_pylist(out, schema=ANSWER_SCHEMA)


def _images(corpus: PreparedCorpus, part: str, key: str, wanted: list[str], column: str) -> Any:
    import ray.data
    from ray.data.expressions import col

    fs, _ = storage.resolve(corpus.uri)
    paths = [storage.resolve(u)[1] for u in corpus.files(part)]
    return (
        ray.data.read_parquet(paths, filesystem=fs, columns=[key, "image"], num_cpus=0.5)
        .filter(expr=col(key).is_in(wanted))
        .rename_columns({"image": column})
    )


def ask_mllm(
    pairs: pa.Table,
    corpus: PreparedCorpus,
    mllm: Mapping[str, Any],
    share_evidence: bool,
    languages: Sequence[str],
    facts: Mapping[str, Mapping[str, Any]],
    config: InferenceConfig,
) -> tuple[pa.Table, InferenceStats]:
    """ANSWER_SCHEMA rows for every pair whose query and tile images are in the corpus, in every language.

    `mllm`: an MLLMConfig as a dict, its model already pinned by the driver; `facts`: modality -> the
    index facts of `pair_evidence`.
    """
    import ray
    import ray.data

    started = time.perf_counter()
    pool = size_pool(config.num_gpus, config.actors)
    selected = pairs.select(PAIR_COLUMNS)
    queries = _images(
        corpus, "queries", "query_id", sorted(set(selected["query_id"].to_pylist())), "query_image"
    )
    tiles = _images(corpus, "tiles", "tile_id", sorted(set(selected["tile_id"].to_pylist())), "tile_image")
    joined = (
        ray.data.from_arrow(selected)
        .join(queries, "inner", num_partitions=config.partitions, on=("query_id",))
        .join(tiles, "inner", num_partitions=config.partitions, on=("tile_id",))
        .materialize()
    )
    answered = joined.map_batches(
        PairExplainer,
        **pool_options(
            pool,
            config.num_cpus,
            config.batch_size,
            {
                "mllm": dict(mllm),
                "share_evidence": share_evidence,
                "languages": list(languages),
                "facts": {m: dict(f) for m, f in facts.items()},
                "settings": runtime_env.resolved(),
                "threads": max(1, int(config.num_cpus)),
            },
        ),
    )
    parts = list(answered.iter_batches(batch_format="pyarrow", batch_size=None))
    table = pa.concat_tables([p.cast(ANSWER_SCHEMA) for p in parts]) if parts else ANSWER_SCHEMA.empty_table()
    table = table.sort_by([("pair_id", "ascending"), ("language", "ascending")])
    pairs_answered = len(set(table["pair_id"].to_pylist()))
    stats = InferenceStats(
        pairs_answered, table.num_rows, time.perf_counter() - started, pool.actors, pool.num_gpus
    )
    return table, stats
