"""The fine-tuning job's driver: checks, re-run rules, the TorchTrainer, and registration as `gleam-x`.

Before Ray starts, the driver opens the explanation set, resolves the base model offline (a folder, the
local Hugging Face cache, or the registry: `gleam.explain.mllm.resolve_source`) and fingerprints it,
checks the LoRA targets on a weightless (meta-device) copy of the model, and turns the set's rows into
samples. Workers get the base's pinned reference and fingerprint and check it themselves. Run state
lives in `<storage_path>/<name>/gleam-finetune.json` (config hash, MLflow run, result once done), so:

- a worker failure: Ray Train restarts the group from the latest checkpoint (FailureConfig);
- the same config again after a crash: workers resume from the latest checkpoint, the metrics continue
  in the same MLflow run;
- the same config after success: nothing to do, the earlier result is returned (`already_done`);
- another config under the same name: refused (FinetuneRunExistsError), nothing is overwritten.

After the last step the final checkpoint is registered as a new version of `gleam-x` (`registry.name`)
with the alias: the adapter with the base's reference and fingerprint, or merged weights
(`gleam.explain.adapters`).
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gleam import registry, runtime_env, storage
from gleam.config import config_hash
from gleam.errors import ConfigError, RefusedError, TrainingError
from gleam.explain import adapters
from gleam.explain.explanation_set import open_explanation_set
from gleam.explain.finetune.config import FinetuneConfig
from gleam.explain.finetune.data import SplitSamples, sample_datasets, split_samples
from gleam.explain.finetune.loop import ADAPTER_DIR, MODEL_DIR, finetune_worker, load_processor, lora_targets
from gleam.explain.mllm import ModelSource, folder_fingerprint, resolve_source
from gleam.resources import use_gpu
from gleam.tracking import job_run, tracking_uri

log = logging.getLogger(__name__)

STATE_FILE = "gleam-finetune.json"
JOB = "finetune-explainer"


class FinetuneRunExistsError(RefusedError, RuntimeError):
    """A run of this name exists in the storage path with another config."""


class NotEnoughSamplesError(RefusedError, ValueError):
    """Fewer train samples than one micro-batch on every worker."""


class FinetuneFailedError(TrainingError, RuntimeError):
    """Ray Train gave up (more failures than allowed); the latest checkpoint is kept for a re-run."""


@dataclass(frozen=True)
class FinetuneResult:
    name: str
    steps: int
    samples: int
    checkpoint: str
    run_id: str | None
    base_reference: str
    base_fingerprint: str
    kind: str  # adapter | merged
    model_name: str | None = None
    model_version: int | None = None
    alias: str | None = None
    fingerprint: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    already_done: bool = False

    @property
    def registry_uri(self) -> str | None:
        if self.model_name is None or self.model_version is None:
            return None
        return str(registry.ModelURI(self.model_name, version=self.model_version))


def default_storage() -> str:
    return str(storage.gleam_home() / "finetune")


def absolute_paths(config: FinetuneConfig) -> FinetuneConfig:
    """Workers run in other directories: paths are resolved here, before the config is hashed."""
    base = config.base_model
    if not registry.is_registry_uri(base) and (base.startswith((".", "~", "/")) or Path(base).exists()):
        base = storage.normalize(base)
    update = {
        "explanation_set": storage.normalize(config.explanation_set),
        "storage_path": storage.normalize(config.storage_path or default_storage()),
        "base_model": base,
    }
    return config.model_copy(update=update)


def run_dir(config: FinetuneConfig) -> str:
    return storage.join(storage.normalize(config.storage_path or default_storage()), config.name)


def plan_steps(config: FinetuneConfig, samples: int) -> int:
    """`steps`, or enough optimiser steps for `epochs` passes over the train samples."""
    if config.steps is not None:
        return config.steps
    assert config.epochs is not None
    return max(1, math.ceil(config.epochs * samples / config.samples_per_step))


def check_targets(config: FinetuneConfig, base: Path) -> None:
    """LoRA's target modules, checked on a weightless copy of the base (meta device: no memory, seconds)."""
    if config.method != "lora":
        return
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    with torch.device("meta"):
        skeleton = AutoModelForImageTextToText.from_config(
            AutoConfig.from_pretrained(base, local_files_only=True)
        )
    try:
        lora_targets(skeleton, config)
    except ValueError as exc:
        raise ConfigError(f"invalid config: {exc}") from None


