"""The fine-tuning job's config: which set, which base model, LoRA or full, and how to schedule it.

Defaults follow the public Qwen2.5-VL fine-tuning recipes (jobs/configs/finetune_explainer.yaml says
which default comes from where). Everything is validated here, on the driver, before Ray starts.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gleam.config import NAME_PATTERN, StrictModel, TrackingConfig
from gleam.explain.mllm import DEFAULT_MODEL
from gleam.explain.prompts import LANGUAGES
from gleam.train_sections import Betas, CheckpointSection, ScalingSection

SplitName = Literal["train", "val", "test"]

# The language model's linear layers only. Qwen2.5-VL's vision blocks have gate/up/down_proj too, so a
# plain list of names would adapt the vision tower as well: the negative look-ahead keeps it out.
LANGUAGE_MODEL_LINEARS = (
    r"^(?!.*\bvisual\b).*\blayers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)$"
)


class LoraSection(StrictModel):
    """peft LoRA on the language model (the recipes' `lora_target: all` minus the vision tower)."""

    r: int = Field(16, ge=1, le=1024, description="rank")
    alpha: float = Field(32.0, gt=0, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = Field(
        LANGUAGE_MODEL_LINEARS,
        description="a regex matched against full module names, or a list of module-name suffixes",
    )

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        elif not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError("give a regex or a non-empty list of module names")
        return value


class OptimizerSection(StrictModel):
    """AdamW with linear warm-up, then cosine decay to `min_lr_ratio * lr`."""

    lr: float = Field(1e-4, gt=0, description="peak learning rate (1e-4 for LoRA; ~1e-5 for full)")
    weight_decay: float = Field(0.01, ge=0)
    betas: Betas = (0.9, 0.999)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of the steps spent warming up")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="the cosine ends at lr * min_lr_ratio")
    grad_clip: float | None = Field(1.0, gt=0, description="max global gradient norm; null: none")


class RegistrySection(StrictModel):
    enabled: bool = True
    name: str = Field("gleam-x", pattern=NAME_PATTERN, description="registered model name")
    alias: str | None = Field(
        "challenger", pattern=NAME_PATTERN, description="alias moved to the new version"
    )
    save: Literal["adapter", "merged"] = Field(
        "adapter",
        description="adapter: the LoRA files + the base's reference and fingerprint; merged: full weights",
    )


class FinetuneConfig(StrictModel):
    """Fine-tune GLEAM-X's MLLM on an explanation set with Ray Train."""

    name: str = Field(pattern=NAME_PATTERN, description="run: <storage_path>/<name>; the same name resumes")
    explanation_set: str = Field(min_length=1, description="store URI of an explanation set (manifest.json)")
    train_split: SplitName = "train"
    val_split: SplitName | None = Field(None, description="rank 0 logs the answer loss on it at checkpoints")
    base_model: str = Field(
        DEFAULT_MODEL, min_length=1, description="a local folder, a cached HF repo id, or models:/name@alias"
    )
    languages: list[str] = Field(default_factory=lambda: list(LANGUAGES), min_length=1)
    share_evidence: bool = Field(
        True, description="quote the row's similarity/rank/threshold/margin, as serving does by default"
    )
    min_pixels: int = Field(56 * 56, ge=28 * 28, description="processor lower bound on an image's pixels")
    max_pixels: int = Field(512 * 512, ge=28 * 28, description="processor upper bound on an image's pixels")
    method: Literal["lora", "full"] = "lora"
    lora: LoraSection = Field(default_factory=LoraSection)
    freeze_vision: bool = Field(True, description="full fine-tuning keeps the vision tower and merger fixed")
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    steps: int | None = Field(None, ge=1, description="optimiser steps (give steps or epochs)")
    epochs: float | None = Field(None, gt=0, description="passes over the train samples")
    batch_size: int = Field(1, ge=1, description="samples per worker per micro-batch")
    grad_accumulation: int = Field(8, ge=1, description="micro-batches per optimiser step")
    gradient_checkpointing: bool = True
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    seed: int = Field(0, ge=0, lt=2**31)
    shuffle_buffer: int = Field(64, ge=0, description="rows in each worker's local shuffle buffer")
    storage_path: str | None = Field(
        None, description="Ray Train storage, local or s3://; default .gleam/finetune"
    )
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    registry: RegistrySection = Field(default_factory=RegistrySection)
    log_every: int = Field(1, ge=1, description="steps between MLflow metric logs on rank 0")
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig(experiment="gleam-x"))

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        from gleam.explain.prompts import normalize_language

        return list(dict.fromkeys(normalize_language(v) for v in value))

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneConfig:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} is above max_pixels {self.max_pixels}")
        if self.val_split is not None and self.val_split == self.train_split:
            raise ValueError(f"val_split is the train split {self.train_split!r}")
        if self.method == "full" and self.registry.save == "adapter":
            raise ValueError("registry.save: adapter needs method: lora (a full fine-tune registers merged)")
        return self

    @property
    def samples_per_step(self) -> int:
        """Samples one optimiser step consumes on all workers together."""
        return self.batch_size * self.grad_accumulation * self.scaling.workers
