"""The served world of the serve tests: a prepared world, a tiny encoder registered as `champion` (random
init: serving needs a registered encoder, not a trained one; training is tested on its own, and the demo
serves a trained one), and its published index; plus the Serve application started from
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
from tests.support.training import tiny_encoder

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


def served_world(root: Path, corpus: str) -> ServedWorld:
    """A prepared `corpus`; a tiny encoder registered with `champion` from an MLflow run; its index."""
    from mlflow import MlflowClient

    from gleam.model import weights

    name = f"gleam-c-serve-{uuid.uuid4().hex[:6]}"
    encoder, spec, _ = weights.load(tiny_encoder(root / "encoder"))
    # a client, not mlflow.set_experiment: that exports MLFLOW_EXPERIMENT_ID to every job a later test starts
    client = MlflowClient()
    found = client.get_experiment_by_name("serve-tests")
    experiment = found.experiment_id if found else client.create_experiment("serve-tests")
    run_id = client.create_run(experiment, run_name="serve-tests-encoder").info.run_id
    weights.register(encoder, spec, run_id, name=name, aliases=["champion"])
    client.set_terminated(run_id)
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