def run_finetune(config: FinetuneConfig) -> FinetuneResult:
    """Fine-tune on Ray Train and register the result; see the module docstring for re-runs."""
    config = absolute_paths(config)
    folder = run_dir(config)
    state_uri = storage.join(folder, STATE_FILE)
    digest = config_hash(config, exclude={"tracking"})
    previous = storage.read_json(state_uri) if storage.exists(state_uri) else None
    if previous is not None and previous.get("config_hash") != digest:
        raise FinetuneRunExistsError(
            f"{folder} holds fine-tuning run {config.name!r} made with another config; choose another name "
            "(runs are never overwritten)"
        )
    if previous is not None and previous.get("status") == "complete":
        log.info("run %s is already complete: nothing to do", config.name)
        return FinetuneResult(**{**previous["result"], "already_done": True})

    explanations = open_explanation_set(config.explanation_set)
    base = resolve_source(config.base_model)
    if base.is_adapter:
        raise RefusedError(f"base_model {config.base_model} is an adapter: give the model it adapts")
    check_targets(config, base.path)
    base_fingerprint = folder_fingerprint(base.path)
    train = split_samples(explanations, config.train_split, config.languages, config.share_evidence)
    if train.count < config.scaling.workers * config.batch_size:
        raise NotEnoughSamplesError(
            f"{train.count} {config.train_split} samples cannot give {config.scaling.workers} worker(s) a "
            f"batch of {config.batch_size}"
        )
    val = (
        split_samples(explanations, config.val_split, config.languages, config.share_evidence)
        if config.val_split
        else None
    )
    total_steps = plan_steps(config, train.count)

    from gleam.cluster import init_ray

    init_ray()
    by_split = sample_datasets([train, *([val] if val is not None else [])], explanations.corpus_uri)
    datasets = {"train": by_split[train.split], **({"val": by_split[val.split]} if val is not None else {})}
    tags = {"gleam.finetune_run": config.name, "gleam.explanation_set": explanations.uri}
    resume = previous.get("run_id") if previous else None
    with job_run(JOB, config, config.tracking, tags=tags, resume_run_id=resume) as run:
        state = {"config_hash": digest, "run_id": run.run_id, "status": "running", "total_steps": total_steps}
        storage.write_json(state_uri, state)
        run.log_params(_counts(total_steps, base, base_fingerprint, train, val))
        fitted = _fit(config, datasets, total_steps, run.run_id, base, base_fingerprint)
        checkpoint_uri = _checkpoint_uri(folder, fitted.checkpoint.path)
        metrics = {k: float(v) for k, v in (fitted.metrics or {}).items() if isinstance(v, (int, float))}
        done = FinetuneResult(
            name=config.name,
            steps=total_steps,
            samples=train.count,
            checkpoint=checkpoint_uri,
            run_id=run.run_id,
            base_reference=adapters.base_reference(base),
            base_fingerprint=base_fingerprint,
            kind="adapter" if config.registry.save == "adapter" else "merged",
            metrics=metrics,
        )
        if config.registry.enabled:
            if run.run_id is None:
                raise RefusedError("registering the fine-tune needs MLflow tracking: enable tracking")
            done = _register(config, fitted.checkpoint, done, base, run.run_id, explanations.uri)
            run.set_tags({"gleam.model_version": done.model_version, "gleam.fingerprint": done.fingerprint})
        storage.write_json(state_uri, {**state, "status": "complete", "result": asdict(done)})
    return done


