"""A small prepared world for training tests, and a train config builder with test-sized defaults."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.corpus.prepare import prepare
from gleam.corpus.world import WorldConfig, generate_world
from gleam.training.config import TrainConfig

SIZES = {m: [64, 64] for m in ("satellite", "drone", "streetmap", "ground")} | {"panorama": [128, 64]}


def world_corpus(root: Path, locations: int = 24, seed: int = 5) -> str:
    """`locations` places in every modality at 64 px; splits by location hash (about 70/15/15)."""
    generate_world(
        WorldConfig(output=str(root / "raw"), locations=locations, tile_size=64, query_size=64, seed=seed)
    )
    overrides = [
        "name=train",
        f"output={root / 'prepared'}",
        "sources.0.kind=world",
        f"sources.0.uri={root / 'raw'}",
        "batch_size=32",
        "tracking.enabled=false",
        "split.val_fraction=0.15",
        "split.test_fraction=0.15",
        *(f"sizes.{m}={json.dumps(s)}" for m, s in SIZES.items()),
    ]
    return prepare(load_config(PrepareConfig, None, overrides)).corpus_uri


def train_fields(corpus: str, storage: Path | str, experiment: str, **fields: object) -> dict[str, object]:
    """A 2-worker, 6-step phase on a tiny random-init encoder; `fields` override any key."""
    base: dict[str, object] = {
        "name": f"run-{uuid.uuid4().hex[:6]}",
        "corpus": corpus,
        "modalities": ["drone", "panorama"],
        "encoder": {"backbone": "test_convnext", "embed_dim": 16, "image_sizes": SIZES},
        "steps": 6,
        "batch_size": 4,
        "loader_threads": 2,
        "shuffle_buffer": 8,
        "storage_path": str(storage),
        "scaling": {"workers": 2, "cpus_per_worker": 0.5},
        "checkpoint": {"every": 3, "max_failures": 2},
        "validation": {"split": "val", "batch_size": 16},
        "registry": {"name": f"gleam-c-test-{uuid.uuid4().hex[:6]}"},
        "tracking": {"experiment": experiment},
    }
    return {**base, **fields}


def train_config(corpus: str, storage: Path | str, experiment: str, **fields: object) -> TrainConfig:
    return TrainConfig.model_validate(train_fields(corpus, storage, experiment, **fields))


def committed_checkpoint(snapshot: dict | None) -> tuple[int, str] | None:
    """(step, folder name) of the latest checkpoint in a Ray Train checkpoint-manager snapshot."""
    latest = (snapshot or {}).get("latest_checkpoint_result")
    if not latest:
        return None
    return int(latest["metrics"]["step"]), latest["checkpoint_dir_name"]


def tiny_encoder(folder: Path, seed: int = 0, embed_dim: int = 16, size: int = 64) -> str:
    """A random-init `test_convnext` encoder saved as safetensors at `folder` (a different seed, a
    different fingerprint); returns the folder."""
    import torch

    from gleam.model import weights
    from gleam.model.encoder import GleamEncoder
    from gleam.model.spec import EncoderSpec

    torch.manual_seed(seed)
    spec = EncoderSpec.tiny("test_convnext", size=size, embed_dim=embed_dim)
    weights.save(GleamEncoder(spec), spec, str(folder))
    return str(folder)


def collapsed_encoder(
    folder: Path, seed: int = 0, embed_dim: int = 16, size: int = 64, scale: float = 0.01
) -> str:
    """Like `tiny_encoder`, but collapsed: the backbone's head norm has its weight scaled by `scale` and a
    constant bias, so every image maps to nearly one vector (0: exactly one). Returns the folder."""
    import torch

    from gleam.model import weights
    from gleam.model.encoder import GleamEncoder
    from gleam.model.spec import EncoderSpec

    torch.manual_seed(seed)
    spec = EncoderSpec.tiny("test_convnext", size=size, embed_dim=embed_dim)
    encoder = GleamEncoder(spec)
    norm = encoder.backbone.head.norm
    with torch.no_grad():
        norm.weight.mul_(scale)
        norm.bias.copy_(torch.linspace(-1.0, 1.0, norm.bias.numel()))
    weights.save(encoder, spec, str(folder))
    return str(folder)
