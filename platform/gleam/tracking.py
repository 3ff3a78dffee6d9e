"""MLflow tracking for jobs: one run per job, logged from one process only.

The embedded default is `sqlite:///.gleam/mlflow.db` with artifacts under `.gleam/mlartifacts`, so a
laptop needs no server; `MLFLOW_TRACKING_URI` points the same code at a team server. Inside Ray Train
only rank 0 logs: every other rank gets a run object whose methods do nothing, so training code never
branches on rank itself.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gleam import runtime_env
from gleam.config import TrackingConfig

log = logging.getLogger(__name__)
_MAX_PARAM_CHARS = 6000


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` or the sqlite default, absolute (see gleam.runtime_env)."""
    return runtime_env.tracking_uri()


def default_artifact_root() -> str | None:
    """Artifacts of a sqlite store go beside the db file; a tracking server decides for itself."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()


def configure() -> str:
    """Point mlflow at the platform's tracking store (idempotent) and return the URI."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def world_rank() -> int:
    """This process's rank in a Ray Train run (0 outside of one)."""
    try:
        import ray.train

        return int(ray.train.get_context().get_world_rank())
    except Exception:
        return int(os.environ.get("RANK", "0"))


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists of mappings get their index in the key."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                flat.update(flatten(item, f"{name}.{i}."))
        else:
            flat[name] = value
    return flat


class JobRun:
    """The MLflow run of one job. Methods are safe to call often and never raise on bad metric values."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        clean = {k: str(v)[:_MAX_PARAM_CHARS] for k, v in flatten(params).items()}
        items = list(clean.items())
        for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            mlflow.log_params(dict(items[start : start + 100]))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        numeric = {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float))}
        if numeric:
            mlflow.log_metrics(numeric, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dict(self, payload: Any, artifact_file: str) -> None:
        import mlflow

        mlflow.log_dict(json.loads(json.dumps(payload, default=str)), artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, Path(artifact_file).name)
            path.write_bytes(data)
            parent = str(Path(artifact_file).parent)
            mlflow.log_artifact(str(path), artifact_path=None if parent == "." else parent)

    def log_image(self, image: Any, artifact_file: str) -> None:
        """Log a PIL image as PNG."""
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        self.log_bytes(buffer.getvalue(), artifact_file)


class NullRun(JobRun):
    """The run of a process that must not log (non-zero rank, or tracking disabled)."""

    def __init__(self) -> None:
        super().__init__(None)

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_dict(self, payload: Any, artifact_file: str) -> None:
        pass

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        pass


def ensure_experiment(name: str) -> str:
    import mlflow

    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    try:
        return mlflow.create_experiment(name, artifact_location=default_artifact_root())
    except Exception:  # created concurrently by another job
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@contextmanager
def job_run(
    job: str,
    config: BaseModel | None = None,
    tracking: TrackingConfig | None = None,
    tags: Mapping[str, Any] | None = None,
    resume_run_id: str | None = None,
) -> Iterator[JobRun]:
    """Open the MLflow run of a job, log its config as params, and close it FAILED on an exception.

    `resume_run_id` reopens an earlier run of the same job (a re-submitted training run continues
    its step series there instead of starting a second, partial run).
    """
    tracking = tracking or TrackingConfig()
    if not tracking.enabled or world_rank() != 0:
        yield NullRun()
        return
    import mlflow

    from gleam import __version__

    configure()
    experiment_id = ensure_experiment(tracking.experiment or f"gleam-{job}")
    all_tags = {"gleam.job": job, "gleam.version": __version__, **tracking.tags, **(tags or {})}
    if resume_run_id is not None and not _run_exists(resume_run_id):
        log.warning("MLflow run %s is not in %s: starting a new run", resume_run_id, tracking_uri())
        resume_run_id = None
    if resume_run_id is not None:
        opened = mlflow.start_run(run_id=resume_run_id)
    else:
        opened = mlflow.start_run(experiment_id=experiment_id, run_name=tracking.run_name, tags=all_tags)
    with opened as run:
        handle = JobRun(run.info.run_id)
        if config is not None and resume_run_id is None:
            handle.log_params(config.model_dump(mode="json", exclude={"tracking"}))
        yield handle


def _run_exists(run_id: str) -> bool:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        return False
    return True


class StepLogger:
    """Per-step metrics to the driver's MLflow run from a Ray Train worker: rank 0 logs, the other ranks
    hold a no-op, so the training loops need not branch on rank. Non-finite values are dropped (MLflow
    refuses them and a NaN step must not end the run; the loss guard deals with it)."""

    def __init__(self, run_id: str | None, tracking_uri: str | None, rank: int) -> None:
        self.client = None
        self.run_id = run_id
        if run_id and tracking_uri and rank == 0:
            from mlflow import MlflowClient

            self.client = MlflowClient(tracking_uri)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self.client is None or not metrics:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
        self.client.log_batch(self.run_id, metrics=batch)
