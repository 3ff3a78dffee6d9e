"""The train job as users run it: the CLI's exit codes, and a killed job re-submitted with S3 storage."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gleam import storage
from gleam.config import load_config
from gleam.training.config import TrainConfig
from gleam.training.phases import run_training
from gleam_cli.main import app
from tests.support.hub_server import LocalHub
from tests.support.training import SIZES, committed_checkpoint, train_fields

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(prepared_world) -> str:
    return prepared_world(16)


@pytest.fixture
def hub_weights(s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[bytes]:
    """test_convnext's weights (random) on a Hugging Face Hub on 127.0.0.1, and the store in S3: a job with
    `pretrained: hub` fetches them on its driver and its workers load them from s3://."""
    import timm
    import torch
    from safetensors.torch import save

    torch.manual_seed(0)
    served = save(timm.create_model("test_convnext", num_classes=1000).state_dict())
    with LocalHub() as hub:
        hub.add_timm("test_convnext", served)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("GLEAM_STORE", f"{s3_bucket}/store")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield served


def write(path: Path, fields: dict) -> Path:
    path.write_text(yaml.safe_dump(fields))
    return path


def test_bad_train_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    config = write(tmp_path / "t.yaml", {"name": "x", "corpus": "/nowhere", "modalities": ["drone"]})
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--set", "scaling.workers=0"])
    assert result.exit_code == 2
    assert "scaling.workers: Input should be greater than or equal to 1" in result.output
    no_steps = CliRunner().invoke(app, ["train", "--config", str(config)])
    assert no_steps.exit_code == 2 and "give exactly one of steps and epochs" in no_steps.output


def test_missing_pretrained_weights_exit_3_in_one_line_before_any_worker(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.safetensors")
    encoder = {"backbone": "test_convnext", "embed_dim": 16, "pretrained": absent}
    fields = {"name": "x", "corpus": "/nowhere", "modalities": ["drone"], "steps": 1, "encoder": encoder}
    result = CliRunner().invoke(app, ["train", "--config", str(write(tmp_path / "t.yaml", fields))])
    assert result.exit_code == 3, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: pretrained weights not found"), result.output
    assert "encoder.pretrained" in lines[0] and "Traceback" not in result.output


def test_a_run_name_taken_by_another_config_exits_3(corpus: str, tmp_path: Path) -> None:
    fields = train_fields(corpus, tmp_path / "train", "unused")
    taken = storage.join(str(tmp_path / "train"), fields["name"], "gleam-train.json")
    storage.write_json(taken, {"config_hash": "another", "status": "complete"})
    result = CliRunner().invoke(app, ["train", "--config", str(write(tmp_path / "t.yaml", fields))])
    assert result.exit_code == 3 and "another config" in result.output and "Traceback" not in result.output


def test_a_killed_job_resubmitted_resumes_from_s3(
    corpus: str, s3_bucket: str, tmp_path: Path, experiment_name: str, mlflow_client, hub_weights: bytes
) -> None:
    """SIGKILL the whole job (driver and its Ray) after a checkpoint; the same command finishes the run.

    The backbone starts from `pretrained: hub`: the stored copy must not change the job's fingerprint
    (the resubmitted job resumes instead of being refused as another config)."""
    steps, every = 16, 4
    encoder = {"backbone": "test_convnext", "embed_dim": 16, "image_sizes": SIZES, "pretrained": "hub"}
    fields = train_fields(
        corpus,
        f"{s3_bucket}/train",
        experiment_name,
        steps=steps,
        checkpoint={"every": every},
        encoder=encoder,
    )
    config = write(tmp_path / "job.yaml", fields)
    run = storage.join(f"{s3_bucket}/train", fields["name"])
    process = subprocess.Popen(
        [sys.executable, str(REPO / "jobs" / "train.py"), "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    deadline = time.monotonic() + 400
    snapshot = storage.join(run, "checkpoint_manager_snapshot.json")
    committed = None
    while committed is None:
        assert time.monotonic() < deadline and process.poll() is None, "the job ended before it was killed"
        time.sleep(0.2)
        if storage.exists(snapshot):
            committed = committed_checkpoint(storage.read_json(snapshot))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    first_run_id = storage.read_json(storage.join(run, "gleam-train.json"))["run_id"]

    result = run_training(load_config(TrainConfig, config))  # the same job, submitted again

    assert result.run_id == first_run_id, "the resubmitted job must continue the same MLflow run"
    assert result.checkpoint.startswith("s3://") and storage.exists(
        storage.join(result.encoder_uri, "encoder.json")
    )
    counts = Counter(m.step for m in mlflow_client.get_metric_history(result.run_id, "loss"))
    assert set(counts) == set(range(1, steps + 1))
    repeated = sorted(s for s, n in counts.items() if n > 1)
    assert not repeated or repeated[0] > committed[0], (committed, repeated)
    assert mlflow_client.get_run(result.run_id).info.status == "FINISHED"
    tags = mlflow_client.get_run(result.run_id).data.tags
    stored = (
        f"{s3_bucket}/store/pretrained/test_convnext/{hashlib.sha256(hub_weights).hexdigest()}.safetensors"
    )
    assert tags["gleam.pretrained.uri"] == stored and storage.read_bytes(stored) == hub_weights
    assert tags["gleam.pretrained.repo_id"] == "timm/test_convnext.r160_in1k"
    assert (
        mlflow_client.get_run(result.run_id).data.params["encoder.pretrained"] == stored
    )  # the workers'"'"' file
