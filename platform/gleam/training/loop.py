"""The per-worker training loop that Ray Train runs on every worker of a GLEAM-C phase.

Everything a worker needs arrives in one JSON-able payload (the validated config, the step count, the
MLflow run), so a restarted worker group rebuilds the same loop. The loop resumes from
`ray.train.get_checkpoint()` when there is one: after a worker failure (FailureConfig) and when the
same run is submitted again. A checkpoint holds:

    encoder/            the encoder in the saved-weights format (so `init: <checkpoint>/encoder` works)
    trainer.{json,safetensors}   optimiser, scheduler and loss state, and the step
    data/rank-<r>.json           this worker's shard positions and mixture credit
    data/rank-<r>-pool.parquet   the pairs waiting in its mixture look-ahead pools

With planned batches (`batching.mode` gps or similarity) the driver runs the phase in segments, each a
`fit` up to step payload["plan"]["stop"]; a worker then reads its own `plan-<rank>` dataset, already in
step order (gleam.training.plan), and its data position is just the step.

Random draws are functions of (seed, rank, step) (see feed.py), so the step restores them too. Rank 0
alone logs to MLflow; every rank writes its own data position into the same checkpoint (Ray Train
merges the workers' folders) and calls `ray.train.report` at the same steps (a barrier).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from gleam import runtime_env
from gleam.model import weights
from gleam.model.encoder import GleamEncoder
from gleam.model.loss import SymmetricInfoNCE
from gleam.model.spec import EncoderSpec
from gleam.resources import train_precision
from gleam.shard_stream import ShardStream
from gleam.state_io import load_optimizer, load_state, save_state
from gleam.tracking import StepLogger
from gleam.training.config import TrainConfig
from gleam.training.feed import BatchBuilder, seed_step
from gleam.training.mixture import MixtureSampler, PlannedSampler
from gleam.training.step import ContrastiveModel, train_step, unwrap_model

log = logging.getLogger(__name__)

ENCODER_DIR = "encoder"
TRAINER_STATE = "trainer"
DATA_DIR = "data"


# --- model, optimiser, schedule -----------------------------------------------------------------------


def build_encoder(config: TrainConfig, checkpoint_dir: Path | None) -> tuple[GleamEncoder, EncoderSpec]:
    """The encoder to train: from the checkpoint when resuming, else `init`, else a new `encoder` spec."""
    if checkpoint_dir is not None:
        encoder, spec, _ = weights.load(str(checkpoint_dir / ENCODER_DIR))
        return encoder.train(), spec
    if config.init is not None:
        encoder, spec, _ = weights.load(config.init)
    else:
        spec = config.encoder or EncoderSpec()
        encoder = GleamEncoder(spec)
    if config.image_sizes:
        sized = EncoderSpec.model_validate(
            {**spec.model_dump(mode="json"), "image_sizes": {**spec.image_sizes, **config.image_sizes}}
        )
        resized = GleamEncoder(sized, load_pretrained=False)
        try:
            resized.load_state_dict(encoder.state_dict(), strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"image_sizes: {spec.backbone} weights do not fit the new sizes: {exc}"
            ) from None
        encoder, spec = resized, sized
    return encoder.train(), spec


def freeze(encoder: nn.Module, patterns: list[str]) -> int:
    """Set requires_grad=False on parameters matching any pattern; returns how many were frozen."""
    names = [name for name, _ in encoder.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ValueError(f"freeze: pattern {pattern!r} matches no parameter (e.g. {names[:3]})")
    frozen = 0
    for name, param in encoder.named_parameters():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            param.requires_grad_(False)
            frozen += 1
    return frozen


def build_optimizer(model: ContrastiveModel, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; biases, norms and the logit scale (all < 2-D) get no weight decay, as in CLIP."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    opt = config.optimizer
    groups = [
        {"params": decay, "weight_decay": opt.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=opt.lr, betas=opt.betas)


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """LR multiplier of step s (0-based): linear warm-up to 1, then cosine to min_ratio at the last step."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


# --- checkpoints ---------------------------------------------------------------------------------------


