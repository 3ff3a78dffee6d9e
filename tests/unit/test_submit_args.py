"""`gleam submit` without a cluster: what travels (env by name, never a secret, no relative location),
the entrypoint it builds, the address it talks to, and the exit code a job's end maps to.

The runs against a real head are in tests/integration/test_submit.py.
"""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gleam import submission
from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.submission import LocalPathsError, SecretVariableError, plan_submission
from gleam_cli.main import app
from tests.support.paths import REPO

CONFIGS = REPO / "jobs" / "configs"
PREPARE_DEMO = CONFIGS / "prepare_demo.yaml"
LOCATION_VARIABLES = ("GLEAM_HOME", "GLEAM_STORE", "MLFLOW_TRACKING_URI", "GLEAM_TRAIN_STORAGE")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No setting the submission would pass, and a working folder of the test's own."""
    for name in {*submission.DEFAULT_ENV, *LOCATION_VARIABLES, "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"}:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _config(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_settings_and_the_configs_own_variables_travel_by_name_secrets_do_not(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("GLEAM_STORE", "s3://bucket/gleam")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    clean_env.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    clean_env.setenv("RASTER_URI", "s3://bucket/orthophotos")
    clean_env.setenv("MAPS_TOKEN", "do-not-send")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "never-sent")
    config = _config(
        tmp_path,
        "name: r\noutput: ${GLEAM_STORE}/prepared\n"
        "sources: [{kind: raster, uri: '${RASTER_URI:-x}', name: '${MAPS_TOKEN:-t}'}]\n",
    )
    plan = plan_submission("prepare", config)
    assert plan.env_vars == {
        "GLEAM_STORE": "s3://bucket/gleam",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "RASTER_URI": "s3://bucket/orthophotos",
    }
    assert plan.not_passed == ["MAPS_TOKEN"]  # referenced, but it looks secret: the cluster must hold it
    assert plan.runtime_env("/tmp/w") == {"working_dir": "/tmp/w", "env_vars": plan.env_vars}
    assert shlex.split(plan.entrypoint) == ["python", "-m", "gleam_cli", "prepare", "--config", "job.yaml"]


@pytest.mark.parametrize(
    "name", ["AWS_SECRET_ACCESS_KEY", "RAY_AUTH_TOKEN", "DB_PASSWORD", "GCP_CREDENTIALS", "api_key"]
)
def test_a_secret_looking_name_is_refused_in_one_line_without_its_value(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    clean_env.setenv("GLEAM_STORE", "s3://bucket/gleam")
    clean_env.setenv(name, "hunter2-value")
    code, output = _invoke("submit", "prepare", "--config", str(PREPARE_DEMO), "--env", name)
    assert code == 2, output
    assert output.count("\n") == 1 and f"--env {name}: refused" in output and "Kubernetes Secret" in output
    assert "hunter2-value" not in output


def test_a_url_with_a_password_is_refused_without_showing_it(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GLEAM_STORE", "s3://bucket/gleam")
    clean_env.setenv("MLFLOW_TRACKING_URI", "https://ops:hunter2@mlflow.example")
    with pytest.raises(SecretVariableError, match="MLFLOW_TRACKING_URI holds a password") as caught:
        plan_submission("prepare", PREPARE_DEMO)
    assert "hunter2" not in str(caught.value)


def test_an_explicit_env_name_must_be_a_name_and_set_here(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GLEAM_STORE", "s3://bucket/gleam")
    clean_env.setenv("HF_HUB_OFFLINE", "1")
    assert (
        plan_submission("prepare", PREPARE_DEMO, env_names=["HF_HUB_OFFLINE"]).env_vars["HF_HUB_OFFLINE"]
        == "1"
    )
    code, output = _invoke("submit", "prepare", "-c", str(PREPARE_DEMO), "--env", "NOT_SET_ANYWHERE")
    assert code == 2 and "--env NOT_SET_ANYWHERE: not set here" in output
    code, output = _invoke("submit", "prepare", "-c", str(PREPARE_DEMO), "--env", "A=b")
    assert code == 2 and "give a variable's name" in output


def test_the_demo_defaults_are_refused_naming_every_relative_location(clean_env: pytest.MonkeyPatch) -> None:
    """With nothing set, the demo config names `.gleam/store`: on a cluster, the job's temporary folder."""
    code, output = _invoke("submit", "prepare", "--config", str(PREPARE_DEMO))  # no cluster contacted
    assert code == 2, output
    assert "relative locations" in output and "output=.gleam/store/prepared" in output
    assert "sources.0.uri=.gleam/store/raw/world-demo" in output and "--allow-local-paths" in output

    clean_env.setenv("GLEAM_STORE", ".gleam/store")  # relative in the environment: named, not shown
    with pytest.raises(LocalPathsError, match="env GLEAM_STORE"):
        plan_submission("prepare", PREPARE_DEMO)

    clean_env.setenv("GLEAM_STORE", "s3://bucket/gleam")
    assert plan_submission("prepare", PREPARE_DEMO).resolved == {}
    # a literal relative default in a config is found too, not only the store
    with pytest.raises(LocalPathsError, match=r"storage_path=\.gleam/train"):
        plan_submission("train", CONFIGS / "train_phase1.yaml")


def test_allow_local_paths_resolves_every_location_here_once(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The job gets absolute values; run from another folder, it still reads and writes here."""
    plan = plan_submission("prepare", PREPARE_DEMO, ["batch_size=8"], allow_local_paths=True)
    here = tmp_path.resolve()
    assert plan.env_vars["GLEAM_HOME"] == str(here / ".gleam")
    assert plan.env_vars["MLFLOW_TRACKING_URI"] == f"sqlite:///{here / '.gleam' / 'mlflow.db'}"
    assert plan.resolved == {
        "output": str(here / ".gleam/store/prepared"),
        "sources.0.uri": str(here / ".gleam/store/raw/world-demo"),
    }
    words = shlex.split(plan.entrypoint)
    assert words[:6] == ["python", "-m", "gleam_cli", "prepare", "--config", "prepare_demo.yaml"]
    overrides = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
    assert overrides[0] == "batch_size=8"

    elsewhere = tmp_path / "job-working-dir"
    elsewhere.mkdir()
    clean_env.chdir(elsewhere)  # where the job runs; its env holds nothing relative to resolve
    cfg = load_config(PrepareConfig, PREPARE_DEMO, overrides)
    assert cfg.output == str(here / ".gleam/store/prepared") and cfg.batch_size == 8
    assert cfg.sources[0].uri == str(here / ".gleam/store/raw/world-demo")


def test_overrides_and_job_arguments_reach_an_entrypoint_the_cli_runs(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("GLEAM_STORE", "s3://bucket/gleam")
    config = _config(tmp_path, "name: x\ncorpus: s3://bucket/c\nencoder: 'models:/gleam-c@champion'\n")
    plan = plan_submission(
        "build-index", config, ["recall.floor=0.9", "name=with space"], ["--incremental", "--skip-if-busy"]
    )
    assert shlex.split(plan.entrypoint)[3:] == [
        "index", "build", "--config", "job.yaml", "--set", "recall.floor=0.9", "--set", "name=with space",
        "--incremental", "--skip-if-busy",
    ]  # fmt: skip
    assert plan.metadata == {"gleam.job": "build-index", "gleam.config": "job.yaml"}
    for job, words in submission.JOB_COMMANDS.items():  # every job names a command the CLI has
        code, output = _invoke(*words, "--help")
        assert code == 0, f"{job}: {output}"


def test_a_malformed_override_or_a_missing_config_fails_here(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GLEAM_STORE", "s3://bucket/gleam")
    code, output = _invoke("submit", "prepare", "-c", str(PREPARE_DEMO), "--set", "no-equals-sign")
    assert code == 2 and "must look like key.path=value" in output
    code, output = _invoke("submit", "train", "-c", "nowhere.yaml")
    assert code == 2 and "config nowhere.yaml: no such file here" in output


@pytest.mark.parametrize(
    ("explicit", "env", "expected"),
    [
        (None, {}, "http://127.0.0.1:8265"),
        (None, {"RAY_ADDRESS": "127.0.0.1:6379"}, "http://127.0.0.1:8265"),  # a GCS address: not ours
        (None, {"RAY_ADDRESS": "http://head:8265/"}, "http://head:8265"),
        (
            None,
            {"RAY_API_SERVER_ADDRESS": "https://ray.example", "RAY_ADDRESS": "http://x:1"},
            "https://ray.example",
        ),
        ("head.local:8265", {"RAY_API_SERVER_ADDRESS": "http://other:1"}, "http://head.local:8265"),
    ],
)
def test_the_job_server_address(
    clean_env: pytest.MonkeyPatch, explicit: str | None, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert submission.job_server_address(explicit) == expected


def test_a_job_server_that_is_not_there_is_one_line_naming_the_address(clean_env: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
        code, output = _invoke("jobs", "list", "--address", address)
    assert code == 3, output
    assert output.count("\n") == 1 and f"no Ray job server answers at {address}" in output
    code, output = _invoke("jobs", "list", "--address", "ray://head:10001")
    assert code == 2 and "http(s) URL" in output


@pytest.mark.parametrize(
    ("status", "driver_exit_code", "expected"),
    [
        ("SUCCEEDED", 0, 0),
        ("FAILED", 2, 2),
        ("FAILED", 6, 6),
        ("FAILED", 137, 1),
        ("FAILED", None, 1),
        ("STOPPED", None, 143),
    ],
)
def test_a_jobs_end_maps_to_an_exit_code(status: str, driver_exit_code: int | None, expected: int) -> None:
    """A failed job keeps the platform's meaning (2 config, 3 refused, ... 6 busy), as when run here."""
    from ray.job_submission import JobDetails

    info = JobDetails(type="SUBMISSION", status=status, entrypoint="x", driver_exit_code=driver_exit_code)
    assert submission.exit_code(info) == expected


def test_without_default_env_only_named_variables_travel_and_the_cluster_resolves_the_rest(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A port-forward: this machine reaches MinIO and MLflow on 127.0.0.1, the cluster by service name."""
    clean_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    clean_env.setenv("HF_HUB_OFFLINE", "1")
    plan = plan_submission("prepare", PREPARE_DEMO, env_names=["HF_HUB_OFFLINE"], default_env=False)
    assert plan.env_vars == {"HF_HUB_OFFLINE": "1"}  # the demo's ${GLEAM_STORE:-...} is the cluster's
    with socket.socket() as sock:  # the flag is wired: no refusal, so the CLI goes on to the (absent) server
        sock.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{sock.getsockname()[1]}"
        code, output = _invoke(
            "submit", "prepare", "-c", str(PREPARE_DEMO), "--no-default-env", "--address", address
        )
    assert code == 3 and "no Ray job server answers" in output, output

    literal = _config(tmp_path, "name: x\noutput: data/prepared\nsources: [{kind: world, uri: s3://b/w}]\n")
    with pytest.raises(LocalPathsError, match="output=data/prepared"):  # no variable: still refused
        plan_submission("prepare", literal, default_env=False)
    clean_env.setenv("GLEAM_STORE", "store")  # sent by name, so judged here
    with pytest.raises(LocalPathsError, match="env GLEAM_STORE"):
        plan_submission("prepare", PREPARE_DEMO, env_names=["GLEAM_STORE"], default_env=False)


def test_arguments_after_a_double_dash_are_the_jobs(clean_env: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def plan(
        job: str, config: Path, overrides: list[str], job_args: list[str], *rest: object, **kw: object
    ) -> None:
        seen.update(job=job, overrides=overrides, job_args=job_args)
        raise submission.InvalidInputError("stop here")

    clean_env.setattr(submission, "plan_submission", plan)
    args = [
        "submit",
        "build-index",
        "-c",
        str(PREPARE_DEMO),
        "--set",
        "a=1",
        "--",
        "--incremental",
        "--skip-if-busy",
    ]
    code, output = _invoke(*args)
    assert code == 2 and "stop here" in output
    assert seen == {
        "job": "build-index",
        "overrides": ["a=1"],
        "job_args": ["--incremental", "--skip-if-busy"],
    }
