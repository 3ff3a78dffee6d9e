"""What Ray work asks for and runs with: whether a trainer uses GPUs and in what precision, and how a pool
of model-running actors is sized.

One rule for every pool that runs a model over batches (the index build's tile embedder, the explanation
set's query embedder and local-model teacher, the explainer evaluation's MLLM): a model costs far more to
load than a batch to run, so these are Ray Data actor pools, never tasks. With `num_gpus` unset, an actor
takes one GPU when the cluster has GPUs and none otherwise; with `actors` unset, there is one actor per
GPU it can have, or a single one on a CPU cluster (a second CPU actor would only halve each one's threads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


def cluster_gpus() -> float:
    """GPUs in the connected Ray cluster (0 without any)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def use_gpu(setting: bool | Literal["auto"]) -> bool:
    """A trainer's `use_gpu`: "auto" is True exactly when the cluster has GPUs."""
    return cluster_gpus() > 0 if setting == "auto" else bool(setting)


def train_precision(precision: str, device_type: str) -> str:
    """A trainer's precision setting on a device: "auto" is bf16 autocast on CUDA, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    return precision


@dataclass(frozen=True)
class PoolSize:
    actors: int
    num_gpus: float  # per actor; 0 on CPU

    def cpu_precision(self, precision: str) -> str:
        """An encoder's precision setting on this pool: "auto" means fp32 where actors have no GPU."""
        return "fp32" if not self.num_gpus and precision == "auto" else precision


def size_pool(num_gpus: float | None, actors: int | None, gpus: float | None = None) -> PoolSize:
    """The pool for a config's `num_gpus` and `actors` (None or 0: decided here) on a cluster with
    `gpus` GPUs (None: ask the connected cluster)."""
    gpus = cluster_gpus() if gpus is None else gpus
    per_actor = num_gpus if num_gpus is not None else (1.0 if gpus else 0.0)
    count = actors or (max(1, int(gpus // per_actor)) if per_actor else 1)
    return PoolSize(count, per_actor)


def pool_options(
    size: PoolSize, num_cpus: float, batch_size: int, constructor_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments of `Dataset.map_batches(ActorClass, **options)` for an Arrow-batch pool."""
    import ray.data

    return {
        "fn_constructor_kwargs": constructor_kwargs,
        "batch_size": batch_size,
        "batch_format": "pyarrow",
        "compute": ray.data.ActorPoolStrategy(size=size.actors),
        "num_gpus": size.num_gpus or None,
        "num_cpus": num_cpus,
    }
