"""What the Kubernetes manifests run, runs: the dev overlay's index RayJob and RayService on real parts.

Real parts: a Ray head started as `ray start --head` (dashboard, job server, token auth), S3 (moto's
server) and a tracking server (`mlflow server`: tracking over HTTP, artifacts proxied to S3). The
rendered dev overlay is read, not copied:

(a) the RayJob `gleam-build-index`: its entrypoint, with the config file its head pod mounts from the
    job-configs ConfigMap, is submitted through the Job Submission SDK, as KubeRay's submitter does, and
    followed to SUCCEEDED; the index must be published in the S3 store and tracked by the server.
(b) the RayService `gleam`: its serveConfigV2 is deployed as KubeRay deploys it (PUT to the dashboard's
    /api/serve/applications/, what `serve deploy` does) and answers a localize request from that index.

What differs from the cluster, each substituted explicitly below and nothing else:
- the ConfigMap's mount (`/etc/gleam`) -> a temp folder holding the ConfigMap's files (the entrypoint's
  `--config /etc/gleam/...` is rewritten to that folder);
- the image's WORKDIR (which holds jobs/) -> a runtime_env working_dir holding a copy of jobs/*.py
  (the package itself is installed in the venv the head runs);
- the pods' environment: the rendered `gleam-env` ConfigMap as it is, but GLEAM_STORE,
  MLFLOW_TRACKING_URI and AWS_ENDPOINT_URL name this test's bucket, tracking server and S3 endpoint;
  it travels as runtime_env env_vars (of the job; of the Serve application). The `gleam-credentials`
  Secret is not rendered (made by hand): the head has the S3 keys in its environment already;
- the RayJob's entrypointNumCpus is not reserved: on the cluster the driver has a head pod to itself,
  here one 2-CPU node runs the driver, the embedding actor (1 CPU: the config's default) and Ray Data's
  read tasks (1 CPU each), which would never be scheduled beside a reserved driver CPU;
- serveConfigV2's http_options host and port -> 127.0.0.1 and the head's free Serve port.
"""

from __future__ import annotations

import shlex
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import requests
import yaml

from gleam import storage, tracking
from gleam.config import TrackingConfig, load_config
from gleam.corpus.config import ImageLimits
from gleam.corpus.images import process_image
from gleam.corpus.reader import open_corpus
from gleam.index.catalog import open_index
from gleam.index.config import IndexBuildConfig
from gleam.index.layout import META_FILE, IndexLocation
from gleam.model import weights
from gleam.model.transforms import eval_batch
from gleam.tracking import job_run
from tests.support.manifests import ray_cluster_spec, render
from tests.support.mlflow_server import MlflowServer, mlflow_server
from tests.support.paths import REPO
from tests.support.training import tiny_encoder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INDEX_JOB = "gleam-build-index"  # RayJob
SERVICE = "gleam"  # RayService
CONFIG_MOUNT = "/etc/gleam"  # where the RayJob's head pod mounts the job-configs ConfigMap
ENCODER_NAME = "gleam-c"  # `models:/gleam-c@champion`: what the index config and the Serve args name
JOB_TIMEOUT_S = 300
SERVE_TIMEOUT_S = 240


# --- the rendered manifests ----------------------------------------------------------------------------


def dev_overlay_objects() -> list[dict[str, Any]]:
    """Every object `kubectl kustomize k8s/overlays/dev` renders: the test reads the render, not k8s/."""
    return render("dev")


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o.get("kind") == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"the dev overlay renders {len(found)} {kind} named {name!r}"
    return found[0]


def head_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of the Ray head: where KubeRay runs a RayJob's entrypoint and Serve's controller."""
    return ray_cluster_spec(obj)["headGroupSpec"]["template"]["spec"]


def mounted_files(objects: list[dict[str, Any]], pod: dict[str, Any], directory: str) -> dict[str, str]:
    """The files a ConfigMap volume puts at `directory` in the pod's first container: name -> text."""
    mounts = [
        m for m in pod["containers"][0].get("volumeMounts", []) if m["mountPath"].rstrip("/") == directory
    ]
    assert len(mounts) == 1, f"the head container mounts nothing at {directory}"
    volume = next(v for v in pod.get("volumes", []) if v["name"] == mounts[0]["name"])
    assert "configMap" in volume, f"{directory} is not a ConfigMap volume: {volume}"
    data = named(objects, "ConfigMap", volume["configMap"]["name"])["data"]
    items = volume["configMap"].get("items") or [{"key": key, "path": key} for key in data]
    return {item["path"]: data[item["key"]] for item in items}


