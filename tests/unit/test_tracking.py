"""Job runs land in MLflow (the sqlite store of the test session), once, from rank 0 only."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from gleam.config import TrackingConfig
from gleam.corpus.world import WorldConfig
from gleam.tracking import NullRun, flatten, job_run


def test_run_logs_params_metrics_and_artifacts(mlflow_client, experiment_name: str) -> None:
    config = WorldConfig(output="/tmp/w", locations=12)
    with job_run("world", config, TrackingConfig(experiment=experiment_name), tags={"extra": 1}) as run:
        run.log_metrics({"a": 1.5, "nested": {"b": 2}, "text": "ignored"}, step=3)
        run.log_dict({"k": "v"}, "meta/info.json")
        run.log_image(Image.new("RGB", (4, 4)), "sheets/x.png")
    data = mlflow_client.get_run(run.run_id).data
    assert data.params["locations"] == "12" and data.params["output"] == "/tmp/w"
    assert data.metrics == {"a": 1.5, "nested.b": 2.0}
    assert data.tags["gleam.job"] == "world" and data.tags["extra"] == "1"
    files = {f.path for f in mlflow_client.list_artifacts(run.run_id, "meta")}
    assert files == {"meta/info.json"}
    path = mlflow_client.download_artifacts(run.run_id, "meta/info.json")
    with open(path) as handle:
        assert json.load(handle) == {"k": "v"}
    assert mlflow_client.get_run(run.run_id).info.status == "FINISHED"


def test_failed_job_marks_the_run_failed(mlflow_client, experiment_name: str) -> None:
    with (
        pytest.raises(RuntimeError),
        job_run("x", tracking=TrackingConfig(experiment=experiment_name)) as run,
    ):
        raise RuntimeError("boom")
    assert mlflow_client.get_run(run.run_id).info.status == "FAILED"


def test_non_zero_rank_and_disabled_tracking_log_nothing(
    monkeypatch: pytest.MonkeyPatch, mlflow_client, experiment_name: str
) -> None:
    monkeypatch.setenv("RANK", "1")
    with job_run("x", tracking=TrackingConfig(experiment=experiment_name)) as run:
        assert isinstance(run, NullRun)
        run.log_metrics({"a": 1})
    monkeypatch.setenv("RANK", "0")
    with job_run("x", tracking=TrackingConfig(enabled=False, experiment=experiment_name)) as run:
        assert isinstance(run, NullRun)
    assert mlflow_client.get_experiment_by_name(experiment_name) is None


def test_flatten() -> None:
    assert flatten({"a": {"b": 1}, "l": [{"x": 1}, {"y": 2}], "v": [1, 2]}) == {
        "a.b": 1,
        "l.0.x": 1,
        "l.1.y": 2,
        "v": [1, 2],
    }