def _counts(
    total_steps: int, base: ModelSource, fingerprint: str, train: SplitSamples, val: SplitSamples | None
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "total_steps": total_steps,
        "base.reference": adapters.base_reference(base),
        "base.fingerprint": fingerprint,
        "samples.train": train.count,
        "pairs.train": train.pairs,
        **{f"skipped.train.{language}": n for language, n in train.skipped.items()},
    }
    if val is not None:
        params.update({"samples.val": val.count, "pairs.val": val.pairs})
    return params


def _fit(
    config: FinetuneConfig,
    datasets: dict[str, Any],
    total_steps: int,
    run_id: str | None,
    base: ModelSource,
    base_fingerprint: str,
) -> Any:
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    scaling = config.scaling
    gpu = use_gpu(scaling.use_gpu)
    resources = {"CPU": scaling.cpus_per_worker, **({"GPU": 1} if gpu else {})}
    options = DataConfig.default_ingest_options()
    options.preserve_order = True  # deterministic shards: a resumed worker skips to the exact row
    fs, path = storage.resolve(config.storage_path or default_storage())
    trainer = TorchTrainer(
        finetune_worker,
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "total_steps": total_steps,
            "base_reference": adapters.base_reference(base),
            "base_fingerprint": base_fingerprint,
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
            datasets_to_split=["train"], execution_options=options, enable_shard_locality=False
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray Train raises once max_failures is spent
        raise FinetuneFailedError(f"fine-tuning run {config.name!r} failed: {exc}") from exc
    if result.error is not None:
        raise FinetuneFailedError(f"fine-tuning run {config.name!r} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise FinetuneFailedError(f"fine-tuning run {config.name!r} finished without a checkpoint")
    return result


def _register(
    config: FinetuneConfig,
    checkpoint: Any,
    done: FinetuneResult,
    base: ModelSource,
    run_id: str,
    set_uri: str,
) -> FinetuneResult:
    """The final checkpoint as a new version of `registry.name`, with the alias moved to it."""
    extra = {
        "method": config.method,
        "lora": config.lora.model_dump(mode="json") if config.method == "lora" else None,
        "processor": {"min_pixels": config.min_pixels, "max_pixels": config.max_pixels},
        "training": {
            "run": config.name,
            "steps": done.steps,
            "samples": done.samples,
            "explanation_set": set_uri,
            "languages": config.languages,
            "share_evidence": config.share_evidence,
            "mlflow_run_id": run_id,
        },
    }
    name, alias = config.registry.name, config.registry.alias
    with tempfile.TemporaryDirectory(prefix="gleam-x-register-") as tmp:
        local = Path(checkpoint.to_directory(str(Path(tmp) / "checkpoint")))
        processor = load_processor(base.path, config)
        if config.method == "lora":
            adapter = adapters.assemble_adapter(
                local / ADAPTER_DIR, processor, Path(tmp) / "adapter", base, done.base_fingerprint, extra
            )
            if config.registry.save == "adapter":
                version, fingerprint = adapters.register_adapter(adapter, run_id, name, alias)
            else:
                merged = adapters.merge_adapter(adapter, Path(tmp) / "merged")
                version, fingerprint = adapters.register_merged(merged, run_id, name, alias)
        else:
            model = local / MODEL_DIR
            processor.save_pretrained(str(model))
            adapters.write_manifest(model, "merged", base, done.base_fingerprint, extra)
            version, fingerprint = adapters.register_merged(model, run_id, name, alias)
    log.info("registered %s version %s (%s)", name, version, done.kind)
    return FinetuneResult(
        **{
            **asdict(done),
            "model_name": name,
            "model_version": version,
            "alias": alias,
            "fingerprint": fingerprint,
        }
    )


def _checkpoint_uri(folder: str, path: str) -> str:
    """Ray Train reports checkpoint paths without a scheme; give S3 ones theirs back."""
    if folder.startswith("s3://") and not path.startswith("s3://"):
        return "s3://" + path.lstrip("/")
    return storage.normalize(path)
