"""The train job's config: a GLEAM-C phase is data (modalities, mixture, init, schedule), not a code path.

Phase 1 and phase 2 are two YAML files of this one model (jobs/configs/train_phase1.yaml and
train_phase2.yaml). It lives in the training package rather than gleam.config because it embeds the
encoder spec and the augmentation settings of gleam.model, which themselves build on gleam.config.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gleam.config import NAME_PATTERN, StrictModel, TrackingConfig
from gleam.corpus.schema import Modality
from gleam.model.spec import EncoderSpec
from gleam.model.transforms import AugmentConfig
from gleam.train_sections import Betas, CheckpointSection, ScalingSection

SplitName = Literal["train", "val", "test"]


class OptimizerConfig(StrictModel):
    """AdamW with linear warm-up then cosine decay to `min_lr_ratio * lr` (Sample4Geo's schedule)."""

    lr: float = Field(1e-4, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.01, ge=0)
    betas: Betas = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 to lr")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="the cosine ends at lr * min_lr_ratio")


class LossConfig(StrictModel):
    temperature: float = Field(0.07, gt=0, description="initial logit scale = 1 / temperature")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    max_logit_scale: float = Field(100.0, gt=1)


class ValidationSection(StrictModel):
    every: int = Field(0, ge=0, description="steps between validations on rank 0; 0: after the last step")
    split: SplitName = "val"
    batch_size: int = Field(64, ge=1)
    enabled: bool = True


class RegisterSection(StrictModel):
    enabled: bool = True
    name: str = Field("gleam-c", pattern=NAME_PATTERN, description="registered model name")
    aliases: list[str] | None = Field(None, description="default: [<phase>]")
    champion: bool = Field(False, description="also move the `champion` alias to the new version")


class BatchingConfig(StrictModel):
    """How the pairs of a step are chosen (docs/training.md, "Batch composition").

    `random` is the seeded shuffle of every modality's shard. `gps` and `similarity` compose each global
    batch from neighbourhoods of places (Sample4Geo's hard negatives): an anchor place, then up to
    `neighbours - 1` of its neighbours, so the contrastive loss must tell near places apart.
    """

    mode: Literal["random", "gps", "similarity"] = Field(
        "random", description="random (seeded shuffle) | gps (nearest places) | similarity (mined)"
    )
    neighbours: int = Field(
        8, ge=2, description="gps/similarity: places of one neighbourhood in a global batch (anchor included)"
    )
    candidates: int = Field(
        16, ge=1, description="neighbours are drawn from each place's `candidates` nearest / most similar"
    )
    radius_m: float | None = Field(
        None, gt=0, description="gps: only places within this distance (metres); null: the nearest ones"
    )
    mine_every_steps: int | None = Field(
        None, ge=1, description="similarity: re-mine after this many steps; null: every epoch"
    )
    first: Literal["random", "gps"] = Field(
        "random", description="similarity: how batches are composed before the first mining"
    )

    @model_validator(mode="after")
    def _meaningful(self) -> BatchingConfig:
        uses_gps = self.mode == "gps" or (self.mode == "similarity" and self.first == "gps")
        if self.radius_m is not None and not uses_gps:
            raise ValueError(
                "batching.radius_m applies to GPS neighbours: mode gps, or similarity with first gps"
            )
        if self.mine_every_steps is not None and self.mode != "similarity":
            raise ValueError("batching.mine_every_steps applies to mode similarity only")
        if self.first != "random" and self.mode != "similarity":  # not fields_set: dumps hold every field
            raise ValueError("batching.first applies to mode similarity only")
        return self

    def uses_gps(self) -> bool:
        """Whether GPS neighbour lists are needed (for every batch, or until the first mining)."""
        return self.mode == "gps" or (self.mode == "similarity" and self.first == "gps")


class TrainConfig(StrictModel):
    """One GLEAM-C training phase on Ray Train."""

    name: str = Field(
        pattern=NAME_PATTERN,
        description="run name: checkpoints go to <storage_path>/<name>; the same name resumes",
    )
    phase: str = Field("phase1", pattern=NAME_PATTERN, description="registry alias and MLflow tag")
    corpus: str = Field(description="store URI of a prepared corpus (trained on its train split)")
    modalities: list[Modality] = Field(min_length=1, description="query modalities of this phase")
    mixture: dict[Modality, float] | None = Field(
        None, description="share of each modality in a batch; default uniform (balanced sampling)"
    )
    encoder: EncoderSpec | None = Field(None, description="a new encoder; leave empty when `init` is set")
    init: str | None = Field(
        None,
        description="start from saved weights: a folder or store URI, models:/gleam-c@phase1, or "
        "<checkpoint>/encoder of another run",
    )
    image_sizes: dict[Modality, tuple[int, int]] | None = Field(
        None, description="(width, height) per modality for this phase; default: the encoder's"
    )
    freeze: list[str] = Field(
        default_factory=list,
        description="fnmatch patterns of frozen parameter names, e.g. 'backbone.stem*'",
    )
    steps: int | None = Field(None, ge=1, description="optimiser steps (give steps or epochs)")
    epochs: float | None = Field(None, gt=0, description="passes over the phase's train pairs")
    batch_size: int = Field(32, ge=2, description="pairs per worker per step (global = workers x this)")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    grad_clip: float | None = Field(1.0, gt=0, description="max global gradient norm; null: no clipping")
    compile: bool = Field(False, description="torch.compile the model")
    compile_backend: str = Field("inductor", min_length=1, description="torch.compile backend")
    seed: int = Field(0, ge=0, lt=2**31)
    shuffle_buffer: int = Field(256, ge=0, description="rows of Ray Data's local shuffle buffer per modality")
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    loader_threads: int = Field(4, ge=1, description="threads decoding and augmenting a worker's batch")
    storage_path: str | None = Field(
        None, description="Ray Train storage, local or s3://; default .gleam/train"
    )
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    validation: ValidationSection = Field(default_factory=ValidationSection)
    registry: RegisterSection = Field(default_factory=RegisterSection)
    log_every: int = Field(1, ge=1, description="steps between MLflow metric logs on rank 0")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("modalities")
    @classmethod
    def _query_modalities(cls, value: list[Modality]) -> list[Modality]:
        return Modality.checked_queries(value) or []

    @field_validator("mixture")
    @classmethod
    def _weights(cls, value: dict[Modality, float] | None) -> dict[Modality, float] | None:
        if value is None:
            return None
        bad = {m.value: w for m, w in value.items() if not (w >= 0 and math.isfinite(w))}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        if not any(w > 0 for w in value.values()):
            raise ValueError("at least one weight must be positive")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        if self.encoder is not None and self.init is not None:
            raise ValueError("give encoder (a new model) or init (saved weights to start from), not both")
        if self.mixture is not None:
            extra = sorted(m.value for m in self.mixture if m not in self.modalities)
            if extra:
                raise ValueError(f"mixture names modalities that are not in `modalities`: {extra}")
        return self

    def weights(self) -> dict[str, float]:
        """Mixture weights by modality name: the configured ones, else uniform over the modalities."""
        if self.mixture is None:
            return {m.value: 1.0 for m in self.modalities}
        return {m.value: float(self.mixture.get(m, 0.0)) for m in self.modalities}

    def aliases(self) -> list[str]:
        names = list(self.registry.aliases) if self.registry.aliases is not None else [self.phase]
        if self.registry.champion and "champion" not in names:
            names.append("champion")
        return names