def save_checkpoint(
    folder: Path,
    rank: int,
    model: ContrastiveModel,
    spec: EncoderSpec,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    streams: Mapping[str, ShardStream],
    sampler: MixtureSampler | PlannedSampler,
    world: int,
    extra: Mapping[str, Any],
) -> None:
    if rank == 0:
        weights.save(model.encoder, spec, str(folder / ENCODER_DIR), extra={"step": step, **extra})
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "loss": model.loss_fn.state_dict(),
        }
        save_state(state, folder, TRAINER_STATE)
    data = folder / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    sampler_state = sampler.state()
    position = {
        "pid": os.getpid(),  # which process wrote it: shows restarts after a worker failure
        "world_size": world,
        "step": step,
        "streams": {m: s.position() for m, s in streams.items()},
        "credit": sampler_state["credit"],
        **{k: sampler_state[k] for k in ("segment", "last_batch") if k in sampler_state},
    }
    (data / f"rank-{rank}.json").write_text(json.dumps(position))
    rows = [row for pool in sampler_state["pools"].values() for row in pool]
    if rows:
        pq.write_table(pa.Table.from_pylist(rows), data / f"rank-{rank}-pool.parquet")


def restore_trainer(
    folder: Path, model: ContrastiveModel, optimizer: torch.optim.Optimizer, scheduler: Any
) -> int:
    state = load_state(folder, TRAINER_STATE)
    model.loss_fn.load_state_dict(state["loss"])
    load_optimizer(optimizer, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


def restore_data(folder: Path, rank: int, world: int) -> tuple[dict[str, Any], dict[str, list[dict]]] | None:
    """This rank's positions and pools, or None when the checkpoint was made with another world size."""
    path = folder / DATA_DIR / f"rank-{rank}.json"
    if not path.exists():
        return None
    position = json.loads(path.read_text())
    if int(position["world_size"]) != world:
        log.warning(
            "checkpoint was written by %s workers, now %s: shard positions do not carry over, the "
            "interrupted epoch restarts",
            position["world_size"],
            world,
        )
        return None
    pools: dict[str, list[dict]] = {}
    pool_path = folder / DATA_DIR / f"rank-{rank}-pool.parquet"
    if pool_path.exists():
        for row in pq.read_table(pool_path).to_pylist():
            pools.setdefault(row["modality"], []).append(row)
    return position, pools


def validation_metrics(model: ContrastiveModel, spec: EncoderSpec, config: TrainConfig) -> dict[str, float]:
    """Rank 0's retrieval metrics on the validation split, flattened as `val.<modality>.R_at_1`, and the
    spread of the validation tiles' embeddings as `val.spread.mean_cosine` / `val.spread.effective_rank`
    (`gleam.retrieval.spread`: a collapsing encoder shows there before R@k says anything)."""
    from gleam.corpus.reader import open_corpus
    from gleam.evaluation.metric_log import mlflow_metric_name
    from gleam.evaluation.split import EmptySplitError, split_metrics

    encoder = model.encoder
    was_training = encoder.training
    encoder.eval()
    try:
        metrics, gallery, spread = split_metrics(
            open_corpus(config.corpus),
            encoder,
            spec,
            config.validation.split,
            [m.value for m in config.modalities],
            config.validation.batch_size,
        )
    except EmptySplitError as exc:
        log.warning("validation skipped: %s", exc)
        return {}
    finally:
        encoder.train(was_training)
    flat = {"val.gallery_size": float(gallery), **spread.metrics("val.spread.")}
    for modality, values in metrics.items():
        for name in ("R@1", "R@5", "R@10", "AP"):
            if name in values:
                flat[f"val.{mlflow_metric_name(modality, name)}"] = values[name]
    return flat


# --- the loop --------------------------------------------------------------------------------------------


def train_worker(payload: dict[str, Any]) -> None:
    """Ray Train's `train_loop_per_worker` for GLEAM-C."""
    import ray.train
    import ray.train.torch

    runtime_env.apply(payload.get("settings"))  # before anything reads the store or the registry
    config = TrainConfig.model_validate(payload["config"])
    total_steps = int(payload["total_steps"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    precision = train_precision(config.precision, device.type)

    checkpoint = ray.train.get_checkpoint()
    torch.manual_seed(config.seed)  # the same initial weights on every run (DDP broadcasts rank 0's)
    with tempfile.TemporaryDirectory(prefix="gleam-resume-") as tmp:
        resume_dir = Path(checkpoint.to_directory(tmp)) if checkpoint else None
        encoder, spec = build_encoder(config, resume_dir)
        if config.freeze:
            freeze(encoder, config.freeze)
        loss_fn = SymmetricInfoNCE(
            config.loss.temperature, config.loss.max_logit_scale, config.loss.label_smoothing
        )
        model = ContrastiveModel(encoder, loss_fn, channels_last=spec.channels_last).to(device)
        optimizer = build_optimizer(model, config)
        schedule = warmup_cosine(total_steps, config.optimizer.warmup_steps, config.optimizer.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        step, data_state = 0, None
        if resume_dir is not None:
            step = restore_trainer(resume_dir, model, optimizer, scheduler)
            data_state = restore_data(resume_dir, rank, world)

    plan = payload.get("plan")
    stop = int(plan["stop"]) if plan else total_steps
    streams, sampler = _feed(config, rank, step, plan, data_state)
    builder = BatchBuilder(spec, config.augment, config.seed, rank, config.loader_threads)
    trained: nn.Module = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model
    if config.compile:
        trained = torch.compile(trained, backend=config.compile_backend)
    logger = StepLogger(payload.get("run_id"), payload.get("tracking_uri"), rank)
    extra = {"phase": config.phase, "run": config.name}
    if step:
        log.info("rank %d resumes at step %d of %d", rank, step, total_steps)
    stats: dict[str, float] = {}

    def report(val: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory(prefix="gleam-ckpt-") as folder:
            save_checkpoint(
                Path(folder), rank, unwrap_model(trained), spec, optimizer, scheduler,
                step, streams, sampler, world, extra,
            )  # fmt: skip
            metrics = {"step": step, "loss": stats.get("loss", math.nan), **val}
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    try:
        if step >= stop:  # a re-run of a segment that had finished: its checkpoint again, nothing else
            report({})
        while step < stop:
            started = time.perf_counter()
            batch = {
                m: b.to(device, spec.channels_last)
                for m, b in builder.build(sampler.next_batch(), step).items()
            }
            seed_step(config.seed, rank, step)
            stats = train_step(
                trained,
                optimizer,
                batch,
                precision=precision,
                grad_clip=config.grad_clip,
                scheduler=scheduler,
            )
            step += 1
            stats["pairs_per_s"] = stats["pairs"] * world / max(time.perf_counter() - started, 1e-9)
            if plan is None:  # planned streams hold one segment: their epoch says nothing
                stats.update({f"epoch.{m}": float(s.epoch) for m, s in streams.items()})
            if step % config.log_every == 0 or step == total_steps:
                logger.log(stats, step)
            last = step == total_steps
            validate = config.validation.enabled and (
                last or (config.validation.every and step % config.validation.every == 0)
            )
            val = validation_metrics(unwrap_model(trained), spec, config) if validate and rank == 0 else {}
            logger.log(val, step)
            if last or step == stop or step % config.checkpoint.every == 0:
                report(val)
    finally:
        builder.close()


def _feed(
    config: TrainConfig, rank: int, step: int, plan: Mapping[str, int] | None, data_state: Any
) -> tuple[dict[str, ShardStream], MixtureSampler | PlannedSampler]:
    """The worker's row streams and sampler: its shards through the mixture (random batches), or its
    planned rows of this segment, skipped to `step` (gps / similarity batches)."""
    import ray.train

    if plan is not None:
        if step < plan["start"]:
            raise RuntimeError(f"resumed at step {step}, before this segment's first step {plan['start']}")
        planned = ShardStream(
            ray.train.get_dataset_shard(f"plan-{rank}"),
            config.seed,
            rank,
            consumed=(step - plan["start"]) * config.batch_size,
            what="planned pairs",
        )
        return {"plan": planned}, PlannedSampler(planned, config.batch_size, step, plan["segment"])
    weights_by_modality = config.weights()
    positions = data_state[0]["streams"] if data_state else {}
    streams = {
        m: ShardStream(
            ray.train.get_dataset_shard(m),
            config.seed,
            rank,
            config.shuffle_buffer,
            **positions.get(m, {"epoch": 0, "consumed": 0}),
            what=f"{m} pairs",
        )
        for m, w in weights_by_modality.items()
        if w > 0
    }
    sampler = MixtureSampler(streams, {m: weights_by_modality[m] for m in streams}, config.batch_size)
    if data_state:
        sampler.restore(data_state[0]["credit"], data_state[1])
    return streams, sampler
