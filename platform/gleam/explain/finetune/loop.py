"""The per-worker loop Ray Train runs for a GLEAM-X fine-tune: LoRA (peft) or full, DDP, resumable.

Everything a worker needs arrives in one JSON-able payload (the validated config with absolute paths,
the base model's pinned reference and fingerprint, the step count, the MLflow run, the driver's
locations), so a restarted worker group rebuilds the same loop. It resumes from
`ray.train.get_checkpoint()` after a worker failure (FailureConfig) and when the same run is submitted
again. A checkpoint holds, with no pickle anywhere:

    adapter/adapter_config.json, adapter/adapter_model.safetensors   LoRA (peft save_pretrained), or
    model/config.json, model/*.safetensors                            full weights (save_pretrained)
    trainer.json, trainer.safetensors     optimiser and scheduler state, and the step (`state.py`)
    data/rank-<r>.json                    this worker's shard position (epoch, rows consumed), world
                                          size and process id

Dropout draws are seeded by (seed, rank, step), so a resumed step repeats exactly. Rank 0 alone logs
to MLflow (loss, lr, grad_norm, tokens_per_s, epoch; val_loss at checkpoints with a val split).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gleam import runtime_env
from gleam.explain.finetune.config import FinetuneConfig
from gleam.explain.finetune.samples import chat, collate, encode
from gleam.explain.finetune.state import load_trainer_state, save_trainer_state
from gleam.resources import train_precision
from gleam.shard_stream import ShardStream
from gleam.tracking import StepLogger

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
TRAINER_STATE = "trainer"
DATA_DIR = "data"
_VISION = re.compile(r"(^|\.)visual\.")


# --- model -----------------------------------------------------------------------------------------------


def load_processor(path: str | Path, config: FinetuneConfig) -> Any:
    """The base's processor with the config's pixel bounds (what training sees, and what is registered)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
    processor.image_processor.size = {"shortest_edge": config.min_pixels, "longest_edge": config.max_pixels}
    return processor


def lora_config(config: FinetuneConfig) -> Any:
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules
    )


def lora_targets(model: torch.nn.Module, config: FinetuneConfig) -> list[str]:
    """The module names LoRA would adapt; a ValueError when none, or vision layers while freeze_vision."""
    from peft.tuners.tuners_utils import check_target_module_exists

    peft_config = lora_config(config)
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and check_target_module_exists(peft_config, name)
    ]
    if not names:
        raise ValueError(f"lora.target_modules {config.lora.target_modules!r} matches no linear layer")
    vision = [name for name in names if _VISION.search(name)]
    if vision and config.freeze_vision:
        raise ValueError(
            f"lora.target_modules matches {len(vision)} vision-tower layers (e.g. {vision[0]}) while "
            "freeze_vision is true; restrict the pattern to the language model or set freeze_vision: false"
        )
    return names


def build_model(
    base_path: Path, config: FinetuneConfig, precision: str, resume_dir: Path | None
) -> torch.nn.Module:
    """The trainable model: the base with a LoRA adapter (new, or the checkpoint's), or full weights
    (the base's, or the checkpoint's) with the vision tower frozen unless asked otherwise."""
    from transformers import AutoModelForImageTextToText

    lora = config.method == "lora"
    # LoRA: the frozen base may sit in bf16 (peft keeps the adapter in fp32); full: fp32 master weights
    dtype = torch.bfloat16 if lora and precision == "bf16" else torch.float32
    source = resume_dir / MODEL_DIR if resume_dir is not None and not lora else base_path
    model = AutoModelForImageTextToText.from_pretrained(
        str(source), dtype=dtype, local_files_only=True, use_safetensors=True
    )
    if lora:
        from peft import PeftModel, get_peft_model

        lora_targets(model, config)
        if resume_dir is not None:
            model = PeftModel.from_pretrained(model, str(resume_dir / ADAPTER_DIR), is_trainable=True)
        else:
            model = get_peft_model(model, lora_config(config))
    elif config.freeze_vision:
        for name, param in model.named_parameters():
            if _VISION.search(name):
                param.requires_grad_(False)
    if config.gradient_checkpointing:  # non-reentrant: works with frozen inputs (LoRA) and DDP
        kwargs = {"use_reentrant": False}
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5
        if enable is not None:
            enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False  # no generation while training: the cache only costs memory
    return model.train()


