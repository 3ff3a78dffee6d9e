"""A GLEAM-C phase on Ray Train: pair datasets, TorchTrainer wiring, resume, registration.

The driver validates everything it can before a worker starts (modalities present, enough pairs), joins
each modality's queries with their tiles once (`pair_datasets`, materialised in the object store so
epochs do not repeat the join), and hands them to a `TorchTrainer` with `preserve_order`, which makes
every worker's shard deterministic (resumable to the row). Run state lives next to Ray Train's own
in `<storage_path>/<name>/gleam-train.json`: the config fingerprint, the MLflow run, and once done the
registered version. Hence:

- a worker failure: Ray Train restarts the group from the latest checkpoint (FailureConfig);
- the same config submitted again after a crash: Ray Train restores its checkpoint manager from
  storage, the workers resume from the latest checkpoint, and MLflow metrics continue in the same run;
- the same config after success: nothing to do, the earlier result is returned;
- another config under the same name: refused (TrainRunExistsError), nothing is overwritten.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.compute as pc

from gleam import registry, runtime_env, storage
from gleam.config import config_hash
from gleam.corpus.reader import PreparedCorpus, open_corpus
from gleam.errors import RefusedError, TrainingError
from gleam.model import weights
from gleam.model.hub_weights import stage_pretrained
from gleam.model.spec import HF_CACHE, HUB
from gleam.resources import use_gpu
from gleam.tracking import job_run, tracking_uri
from gleam.training.config import BatchingConfig, TrainConfig
from gleam.training.loop import ENCODER_DIR, train_worker
from gleam.training.pairs import pair_datasets
from gleam.training.plan import initial_neighbours, run_segments, train_pair_refs

log = logging.getLogger(__name__)

STATE_FILE = "gleam-train.json"


class TrainRunExistsError(RefusedError, RuntimeError):
    """A run of this name exists in the storage path with another config."""


class NoTrainingPairsError(RefusedError, ValueError):
    """The corpus has no (or too few) train pairs of a requested modality."""


class TrainingFailedError(TrainingError, RuntimeError):
    """Ray Train gave up (more failures than allowed); the latest checkpoint is kept for a re-run."""


@dataclass(frozen=True)
class TrainResult:
    name: str
    phase: str
    steps: int
    checkpoint: str
    encoder_uri: str
    run_id: str | None
    model_name: str | None
    model_version: int | None
    aliases: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    already_done: bool = False

    @property
    def registry_uri(self) -> str | None:
        if self.model_name is None or self.model_version is None:
            return None
        return str(registry.ModelURI(self.model_name, version=self.model_version))


def train_pair_counts(corpus: PreparedCorpus, modalities: list[str]) -> dict[str, int]:
    """Train-split queries per modality (each query is one pair with its tile)."""
    table = corpus.read("queries", ["modality"], filter=pc.field("split") == "train")
    counts = {row["values"]: int(row["counts"]) for row in pc.value_counts(table["modality"]).to_pylist()}
    return {m: counts.get(m, 0) for m in modalities}


def plan_steps(config: TrainConfig, pairs: int) -> int:
    """`steps`, or enough steps for `epochs` passes over the phase's pairs at the global batch size."""
    if config.steps is not None:
        return config.steps
    assert config.epochs is not None
    return max(1, math.ceil(config.epochs * pairs / (config.batch_size * config.scaling.workers)))


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """Workers run in other directories: relative paths must be resolved on the driver."""
    root = config.storage_path or str(storage.gleam_home() / "train")
    init = config.init
    if init is not None and not registry.is_registry_uri(init):
        init = storage.normalize(init)
    corpus = storage.normalize(config.corpus)
    encoder = config.encoder
    if encoder is not None and encoder.pretrained not in (None, HF_CACHE, HUB):
        encoder = encoder.model_copy(update={"pretrained": storage.normalize(encoder.pretrained)})
    update = {"corpus": corpus, "init": init, "storage_path": storage.normalize(root), "encoder": encoder}
    return config.model_copy(update=update)


def run_dir(config: TrainConfig) -> str:
    root = config.storage_path or str(storage.gleam_home() / "train")
    return storage.join(storage.normalize(root), config.name)


