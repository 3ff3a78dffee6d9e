"""GLEAM-C training on the session's real Ray cluster: 2 workers, checkpoints, registration, re-runs.

Elsewhere: phase 2 starting from phase 1's registered version is run by the demo (tests/e2e/test_demo.py);
a killed GLEAM-C job resubmitted resumes from its S3 checkpoint (tests/e2e/test_train_job.py); a worker
killed mid-run is restarted from the last checkpoint in the GLEAM-X fine-tune's test, on the same
machinery (Ray Train's FailureConfig, gleam.shard_stream positions, gleam.state_io trainer state)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gleam.model import weights
from gleam.training.phases import TrainRunExistsError, run_training
from tests.support.training import train_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def corpus(prepared_world) -> str:
    return prepared_world(24)


def logged_steps(client, run_id: str, key: str = "loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_two_workers_train_checkpoint_register_and_rerun(
    corpus: str, tmp_path: Path, experiment_name: str, mlflow_client
) -> None:
    config = train_config(corpus, tmp_path / "train", experiment_name)
    result = run_training(config)

    assert result.steps == 6 and result.model_version is not None and not result.already_done
    assert logged_steps(mlflow_client, result.run_id) == [1, 2, 3, 4, 5, 6]
    run = mlflow_client.get_run(result.run_id)
    assert run.data.tags["gleam.phase"] == "phase1" and run.data.params["total_steps"] == "6"
    assert {"val.drone.R_at_1", "val.panorama.AP", "logit_scale", "lr", "grad_norm"} <= set(run.data.metrics)
    assert {"val.spread.mean_cosine", "val.spread.effective_rank"} <= set(run.data.metrics)
    # both workers wrote their data position into the same (merged) checkpoint
    checkpoint = Path(result.checkpoint)
    assert sorted(p.name for p in (checkpoint / "data").glob("rank-*.json")) == ["rank-0.json", "rank-1.json"]
    position = json.loads((checkpoint / "data" / "rank-1.json").read_text())
    assert position["world_size"] == 2 and position["step"] == 6
    assert set(position["streams"]) == {"drone", "panorama"}
    assert not list(checkpoint.rglob("*.pt")) and not list(checkpoint.rglob("*.pkl"))
    # the registered version is loadable by alias and is the checkpoint's encoder
    _, _, info = weights.load(f"models:/{config.registry.name}@phase1")
    assert info.model_version == result.model_version
    assert info.fingerprint == weights.read_metadata(result.encoder_uri)["fingerprint"]

    again = run_training(config)  # the same config again: done already, nothing new
    assert again.already_done and again.model_version == result.model_version
    versions = mlflow_client.search_model_versions(f"name='{config.registry.name}'")
    assert len(versions) == 1
    with pytest.raises(TrainRunExistsError, match="another config"):
        run_training(config.model_copy(update={"steps": 7}))