def pod_environment(
    objects: list[dict[str, Any]], pod: dict[str, Any], substitutions: dict[str, str]
) -> dict[str, str]:
    """The variables the pod's first container gets from ConfigMaps (envFrom, plain env), with this
    test's locations in place of the values that name the cluster's services. Secrets are not read:
    `gleam-credentials` is made by hand (not rendered) and the head here has the S3 keys already."""
    container = pod["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
    missing = sorted(set(substitutions) - set(env))
    assert not missing, f"the manifests give the pod no {missing}: the substitution would add, not replace"
    return {**env, **substitutions}


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return dev_overlay_objects()


@pytest.fixture(scope="module")
def index_job_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return named(objects, "RayJob", INDEX_JOB)


@pytest.fixture(scope="module")
def service_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return named(objects, "RayService", SERVICE)


# --- real services -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket(s3_server: str) -> str:
    name = f"cluster-runs-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def tracking_server(bucket: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Not waited for here: its start-up (~15 s) overlaps preparing the corpus (`champion` waits)."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server"), f"{bucket}/mlflow", ready=False) as server:
        yield server


@pytest.fixture(scope="module")
def locations(bucket: str, tracking_server: MlflowServer, s3_server: str) -> dict[str, str]:
    """This test's store, tracking server and S3 endpoint, in place of the cluster's (gleam-env)."""
    return {
        "GLEAM_STORE": f"{bucket}/store",
        "MLFLOW_TRACKING_URI": tracking_server.url,
        "AWS_ENDPOINT_URL": s3_server,
    }


@pytest.fixture(scope="module")
def job_env(objects, index_job_spec: dict[str, Any], locations: dict[str, str]) -> dict[str, str]:
    return pod_environment(objects, head_pod(index_job_spec), locations)


@pytest.fixture(scope="module")
def config_dir(objects, index_job_spec: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ConfigMap's files, as the RayJob's head pod sees them under CONFIG_MOUNT."""
    folder = tmp_path_factory.mktemp("etc-gleam")
    for name, text in mounted_files(objects, head_pod(index_job_spec), CONFIG_MOUNT).items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def index_config(
    index_job_spec: dict[str, Any], config_dir: Path, job_env: dict[str, str]
) -> IndexBuildConfig:
    """The index config as the job will read it (${...} expanded in the job's environment)."""
    entrypoint = shlex.split(index_job_spec["spec"]["entrypoint"])
    config = entrypoint[entrypoint.index("--config") + 1]
    assert config.startswith(f"{CONFIG_MOUNT}/"), entrypoint
    with pytest.MonkeyPatch.context() as patch:
        for key, value in job_env.items():
            patch.setenv(key, value)
        return load_config(IndexBuildConfig, config_dir / config.removeprefix(f"{CONFIG_MOUNT}/"))


@pytest.fixture(scope="module")
def corpus(prepared_world, index_config: IndexBuildConfig) -> str:
    """A tiny prepared world, uploaded where the index config looks for its corpus."""
    storage.upload_tree(prepared_world(8), index_config.corpus)
    return index_config.corpus


@pytest.fixture(scope="module")
def champion(tracking_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny GLEAM-C encoder registered as `models:/gleam-c@champion` on the tracking server (its
    artifacts go through the server to S3); returns the local folder of the same weights."""
    folder = tiny_encoder(tmp_path_factory.mktemp("champion") / "encoder", seed=3)
    encoder, spec, _ = weights.load(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", tracking_server.wait())
        with job_run("register", tracking=TrackingConfig(experiment="gleam-c-registration")) as run:
            weights.register(encoder, spec, run, name=ENCODER_NAME, aliases=["champion"])
    tracking.configure()  # mlflow back on the session's store for the modules that follow
    return folder


# --- (a) the index RayJob ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str
    logs: str
    seconds: float


def job_workdir(root: Path) -> Path:
    """Stands in for the image's WORKDIR: a folder holding jobs/ (the entrypoint is relative to it)."""
    shutil.copytree(REPO / "jobs", root / "jobs", ignore=shutil.ignore_patterns("configs", "__pycache__"))
    return root


@pytest.fixture(scope="module")
def index_job(
    index_job_spec: dict[str, Any],
    tracking_server: MlflowServer,
    ray_head,
    corpus: str,
    champion: str,
    config_dir: Path,
    job_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> JobOutcome:
    """The RayJob's entrypoint submitted as KubeRay's submitter does, followed to its end."""
    from ray.job_submission import JobSubmissionClient

    entrypoint = index_job_spec["spec"]["entrypoint"].replace(f"{CONFIG_MOUNT}/", f"{config_dir}/")
    runtime_env = {"working_dir": str(job_workdir(tmp_path_factory.mktemp("workdir"))), "env_vars": job_env}
    # the token as a bearer header: in a process that already runs a Ray cluster (the session's
    # `ray_cluster`), Ray's token loader keeps that cluster's token and ignores RAY_AUTH_TOKEN
    client = JobSubmissionClient(ray_head.address, headers={"Authorization": f"Bearer {ray_head.token}"})
    started = time.monotonic()
    job_id = client.submit_job(
        entrypoint=entrypoint, runtime_env=runtime_env, submission_id=f"{INDEX_JOB}-{uuid.uuid4().hex[:6]}"
    )
    status = client.get_job_status(job_id)
    while not status.is_terminal():
        if time.monotonic() - started > JOB_TIMEOUT_S:
            client.stop_job(job_id)  # and wait for it: the driver must not outlive this module's services
            stopped = time.monotonic() + 60
            while not client.get_job_status(job_id).is_terminal() and time.monotonic() < stopped:
                time.sleep(1)
            break
        time.sleep(1)
        status = client.get_job_status(job_id)
    return JobOutcome(job_id, status.value, client.get_job_logs(job_id), time.monotonic() - started)


def test_the_index_rayjob_publishes_to_s3_and_is_tracked_over_http(
    index_job: JobOutcome,
    index_config: IndexBuildConfig,
    tracking_server: MlflowServer,
    champion: str,
    bucket: str,
    s3_server: str,
) -> None:
    outcome = f"job {index_job.job_id}: {index_job.status} after {index_job.seconds:.0f} s"
    assert index_job.status == "SUCCEEDED", f"{outcome}\n{index_job.logs[-6000:]}"
    assert index_config.store.startswith(f"{bucket}/")
    location = IndexLocation(index_config.store, index_config.name)
    version = location.current()
    assert version is not None and location.versions() == {version: True}
    meta = storage.read_json(location.file_uri(version, META_FILE))
    assert meta["version"] == version
    _, _, local = weights.load(champion)
    assert meta["encoder"]["fingerprint"] == local.fingerprint  # the registered champion, through the server
    assert (meta["encoder"]["model_name"], meta["encoder"]["model_version"]) == (ENCODER_NAME, 1)
    tiles = open_corpus(index_config.corpus).read("tiles", ["tile_id"])["tile_id"].to_pylist()
    assert sorted(open_index(index_config.store, index_config.name).tile_ids) == sorted(tiles)

    import mlflow

    server = mlflow.MlflowClient(tracking_uri=tracking_server.url)
    experiment = server.get_experiment_by_name(index_config.tracking.experiment)
    assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:/")
    runs = server.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["gleam.index.version"] == version
    assert runs[0].data.tags["gleam.index.published"] == "true"
    # the run's meta.json went through the server's artifact proxy into the bucket
    bucket_name = bucket.removeprefix("s3://")
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(
            Bucket=bucket_name, Prefix="mlflow/"
        )["Contents"]
    ]
    assert any(key.endswith(f"{runs[0].info.run_id}/artifacts/meta.json") for key in keys), keys


# --- (b) the RayService --------------------------------------------------------------------------------


def serve_api(ray_head) -> tuple[str, dict[str, str]]:
    """The dashboard's Serve REST API (what KubeRay and `serve deploy` talk to) and its auth header."""
    return f"{ray_head.address}/api/serve/applications/", {"Authorization": f"Bearer {ray_head.token}"}


def app_statuses(ray_head) -> dict[str, dict[str, Any]]:
    url, headers = serve_api(ray_head)
    response = requests.get(url, headers=headers, timeout=30)
    response.raise_for_status()
    return response.json().get("applications") or {}


@pytest.fixture(scope="module")
def served(
    objects: list[dict[str, Any]],
    service_spec: dict[str, Any],
    ray_head,
    index_job: JobOutcome,
    locations: dict[str, str],
) -> Iterator[str]:
    """serveConfigV2 deployed on the head; yields the HTTP URL; every application deleted afterwards."""
    assert index_job.status == "SUCCEEDED", "the index job did not publish: nothing to serve"
    config = yaml.safe_load(service_spec["spec"]["serveConfigV2"])
    config["http_options"] |= {"host": "127.0.0.1", "port": ray_head.serve_port}
    # on the cluster the replicas inherit the Ray pods' environment (the gleam-env ConfigMap and the
    # gleam-credentials Secret); here the application's runtime_env carries it, with this test's locations
    env = pod_environment(objects, head_pod(service_spec), locations)
    for application in config["applications"]:
        application.setdefault("runtime_env", {}).setdefault("env_vars", {}).update(env)
    url, headers = serve_api(ray_head)
    try:
        requests.put(url, json=config, headers=headers, timeout=60).raise_for_status()
        names = {a["name"] for a in config["applications"]}
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        statuses = app_statuses(ray_head)
        while not all(statuses.get(n, {}).get("status") == "RUNNING" for n in names):
            failed = {n: s.get("message") for n, s in statuses.items() if s.get("status") == "DEPLOY_FAILED"}
            assert not failed, f"deploy failed: {failed}"
            assert time.monotonic() < deadline, f"not RUNNING after {SERVE_TIMEOUT_S} s: {statuses}"
            time.sleep(1)
            statuses = app_statuses(ray_head)
        yield f"http://127.0.0.1:{ray_head.serve_port}"
    finally:
        requests.delete(url, headers=headers, timeout=60)  # `serve shutdown`: the head is clean again
        deadline = time.monotonic() + 60
        while app_statuses(ray_head) and time.monotonic() < deadline:
            time.sleep(1)


def test_the_rayservice_answers_a_localize_request_from_the_published_index(
    served: str, index_config: IndexBuildConfig, champion: str
) -> None:
    queries = open_corpus(index_config.corpus).read("queries", ["query_id", "modality", "image"])
    query = next(q for q in queries.sort_by("query_id").to_pylist() if q["modality"] == "drone")
    response = requests.post(
        f"{served}/v1/localize",
        files=[("image", ("query.jpg", query["image"], "image/jpeg"))],
        data={"modality": "drone", "k": "5"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    location = IndexLocation(index_config.store, index_config.name)
    assert body["index"]["name"] == index_config.name and body["index"]["version"] == location.current()
    # the same search in this process, on the published index and the champion's weights
    encoder, spec, info = weights.load(champion)
    prepared = process_image(query["image"], spec.size("drone"), ImageLimits()).image
    vector = encoder(eval_batch([prepared], "drone", spec)).detach().numpy()
    index = open_index(index_config.store, index_config.name, expect_fingerprint=info.fingerprint)
    scores, ids = index.search(vector, 5)
    assert [c["tile_id"] for c in body["candidates"]] == list(ids[0])
    np.testing.assert_allclose([c["score"] for c in body["candidates"]], scores[0], atol=1e-4)
    assert body["encoder"]["fingerprint"] == info.fingerprint
    assert (body["encoder"]["model_name"], body["encoder"]["model_version"]) == (ENCODER_NAME, 1)
