"""Retrieval metrics as MLflow names them: `drone.R_at_1`, shared by the evaluation job and training's
validation so one metric has one name in every run."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from gleam.tracking import JobRun

log = logging.getLogger(__name__)
# MLflow metric names allow neither "@" nor "%": R@1 -> R_at_1, R@1% -> R_at_1pct
_MLFLOW_NAME = str.maketrans({"@": "_at_", "%": "pct"})


def mlflow_metric_name(modality: str, metric: str) -> str:
    """`drone`, `R@1` -> `drone.R_at_1` (MLflow rejects `@` and `%` in metric names)."""
    return f"{modality}.{metric.translate(_MLFLOW_NAME)}"


def log_modality(run: JobRun, modality: str, metrics: Mapping[str, float], prefix: str = "") -> None:
    """One modality's metrics to `run` under `prefix` (NaN: nothing evaluated, left out), and to the log."""
    run.log_metrics(
        {prefix + mlflow_metric_name(modality, k): v for k, v in metrics.items() if not math.isnan(v)}
    )
    log.info("%s%s: %s", prefix, modality, ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