def build_optimizer(model: torch.nn.Module, config: FinetuneConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW on the trainable parameters (no weight decay on biases and norms), warm-up then cosine."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    opt = config.optimizer
    groups = [
        {"params": decay, "weight_decay": opt.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=opt.lr, betas=opt.betas)
    warmup = math.ceil(opt.warmup_ratio * total_steps)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, warmup, total_steps, min_lr_rate=opt.min_lr_ratio
    )
    return optimizer, scheduler


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


# --- data ------------------------------------------------------------------------------------------------


def encode_rows(rows: list[Mapping[str, Any]], processor: Any, config: FinetuneConfig) -> dict[str, Any]:
    """Rows of the sample dataset -> one padded batch (prompt as served, loss on the answer only)."""
    from gleam.explain.mllm import fit_image

    encoded = []
    for row in rows:
        evidence = json.loads(row["evidence"]) if row["evidence"] else None
        messages = chat(row["modality"], row["language"], evidence, row["answer"])
        images = [fit_image(row[key], config.max_pixels) for key in ("query_image", "tile_image")]
        encoded.append(encode(processor, messages, images))
    return collate(encoded, processor.tokenizer.pad_token_id)


def val_loss(
    model: torch.nn.Module, shard: Any, processor: Any, config: FinetuneConfig, device: Any
) -> float:
    """Mean answer loss over the whole validation set (rank 0), in eval mode, without gradients."""
    inner = unwrap(model)
    inner.eval()
    total, batches = 0.0, 0
    try:
        with torch.no_grad():
            for batch in shard.iter_batches(batch_size=config.batch_size, batch_format="pyarrow"):
                inputs = {
                    k: v.to(device) for k, v in encode_rows(batch.to_pylist(), processor, config).items()
                }
                with autocast(device, train_precision(config.precision, device.type)):
                    total += float(inner(**inputs).loss)
                batches += 1
    finally:
        inner.train()
    return total / max(1, batches)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- checkpoints -----------------------------------------------------------------------------------------


def save_checkpoint(
    folder: Path,
    rank: int,
    world: int,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    step: int,
    stream: ShardStream,
    config: FinetuneConfig,
) -> None:
    if rank == 0:
        inner = unwrap(model)
        target = folder / (ADAPTER_DIR if config.method == "lora" else MODEL_DIR)
        inner.save_pretrained(str(target), safe_serialization=True)
        save_trainer_state(folder, TRAINER_STATE, optimizer, scheduler, step)
    data = folder / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    position = {"pid": os.getpid(), "world_size": world, "step": step, **stream.position()}
    (data / f"rank-{rank}.json").write_text(json.dumps(position))


def restore_position(folder: Path, rank: int, world: int) -> dict[str, int]:
    """This rank's (epoch, consumed), or the start of the epoch when the world size changed."""
    path = folder / DATA_DIR / f"rank-{rank}.json"
    if not path.exists():
        return {"epoch": 0, "consumed": 0}
    position = json.loads(path.read_text())
    if int(position["world_size"]) != world:
        log.warning(
            "checkpoint was written by %s workers, now %s: the interrupted epoch restarts",
            position["world_size"],
            world,
        )
        return {"epoch": int(position["epoch"]), "consumed": 0}
    return {"epoch": int(position["epoch"]), "consumed": int(position["consumed"])}


# --- the loop --------------------------------------------------------------------------------------------


def finetune_worker(payload: dict[str, Any]) -> None:
    """Ray Train's `train_loop_per_worker` for a GLEAM-X fine-tune."""
    import ray.train
    import ray.train.torch

    from gleam.explain.mllm import MLLMError, folder_fingerprint, resolve_source

    runtime_env.apply(payload.get("settings"))  # before anything reads the store, the registry or a cache
    config = FinetuneConfig.model_validate(payload["config"])
    total_steps = int(payload["total_steps"])
    base = resolve_source(payload["base_reference"])
    if folder_fingerprint(base.path) != payload["base_fingerprint"]:
        raise MLLMError(
            f"base model {payload['base_reference']} at {base.path} is not the one the driver checked"
        )
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    precision = train_precision(config.precision, device.type)

    checkpoint = ray.train.get_checkpoint()
    torch.manual_seed(config.seed)  # the same initial adapter on every rank and every run
    with tempfile.TemporaryDirectory(prefix="gleam-x-resume-") as tmp:
        resume_dir = Path(checkpoint.to_directory(tmp)) if checkpoint else None
        model = build_model(base.path, config, precision, resume_dir).to(device)
        optimizer, scheduler = build_optimizer(model, config, total_steps)
        step, position = 0, {"epoch": 0, "consumed": 0}
        if resume_dir is not None:
            step = load_trainer_state(resume_dir, TRAINER_STATE, optimizer, scheduler)
            position = restore_position(resume_dir, rank, world)
    processor = load_processor(base.path, config)
    stream = ShardStream(
        ray.train.get_dataset_shard("train"),
        config.seed,
        rank,
        config.shuffle_buffer,
        **position,
        what="samples",
        read_batch=16,
    )
    val_shard = ray.train.get_dataset_shard("val") if config.val_split and rank == 0 else None
    trained = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model
    logger = StepLogger(payload.get("run_id"), payload.get("tracking_uri"), rank)
    if step:
        log.info("rank %d resumes at step %d of %d", rank, step, total_steps)
    while step < total_steps:
        started = time.perf_counter()
        torch.manual_seed((config.seed * 1_000_003 + rank * 7_919 + step) % 2**63)  # dropout, resumable
        loss, tokens = torch.zeros((), device=device), 0
        for micro in range(config.grad_accumulation):
            rows = [next(stream) for _ in range(config.batch_size)]
            batch = {k: v.to(device) for k, v in encode_rows(rows, processor, config).items()}
            tokens += int(batch["attention_mask"].sum())
            last = micro == config.grad_accumulation - 1
            sync = contextlib.nullcontext() if world == 1 or last else trained.no_sync()
            with sync:
                with autocast(device, precision):
                    output = trained(**batch)
                (output.loss / config.grad_accumulation).backward()
            loss += output.loss.detach() / config.grad_accumulation
        grad_norm = clip(model, config.optimizer.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if world > 1:
            torch.distributed.all_reduce(loss)
            loss /= world
        seconds = max(time.perf_counter() - started, 1e-9)
        stats = {
            "loss": float(loss),
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "tokens_per_s": tokens * world / seconds,
            "epoch": float(stream.epoch),
        }
        if step % config.log_every == 0 or step == total_steps:
            logger.log(stats, step)
        if step == total_steps or step % config.checkpoint.every == 0:
            metrics = {"step": step, "loss": stats["loss"]}
            if val_shard is not None:
                metrics["val_loss"] = val_loss(trained, val_shard, processor, config, device)
                logger.log({"val_loss": metrics["val_loss"]}, step)
            with tempfile.TemporaryDirectory(prefix="gleam-x-ckpt-") as folder:
                save_checkpoint(
                    Path(folder), rank, world, trained, optimizer, scheduler, step, stream, config
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def clip(model: torch.nn.Module, max_norm: float | None) -> float:
    """Clip the trainable parameters' gradient norm (when configured); the norm before clipping."""
    params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else float("inf"))
    return float(norm)
