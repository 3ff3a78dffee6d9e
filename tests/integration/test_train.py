"""GLEAM-C training on the session's real Ray cluster: 2 workers, checkpoints, a killed worker, re-runs."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from gleam.model import weights
from gleam.training.phases import TrainResult, TrainRunExistsError, run_training
from tests.support.training import committed_checkpoint, train_config, world_corpus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def corpus(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    return world_corpus(tmp_path_factory.mktemp("train-world"))


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


def test_phase2_starts_from_phase1_in_the_registry(
    corpus: str, tmp_path: Path, experiment_name: str, mlflow_client
) -> None:
    phase1 = train_config(corpus, tmp_path / "train", experiment_name, steps=2, modalities=["panorama"])
    first = run_training(phase1)
    init = f"models:/{phase1.registry.name}@phase1"
    phase2 = train_config(
        corpus,
        tmp_path / "train",
        experiment_name,
        phase="phase2",
        encoder=None,
        init=init,
        steps=2,
        modalities=["drone", "streetmap", "panorama", "ground"],
        mixture={"drone": 2, "streetmap": 1, "panorama": 1, "ground": 1},
        registry={"name": phase1.registry.name, "champion": True},
    )
    second = run_training(phase2)
    assert second.model_version == first.model_version + 1 and second.aliases == ["phase2", "champion"]
    model = mlflow_client.get_registered_model(phase1.registry.name)
    assert {k: int(v) for k, v in model.aliases.items()} == {"phase1": 1, "phase2": 2, "champion": 2}
    # phase 2 trained from phase 1's weights: its first loss is far below a random encoder's
    history = {m.step: m.value for m in mlflow_client.get_metric_history(second.run_id, "loss")}
    assert set(history) == {1, 2}
    assert {"epoch.drone", "epoch.ground", "epoch.streetmap", "epoch.panorama"} <= set(
        mlflow_client.get_run(second.run_id).data.metrics
    )


def _committed_checkpoint(run_folder: Path) -> tuple[int, Path] | None:
    """(step, folder) of the latest checkpoint Ray Train has committed (all workers reported it)."""
    try:
        found = committed_checkpoint(
            json.loads((run_folder / "checkpoint_manager_snapshot.json").read_text())
        )
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return None if found is None else (found[0], run_folder / found[1])


def _worker_pids(checkpoint: Path) -> set[int]:
    """The training worker processes that wrote a checkpoint (each rank records its pid)."""
    return {json.loads(p.read_text())["pid"] for p in (checkpoint / "data").glob("rank-*.json")}


def test_a_killed_worker_resumes_from_the_latest_checkpoint(
    corpus: str, tmp_path: Path, experiment_name: str, mlflow_client
) -> None:
    every, steps = 4, 24
    config = train_config(
        corpus,
        tmp_path / "train",
        experiment_name,
        steps=steps,
        checkpoint={"every": every, "max_failures": 2},
    )
    outcome: list[TrainResult | BaseException] = []

    def target() -> None:
        try:
            outcome.append(run_training(config))
        except BaseException as exc:  # re-raised below, in the test's thread
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    run_folder = tmp_path / "train" / config.name
    deadline = time.monotonic() + 300
    while (committed := _committed_checkpoint(run_folder)) is None:
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.05)
    committed_step, committed_dir = committed
    victims = _worker_pids(committed_dir)
    assert len(victims) == 2 and committed_step < steps
    os.kill(max(victims), signal.SIGKILL)  # a real crash of one worker process, mid-run
    thread.join(timeout=600)
    assert outcome and not isinstance(outcome[0], BaseException), outcome
    result = outcome[0]
    assert isinstance(result, TrainResult) and result.steps == steps

    steps_logged = logged_steps(mlflow_client, result.run_id)
    counts = Counter(steps_logged)
    assert set(counts) == set(range(1, steps + 1)), "a step is missing from the MLflow series"
    repeated = sorted(s for s, n in counts.items() if n > 1)
    # only the interval lost with the worker is logged twice: the steps after the checkpoint it resumed
    # from (the one committed when we struck, or a later one committed before the crash was noticed)
    if repeated:
        assert repeated[0] > committed_step and (repeated[0] - 1) % every == 0, repeated
        assert repeated == list(range(repeated[0], repeated[-1] + 1)) and max(counts.values()) == 2
    assert not victims & _worker_pids(Path(result.checkpoint)), "the worker group was not restarted"
    runs = mlflow_client.search_runs([mlflow_client.get_experiment_by_name(experiment_name).experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
