"""Training a phase in planned segments: the driver side of the `gps` and `similarity` batch modes.

In `random` mode every worker shuffles its own shards, one `TorchTrainer.fit` for the phase. With
neighbourhood batches the *driver* must decide which rows each worker gets at each step, so it composes
the global batches (gleam.training.composition), deals them to the workers, and hands each worker a
Ray Dataset of exactly its rows, sorted by (step, slot): the pair rows tagged with the plan by a local
pyarrow join in `map_batches`, then `sort("pos")`. Workers read these unsplit (`plan-<rank>`), straight
through, so a resumed step skips to its exact row.

The phase runs as segments, one `fit` each, resuming from the previous segment's last checkpoint (the
same Ray Train run): `gps` segments of at least an epoch and ~50k pairs (what one sorted dataset
holds), `similarity` one per mining period; after each, `gleam.training.mining` embeds the places
with that checkpoint's encoder and the next segment is composed from the mined lists. Each segment's
inputs are written before it starts to `<run>/batching/segment-<k>.json` (mode, steps, seed, composer
state, neighbour lists and where they came from; and once done, its checkpoint), so a resumed or
re-submitted run composes the same batches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from gleam import storage
from gleam.corpus.reader import PreparedCorpus
from gleam.training.composition import Composer, Neighbours, compose_plan
from gleam.training.config import TrainConfig
from gleam.training.neighbours import corpus_gps_neighbours

log = logging.getLogger(__name__)

BATCHING_DIR = "batching"
# fit(datasets, plan) -> (the segment's last reported metrics, its checkpoint's URI);
# plan = {"segment", "start", "stop"}
Fit = Callable[[dict[str, Any], dict[str, int]], tuple[dict[str, Any], str]]


def train_pair_refs(corpus: PreparedCorpus, modalities: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """modality -> (query_id, tile_id) of its train pairs: the metadata the composer needs, no pixels."""
    table = corpus.read(
        "queries",
        ["query_id", "modality", "tile_id"],
        filter=(pc.field("split") == "train") & pc.field("modality").isin(list(modalities)),
    )
    refs: dict[str, list[tuple[str, str]]] = {m: [] for m in modalities}
    for row in table.to_pylist():
        refs[row["modality"]].append((row["query_id"], row["tile_id"]))
    return refs


def initial_neighbours(
    config: TrainConfig, corpus: PreparedCorpus, refs: Mapping[str, Sequence[tuple[str, str]]]
) -> dict[str, list[str]] | None:
    """GPS lists when the mode starts with them (a ConfigError, before any worker, when no place has
    coordinates), else None: random composition until the first mining."""
    if not config.batching.uses_gps():
        return None
    tiles = [tile for pairs in refs.values() for _, tile in pairs]
    return corpus_gps_neighbours(corpus, tiles, config.batching.candidates, config.batching.radius_m)


SEGMENT_PAIRS = 50_000  # gps: rows one segment's sorted datasets hold at least (each fit costs a start-up)


def segment_length(config: TrainConfig, pairs: int) -> int:
    """Steps per segment: the mining period (default one epoch) for similarity; for gps, whose lists never
    change, at least one epoch and about SEGMENT_PAIRS pairs (small sets: many epochs per fit)."""
    batch = config.batch_size * config.scaling.workers
    epoch = max(1, math.ceil(pairs / batch))
    if config.batching.mode == "similarity":
        return config.batching.mine_every_steps or epoch
    return max(epoch, math.ceil(SEGMENT_PAIRS / batch))


def new_composer(
    config: TrainConfig, refs: Mapping[str, Sequence[tuple[str, str]]], neighbours: Neighbours | None
) -> Composer:
    weights = {m: w for m, w in config.weights().items() if w > 0}
    return Composer(
        refs,
        weights,
        config.batch_size * config.scaling.workers,
        config.seed,
        neighbours,
        group=config.batching.neighbours,
        candidates=config.batching.candidates,
    )


def _tag(batch: pa.Table, plan: pa.Table) -> pa.Table:
    """The pair rows of the plan, tagged with (step, pos); a pair planned twice comes out twice."""
    keys = plan.select(["query_id", "step", "pos"])
    keys = keys.set_column(0, "query_id", keys["query_id"].cast(batch.schema.field("query_id").type))
    tagged = batch.join(keys, "query_id", join_type="inner")
    return tagged.combine_chunks()


def plan_datasets(pairs: Mapping[str, Any], plan: pa.Table, world: int) -> dict[str, Any]:
    """`plan-<rank>` -> that worker's pair rows for the segment, sorted by their position in its stream.

    Materialised here, on the driver, before the segment's workers start: an unsplit dataset is executed
    by the worker that reads it, and its tag and sort tasks need CPUs that the Ray Train workers hold
    while they wait for them (a cluster whose CPUs the workers take whole deadlocks)."""
    modalities = sorted(pairs)
    union = (
        pairs[modalities[0]].union(*[pairs[m] for m in modalities[1:]])
        if len(modalities) > 1
        else pairs[modalities[0]]
    )
    out = {}
    for rank in range(world):
        mine = plan.filter(pc.equal(plan["rank"], rank))
        tagged = union.map_batches(_tag, batch_format="pyarrow", fn_kwargs={"plan": mine})
        out[f"plan-{rank}"] = tagged.sort("pos").materialize()
    return out


def segment_uri(folder: str, segment: int) -> str:
    return storage.join(folder, BATCHING_DIR, f"segment-{segment:04d}.json")


def run_segments(
    config: TrainConfig,
    corpus: PreparedCorpus,
    pairs: Mapping[str, Any],
    refs: Mapping[str, Sequence[tuple[str, str]]],
    first_neighbours: Neighbours | None,
    total_steps: int,
    folder: str,
    fit: Fit,
) -> tuple[dict[str, Any], str]:
    """Run the phase's segments in order, skipping those a previous submission finished; returns the
    last segment's metrics and checkpoint URI."""
    batching = config.batching
    world = config.scaling.workers
    length = segment_length(config, sum(len(p) for p in refs.values()))
    state: dict[str, Any] | None = None
    neighbours, source = (dict(first_neighbours), "gps") if first_neighbours is not None else (None, "random")
    metrics: dict[str, Any] = {}
    for segment, start in enumerate(range(0, total_steps, length)):
        stop = min(total_steps, start + length)
        uri = segment_uri(folder, segment)
        if storage.exists(uri):
            record = storage.read_json(uri)
        else:
            record = {
                "mode": batching.mode,
                "segment": segment,
                "start": start,
                "stop": stop,
                "seed": config.seed,
                "neighbours_from": source,
                "composer": state,
                "neighbours": neighbours,
            }
            storage.write_json(uri, record)
        composer = new_composer(config, refs, record["neighbours"])
        if record["composer"] is not None:
            composer.restore(record["composer"])
        plan = compose_plan(composer, start, stop, world)
        state = composer.state()
        if record.get("checkpoint") is None:
            log.info("batching segment %d: steps %d-%d, neighbours from %s", segment, start, stop, source)
            datasets = plan_datasets(pairs, plan, world)
            metrics, record["checkpoint"] = fit(datasets, {"segment": segment, "start": start, "stop": stop})
            record["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            storage.write_json(uri, record)
        metrics = record["metrics"]
        if batching.mode == "similarity" and stop < total_steps:
            next_uri = segment_uri(folder, segment + 1)
            if not storage.exists(next_uri):  # mined already when the next segment's record exists
                neighbours, source = mine(config, corpus, record["checkpoint"]), record["checkpoint"]
    return metrics, record["checkpoint"]


def mine(config: TrainConfig, corpus: PreparedCorpus, checkpoint: str) -> dict[str, list[str]]:
    """Neighbour lists mined with the encoder of `checkpoint` (gleam.training.mining)."""
    from gleam.training.loop import ENCODER_DIR
    from gleam.training.mining import mine_similar_places

    modalities = [m for m, w in config.weights().items() if w > 0]
    mined = mine_similar_places(
        corpus.uri, storage.join(checkpoint, ENCODER_DIR), modalities, k=config.batching.candidates
    )
    log.info("mined neighbour lists of %d places in %.1f s", len(mined.neighbours), mined.seconds)
    return {tile: list(others) for tile, others in mined.neighbours.items()}