def run_training(config: TrainConfig) -> TrainResult:
    """Train one phase on Ray Train and register the encoder; see the module docstring for re-runs."""
    config = absolute_paths(config)
    folder = run_dir(config)
    state_uri = storage.join(folder, STATE_FILE)
    # random batching is the old behaviour: runs made before `batching` existed keep their fingerprint
    digest = config_hash(
        config, exclude={"tracking"} | ({"batching"} if config.batching == BatchingConfig() else set())
    )
    previous = storage.read_json(state_uri) if storage.exists(state_uri) else None
    if previous is not None and previous.get("config_hash") != digest:
        raise TrainRunExistsError(
            f"{folder} holds run {config.name!r} made with another config; choose another name "
            "(runs are never overwritten)"
        )
    if previous is not None and previous.get("status") == "complete":  # before the Hub: works offline
        log.info("run %s is already complete: nothing to do", config.name)
        return TrainResult(**{**previous["result"], "already_done": True})
    pretrained = stage_pretrained(config.encoder)  # checked here, not in a worker; `hub` fetched here, once
    corpus = open_corpus(config.corpus)
    weights_by_modality = {m: w for m, w in config.weights().items() if w > 0}
    modalities = sorted(weights_by_modality)
    counts = train_pair_counts(corpus, modalities)
    too_few = {m: n for m, n in counts.items() if n < config.scaling.workers}
    if too_few:
        raise NoTrainingPairsError(
            f"corpus {corpus.uri} has too few train pairs for {config.scaling.workers} worker(s): {too_few}"
        )
    total_steps = plan_steps(config, sum(counts.values()))
    planned = config.batching.mode != "random"
    refs = train_pair_refs(corpus, modalities) if planned else {}
    first_neighbours = initial_neighbours(config, corpus, refs) if planned else None  # errors before Ray
    config = config.model_copy(update={"encoder": pretrained.spec})  # hub -> the stored file (digest: hub)

    from gleam.cluster import init_ray

    init_ray()
    partitions = max(1, min(64, sum(counts.values()) // 20_000 + 1))  # join partitions: ~20k pairs each
    pairs = pair_datasets(corpus, "train", modalities, partitions=partitions)
    datasets = pairs
    tags = {"gleam.phase": config.phase, "gleam.train_run": config.name, "gleam.corpus": corpus.uri}
    tags.update(pretrained.tags)  # hub weights: repo, file, commit, sha256, store URI
    resume = previous.get("run_id") if previous else None
    with job_run("train", config, config.tracking, tags=tags, resume_run_id=resume) as run:
        state = {"config_hash": digest, "run_id": run.run_id, "status": "running", "total_steps": total_steps}
        storage.write_json(state_uri, state)
        run.log_params({"total_steps": total_steps, **{f"train_pairs.{m}": n for m, n in counts.items()}})
        if planned:

            def fit_segment(plan_sets: dict[str, Any], plan: dict[str, int]) -> tuple[dict[str, Any], str]:
                segment = _fit(config, plan_sets, total_steps, run.run_id, plan)
                return segment.metrics or {}, _checkpoint_uri(folder, segment.checkpoint.path)

            reported, checkpoint_uri = run_segments(
                config, corpus, pairs, refs, first_neighbours, total_steps, folder, fit_segment
            )
        else:
            result = _fit(config, datasets, total_steps, run.run_id)
            reported, checkpoint_uri = result.metrics or {}, _checkpoint_uri(folder, result.checkpoint.path)
        encoder_uri = storage.join(checkpoint_uri, ENCODER_DIR)
        encoder, spec, info = weights.load(encoder_uri)
        metrics = {k: float(v) for k, v in reported.items() if isinstance(v, (int, float))}
        version = None
        if config.registry.enabled:
            version = weights.register(
                encoder,
                spec,
                run,
                name=config.registry.name,
                aliases=config.aliases(),
                extra={"phase": config.phase, "run": config.name, "steps": total_steps, "metrics": metrics},
            )
        done = TrainResult(
            name=config.name,
            phase=config.phase,
            steps=total_steps,
            checkpoint=checkpoint_uri,
            encoder_uri=encoder_uri,
            run_id=run.run_id,
            model_name=config.registry.name if version is not None else None,
            model_version=version,
            aliases=config.aliases() if version is not None else [],
            metrics=metrics,
        )
        run.set_tags({"gleam.encoder_fingerprint": info.fingerprint})
        storage.write_json(state_uri, {**state, "status": "complete", "result": asdict(done)})
    return done


def _fit(
    config: TrainConfig,
    datasets: dict[str, Any],
    total_steps: int,
    run_id: str | None,
    plan: dict[str, int] | None = None,
) -> Any:
    """One TorchTrainer run: the whole phase, or with `plan` one segment of planned batches (its workers
    read the unsplit `plan-<rank>` datasets up to step plan["stop"])."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    scaling = config.scaling
    gpu = use_gpu(scaling.use_gpu)
    resources = {"CPU": scaling.cpus_per_worker, **({"GPU": 1} if gpu else {})}
    options = DataConfig.default_ingest_options()
    options.preserve_order = True  # deterministic shards: a resumed worker skips to the exact row
    fs, path = storage.resolve(config.storage_path or str(storage.gleam_home() / "train"))
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "total_steps": total_steps,
            "plan": plan,
            "run_id": run_id,
            "tracking_uri": tracking_uri() if run_id else None,
            "settings": runtime_env.resolved(),  # workers run in another folder: see gleam.runtime_env
        },
        scaling_config=ScalingConfig(
            num_workers=scaling.workers, use_gpu=gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=config.name,
            storage_path=path,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=config.checkpoint.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=config.checkpoint.keep),
        ),
        datasets=datasets,
        dataset_config=DataConfig(
            datasets_to_split="all" if plan is None else [],
            execution_options=options,
            enable_shard_locality=False,
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray Train raises once max_failures is spent
        raise TrainingFailedError(f"training run {config.name!r} failed: {exc}") from exc
    if result.error is not None:
        raise TrainingFailedError(f"training run {config.name!r} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise TrainingFailedError(f"training run {config.name!r} finished without a checkpoint")
    return result


def _checkpoint_uri(folder: str, path: str) -> str:
    """Ray Train reports checkpoint paths without a scheme; give S3 ones theirs back."""
    if folder.startswith("s3://") and not path.startswith("s3://"):
        return "s3://" + path.lstrip("/")
    return storage.normalize(path)
