"""The served world of the serve tests: a prepared world, an encoder trained on it with Ray Train and
registered as `champion`, and its published index; plus the Serve application started from
serve/config.yaml on a free port."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gleam.config import load_config
from gleam.index.config import IndexBuildConfig
from gleam.index.job import build_index
from gleam.training.phases import run_training
from tests.support.training import train_config, world_corpus

INDEX = "world"


@dataclass(frozen=True)
class ServedWorld:
    corpus: str
    store: str
    encoder: str  # models:/<name>@champion
    model_name: str
    index: str = INDEX


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def index_config(world: ServedWorld, *extra: str) -> IndexBuildConfig:
    overrides = [
        f"name={world.index}",
        f"corpus={world.corpus}",
        f"encoder={world.encoder}",
        f"store={world.store}",
        "tracking.experiment=serve-tests",
        "embed.batch_size=16",
        "embed.num_cpus=0.25",  # beside a running application (0.55 CPU) on the 2-CPU test cluster
        *extra,
    ]
    return load_config(IndexBuildConfig, None, overrides)


def served_world(root: Path) -> ServedWorld:
    """24 places; a 6-step phase-2-style run on every modality, registered with `champion`; its index."""
    corpus = world_corpus(root / "world", locations=24)
    name = f"gleam-c-serve-{uuid.uuid4().hex[:6]}"
    config = train_config(
        corpus,
        root / "train",
        "serve-tests",
        modalities=["drone", "streetmap", "panorama", "ground"],
        registry={"name": name, "champion": True},
    )
    run_training(config)
    world = ServedWorld(
        corpus=corpus, store=str(root / "store"), encoder=f"models:/{name}@champion", model_name=name
    )
    build_index(index_config(world))
    return world


def serve_args(world: ServedWorld, **extra: Any) -> dict[str, Any]:
    return {
        "encoder": world.encoder,
        "index": world.index,
        "store": world.store,
        "poll_seconds": 0.5,
        **extra,
    }
