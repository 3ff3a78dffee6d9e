"""Session-wide real services for the test suite: one local Ray cluster, one S3 server, one MLflow store.

Environment comes first (pytest_configure), before anything can start Ray: Ray workers inherit the
driver's environment when the cluster starts, so S3 endpoint, dummy credentials and the MLflow URI must
be in place by then. Nothing here mocks a service; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port

SESSION_DIR = Path(tempfile.mkdtemp(prefix="gleam-tests-"))


S3_PORT = free_port()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.update(
        {
            "GLEAM_HOME": str(SESSION_DIR / "home"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{SESSION_DIR / 'mlflow.db'}",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
            "RAY_DEDUP_LOGS": "0",
            "CI": os.environ.get("CI", "true"),
        }
    )
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("GLEAM_STORE", None)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 endpoint (moto's server) on 127.0.0.1; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    yield os.environ["AWS_ENDPOINT_URL"]
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh bucket per test; yields `s3://<bucket>`."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_cluster(s3_server: str) -> Iterator[None]:
    """One local Ray cluster for the whole run (started after the S3 env exists, so workers see it)."""
    import ray

    from gleam.cluster import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_head(s3_server: str):
    """A real Ray head (`ray start --head`) with the job server, for job submission and `serve deploy`.

    Apart from `ray_cluster` (the in-process cluster most tests share); started after the S3 env exists,
    so job drivers and workers see the test endpoint. Yields a `tests.support.ray_head.RayHead`.
    """
    from tests.support.ray_head import start_ray_head

    head = start_ray_head()
    yield head
    head.stop()


@pytest.fixture
def mlflow_client():
    import mlflow

    from gleam import tracking

    tracking.configure()
    return mlflow.MlflowClient()


@pytest.fixture
def experiment_name(request: pytest.FixtureRequest) -> str:
    """A unique MLflow experiment per test, so tests can count their own runs."""
    return f"test-{request.node.name[:40]}-{uuid.uuid4().hex[:6]}"


SERVICE_FIXTURES = frozenset(
    {"s3_server", "s3_bucket", "ray_cluster", "ray_head", "mlflow_client", "experiment_name"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a real service (directly or through another fixture) `integration`,
    so `-m 'not integration'` is the fast unit run whoever forgets the marker."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def prepared_world(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], str]:
    """`prepared_world(n)`: the URI of the prepared test world of `n` places (world_corpus in
    tests.support.training), made once per session. Modules share it because a prepared corpus is only
    ever read (jobs write beside it, never in it) and each one costs a render and a Ray Data job."""
    from tests.support.training import world_corpus

    made: dict[int, str] = {}

    def corpus(locations: int) -> str:
        if locations not in made:
            made[locations] = world_corpus(tmp_path_factory.mktemp(f"world-{locations}"), locations=locations)
        return made[locations]

    return corpus
