"""Locations are resolved once in the driver and mean the same in any worker's working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gleam import runtime_env, storage, tracking

LOCATION_VARIABLES = ("GLEAM_HOME", "GLEAM_STORE", "MLFLOW_TRACKING_URI", "HF_HOME")


@pytest.fixture
def newcomer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A driver folder with none of the location variables set, and another folder a worker runs in."""
    for name in LOCATION_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    driver, worker = tmp_path / "driver", tmp_path / "worker"
    driver.mkdir()
    worker.mkdir()
    monkeypatch.chdir(driver)
    return driver, worker


def test_pin_resolves_the_relative_defaults_where_the_job_starts(
    newcomer: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, worker = newcomer
    env = runtime_env.pin()
    assert env == {
        "GLEAM_HOME": str(driver / ".gleam"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{driver / '.gleam' / 'mlflow.db'}",
    }
    monkeypatch.chdir(worker)  # what Ray Train does to its workers
    assert storage.default_store() == str(driver / ".gleam" / "store")
    assert tracking.tracking_uri() == env["MLFLOW_TRACKING_URI"]


def test_without_the_pinned_values_a_worker_folder_means_another_place(
    newcomer: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bug this module exists for: the same relative default, resolved in the worker's folder."""
    _, worker = newcomer
    in_driver = runtime_env.resolved()
    monkeypatch.chdir(worker)
    assert runtime_env.resolved()["GLEAM_HOME"] != in_driver["GLEAM_HOME"]
    runtime_env.apply(in_driver)
    assert runtime_env.resolved() == in_driver


def test_relative_values_become_absolute_and_remote_ones_stay(
    newcomer: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, _ = newcomer
    monkeypatch.setenv("GLEAM_HOME", "work/home")
    monkeypatch.setenv("GLEAM_STORE", "data/store/")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///db/mlflow.db")
    monkeypatch.setenv("HF_HOME", "hf")
    env = runtime_env.resolved()
    assert env["GLEAM_HOME"] == str(driver / "work" / "home")
    assert env["GLEAM_STORE"] == str(driver / "data" / "store")
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{driver / 'db' / 'mlflow.db'}"
    assert env["HF_HOME"] == str(driver / "hf")
    monkeypatch.setenv("GLEAM_STORE", "s3://bucket/gleam/")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    env = runtime_env.resolved()
    assert env["GLEAM_STORE"] == "s3://bucket/gleam"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert runtime_env.absolute_tracking_uri("mlruns") == (driver / "mlruns").as_uri()


@pytest.mark.integration
def test_an_index_actor_in_another_folder_loads_the_model_from_the_drivers_registry(
    newcomer: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedding actor's constructor, run in a worker folder with the payload the driver sends."""
    import mlflow

    from gleam.config import TrackingConfig
    from gleam.index.embed import TileEmbedder
    from gleam.model import weights
    from gleam.model.encoder import GleamEncoder
    from gleam.model.spec import EncoderSpec

    _, worker = newcomer
    settings = runtime_env.pin()  # the driver: relative defaults, made absolute here
    spec = EncoderSpec.tiny(embed_dim=8)
    with tracking.job_run("registry", tracking=TrackingConfig(experiment="relative-defaults")) as run:
        weights.register(GleamEncoder(spec), spec, run, name="gleam-c-relative", aliases=["test"])
    _, fingerprint = weights.pin("models:/gleam-c-relative@test")

    for name in ("GLEAM_HOME", "MLFLOW_TRACKING_URI"):  # a fresh worker process: nothing inherited
        monkeypatch.delenv(name)
    monkeypatch.chdir(worker)
    mlflow.set_tracking_uri(None)
    with pytest.raises(weights.WeightsError):  # resolved here, the registry is a new, empty one
        weights.load("models:/gleam-c-relative@test")
    actor = TileEmbedder("models:/gleam-c-relative@test", fingerprint, settings, "fp32", threads=1)
    assert actor.dim == 8
    assert os.environ["MLFLOW_TRACKING_URI"] == settings["MLFLOW_TRACKING_URI"]
    assert not (worker / ".gleam" / "store").exists()
