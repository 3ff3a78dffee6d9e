"""`gleam models show|alias` on the real (sqlite) MLflow registry: promote, roll back, clear errors."""

from __future__ import annotations

import uuid
from pathlib import Path

from typer.testing import CliRunner

from gleam import registry
from gleam_cli.models import models_app


def _register_versions(mlflow_client, experiment_name: str, tmp_path: Path, name: str, count: int) -> None:
    experiment = mlflow_client.create_experiment(experiment_name)
    run = mlflow_client.create_run(experiment)
    (tmp_path / "weights.txt").write_text("tiny")
    for index in range(count):
        registry.register_folder(
            tmp_path,
            ["weights.txt"],
            run.info.run_id,
            name,
            artifact_path=f"encoder-{index}",
            fingerprint=f"fp{index:02d}" * 8,
            aliases=["champion"] if index == 0 else (),
        )


def test_promote_then_roll_back(mlflow_client, experiment_name: str, tmp_path: Path) -> None:
    name = f"gleam-c-{uuid.uuid4().hex[:8]}"
    _register_versions(mlflow_client, experiment_name, tmp_path, name, count=3)
    runner = CliRunner()

    shown = runner.invoke(models_app, ["show", name])
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.output.splitlines() if "fp0" in line]
    assert [line.split()[1] for line in lines] == ["3", "2", "1"]  # newest first
    assert "champion" in next(line for line in lines if line.split()[1] == "1")

    promoted = runner.invoke(models_app, ["alias", name, "champion", "3"])
    assert promoted.exit_code == 0, promoted.output
    assert "-> version 3 (was 1)" in promoted.output
    assert f"gleam models alias {name} champion 1" in promoted.output
    assert registry.resolve(f"models:/{name}@champion").version == 3

    rolled_back = runner.invoke(models_app, ["alias", name, "champion", "1"])
    assert rolled_back.exit_code == 0, rolled_back.output
    assert registry.resolve(f"models:/{name}@champion").version == 1


def test_unknown_version_or_model_is_one_line(mlflow_client, experiment_name: str, tmp_path: Path) -> None:
    name = f"gleam-c-{uuid.uuid4().hex[:8]}"
    _register_versions(mlflow_client, experiment_name, tmp_path, name, count=1)
    runner = CliRunner()

    missing_version = runner.invoke(models_app, ["alias", name, "champion", "9"])
    assert missing_version.exit_code == 3
    assert "has no version 9 (versions: 1)" in missing_version.output
    assert "Traceback" not in missing_version.output
    assert registry.resolve(f"models:/{name}@champion").version == 1  # nothing moved

    missing_model = runner.invoke(models_app, ["show", "no-such-model"])
    assert missing_model.exit_code == 3
    assert "no registered model 'no-such-model'" in missing_model.output
