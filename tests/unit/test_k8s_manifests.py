"""The Kubernetes manifests (k8s/): both overlays render, every object validates strictly, and what the
objects say agrees with the repository: job files, configs and their models, the Serve configs, the
schedules, the images and the GPUs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from pydantic import BaseModel
from ray.serve.schema import ServeDeploySchema

from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.evaluation.config import EvaluateConfig
from gleam.index.config import IndexBuildConfig
from gleam.training.config import TrainConfig
from tests.support.manifests import (
    K8S,
    OVERLAYS,
    ManifestValidator,
    by_kind,
    ray_cluster_spec,
    ray_groups,
    render,
    validator,
)
from tests.support.paths import REPO

Objects = list[dict[str, Any]]
# RayJob -> (job file, config key in the ConfigMap, the job's config model)
JOBS: dict[str, tuple[str, str, type[BaseModel]]] = {
    "gleam-prepare": ("jobs/prepare.py", "prepare_gleam_mix.yaml", PrepareConfig),
    "gleam-train-phase1": ("jobs/train.py", "train_phase1.yaml", TrainConfig),
    "gleam-train-phase2": ("jobs/train.py", "train_phase2.yaml", TrainConfig),
    "gleam-build-index": ("jobs/build_index.py", "index_region.yaml", IndexBuildConfig),
    "gleam-evaluate": ("jobs/evaluate.py", "evaluate_region.yaml", EvaluateConfig),
}
GPU_JOBS = {"gleam-train-phase1", "gleam-train-phase2", "gleam-build-index", "gleam-evaluate"}
RAY_KINDS = ("RayJob", "RayCronJob", "RayService")
GPU = "nvidia.com/gpu"


@pytest.fixture(scope="module")
def rendered() -> dict[str, Objects]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def checker() -> ManifestValidator:
    return validator()


def one(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    return by_kind(objects, kind)[name]


def job_configs(objects: Objects) -> dict[str, Any]:
    (configmap,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("gleam-job-configs")
    ]
    return configmap


def ray_objects(objects: Objects) -> Objects:
    return [o for o in objects if o["kind"] in RAY_KINDS]


def pod_specs(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(group, spec["template"]["spec"]) for group, spec in ray_groups(obj)]


def gpus(pod: dict[str, Any]) -> int:
    return sum(int(c.get("resources", {}).get("limits", {}).get(GPU, 0)) for c in pod["containers"])


def entrypoints(objects: Objects) -> dict[str, str]:
    """Every Ray job's entrypoint: the RayJobs' and the RayCronJob's template's."""
    found = {name: job["spec"]["entrypoint"] for name, job in by_kind(objects, "RayJob").items()}
    for name, cron in by_kind(objects, "RayCronJob").items():
        found[name] = cron["spec"]["jobTemplate"]["entrypoint"]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(
    rendered: dict[str, Objects], checker: ManifestValidator, overlay: str
) -> None:
    objects = rendered[overlay]
    report = checker.validate(objects)
    assert [str(p) for p in report.problems] == []
    kinds = {o["kind"] for o in objects}
    assert {"RayJob", "RayCronJob", "RayService", "CronJob", "Deployment", "StatefulSet", "Service"} <= kinds
    assert {"Namespace", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Ingress"} <= kinds
    assert len(report.validated) == len(objects)
    assert all("oldSelf" in skipped.rule for skipped in report.skipped)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_the_gleam_namespace(rendered: dict[str, Objects], overlay: str) -> None:
    objects = rendered[overlay]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == ["gleam"]
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"gleam"}
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "gleam" for o in objects)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_entrypoints_name_job_files_and_mounted_configs(rendered: dict[str, Objects], overlay: str) -> None:
    objects = rendered[overlay]
    data = job_configs(objects)["data"]
    found = entrypoints(objects)
    assert set(found) == {*JOBS, "gleam-index-rebuild"}
    for name, entrypoint in found.items():
        job_file, key, _ = JOBS["gleam-build-index" if name == "gleam-index-rebuild" else name]
        words = shlex.split(entrypoint)
        assert words[:4] == ["python", job_file, "--config", f"/etc/gleam/{key}"], name
        assert (REPO / job_file).is_file() and key in data
    assert shlex.split(found["gleam-index-rebuild"])[4:] == ["--incremental", "--skip-if-busy"]


def test_the_configmap_holds_the_repository_configs(rendered: dict[str, Objects]) -> None:
    for objects in rendered.values():
        data = job_configs(objects)["data"]
        assert data == {key: (REPO / "jobs" / "configs" / key).read_text() for _, key, _ in JOBS.values()}


def test_each_config_validates_with_its_jobs_model(
    rendered: dict[str, Objects], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLEAM_STORE", "s3://bucket/store")
    data = job_configs(rendered["prod"])["data"]
    for name, (_, key, model) in JOBS.items():
        path = tmp_path / key
        path.write_text(data[key])
        config = load_config(model, path)
        location = getattr(config, "corpus", None) or getattr(config, "output", "")
        assert str(location).startswith("s3://bucket/store/prepared"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_pods_mount_the_hashed_configmap_and_read_env_and_secret(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    name = job_configs(objects)["metadata"]["name"]
    assert name.startswith("gleam-job-configs-") and len(name) > len("gleam-job-configs-")
    for obj in ray_objects(objects):
        for group, pod in pod_specs(obj):
            where = f"{obj['kind']}/{obj['metadata']['name']} {group}"
            volumes = {v["name"]: v for v in pod["volumes"]}
            (container,) = pod["containers"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert volumes[mounts["/etc/gleam"]]["configMap"]["name"] == name, where
            sources = [next(iter(s.values()))["name"] for s in container["envFrom"]]
            assert sources == ["gleam-env", "gleam-credentials"], where
            assert container["workingDir"] == "/home/ray/gleam", where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_env_configmap_points_at_the_cluster_services(rendered: dict[str, Objects], overlay: str) -> None:
    env = one(rendered[overlay], "ConfigMap", "gleam-env")["data"]
    assert env["GLEAM_STORE"].startswith("s3://") and env["GLEAM_TRAIN_STORAGE"].startswith("s3://")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.gleam.svc:5000"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["AWS_ENDPOINT_URL"].startswith("http")
    mlflow = one(rendered[overlay], "Service", "mlflow")
    assert [p["port"] for p in mlflow["spec"]["ports"]] == [5000]


def test_no_secret_is_rendered_and_the_template_has_every_key_used(rendered: dict[str, Objects]) -> None:
    example = yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text())
    assert example["kind"] == "Secret" and example["metadata"]["name"] == "gleam-credentials"
    for objects in rendered.values():
        assert [o for o in objects if o["kind"] == "Secret"] == []
        text = json.dumps(objects)
        refs = [r for r in _secret_key_refs(objects) if r["name"] == "gleam-credentials"]
        assert refs and {r["key"] for r in refs} <= set(example["stringData"])
        assert all(value not in text for value in example["stringData"].values())


def _secret_key_refs(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = [node["secretKeyRef"]] if "secretKeyRef" in node else []
        return found + [ref for value in node.values() for ref in _secret_key_refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _secret_key_refs(value)]
    return []


def test_prod_serve_config_is_serve_config_gpu(rendered: dict[str, Objects]) -> None:
    service = one(rendered["prod"], "RayService", "gleam")
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert config == yaml.safe_load((REPO / "serve" / "config.gpu.yaml").read_text())
    ServeDeploySchema.model_validate(config)


def test_dev_serve_config_is_serve_config_listening_on_every_interface(rendered: dict[str, Objects]) -> None:
    service = one(rendered["dev"], "RayService", "gleam")
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    laptop = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    assert (config["http_options"].pop("host"), laptop["http_options"].pop("host")) == (
        "0.0.0.0",
        "127.0.0.1",
    )
    assert config == laptop
    ServeDeploySchema.model_validate(config)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rayservice_autoscales_upgrades_and_is_exposed(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    spec = one(objects, "RayService", "gleam")["spec"]
    cluster = spec["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert (
        cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0
        and cluster["autoscalerOptions"]["upscalingMode"]
    )
    assert spec["upgradeStrategy"] == {"type": "NewCluster"}  # the choice rayservice.yaml explains
    for group in cluster["workerGroupSpecs"]:
        assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    ports = {
        p["name"]: p["containerPort"]
        for p in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert ports["serve"] == yaml.safe_load(spec["serveConfigV2"])["http_options"]["port"] == 8000
    backend = one(objects, "Ingress", "gleam")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "gleam-serve-svc", "port": {"number": 8000}}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayjobs_clean_up_bound_their_time_and_retry_knowingly(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    specs = {name: job["spec"] for name, job in by_kind(objects, "RayJob").items()}
    specs["gleam-index-rebuild"] = one(objects, "RayCronJob", "gleam-index-rebuild")["spec"]["jobTemplate"]
    ray_minor = ".".join(ray.__version__.split(".")[:2])
    for name, spec in specs.items():
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0, name
        assert spec["activeDeadlineSeconds"] > 0 and spec["entrypointNumCpus"] > 0, name
        assert spec["backoffLimit"] >= 1 and spec["submissionMode"] == "K8sJobMode", name
        cluster = spec["rayClusterSpec"]
        assert cluster["authOptions"] == {"mode": "token"}, name  # Ray 2.60 clusters require a token
        assert cluster["rayVersion"].startswith(ray_minor + "."), name
    assert set(specs) - {"gleam-index-rebuild"} == set(JOBS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_rayjobs_carry_the_job_label(rendered: dict[str, Objects], overlay: str) -> None:
    """`kubectl apply -l '!gleam.io/job'` applies the platform without starting a job."""
    labelled = {o["metadata"]["name"] for o in rendered[overlay] if "gleam.io/job" in o["metadata"]["labels"]}
    assert labelled == set(JOBS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_both_schedules_run_the_same_incremental_rebuild(rendered: dict[str, Objects], overlay: str) -> None:
    objects = rendered[overlay]
    raycron = one(objects, "RayCronJob", "gleam-index-rebuild")["spec"]
    cron = one(objects, "CronJob", "gleam-index-rebuild-cron")["spec"]
    assert (cron["schedule"], cron["timeZone"]) == (raycron["schedule"], raycron["timeZone"])
    assert cron["concurrencyPolicy"] == "Forbid"
    # the RayCronJob's template is the index RayJob with the schedule's flags
    index = one(objects, "RayJob", "gleam-build-index")["spec"]
    template = dict(raycron["jobTemplate"])
    assert template.pop("entrypoint") == index["entrypoint"] + " --incremental --skip-if-busy"
    assert template == {k: v for k, v in index.items() if k != "entrypoint"}
    # the CronJob's pod copies that template (its script runs in test_cronjob_pod_creates_...)
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["TEMPLATE"] == "gleam-index-rebuild"
    role = one(objects, "Role", "gleam-rayjob-launcher")
    binding = one(objects, "RoleBinding", "gleam-rayjob-launcher")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "gleam"}
    ]
    verbs = {(rule["resources"][0], verb) for rule in role["rules"] for verb in rule["verbs"]}
    assert {("rayjobs", v) for v in ("create", "get", "list", "watch", "delete")} | {
        ("raycronjobs", "get")
    } == verbs


FAKE_KUBECTL = """#!{python}
# Stands in for the API server: answers the calls launch-rayjob.sh makes, records them.
import json, os, sys
state = os.environ["FAKE_KUBE"]
args = sys.argv[1:]
with open(os.path.join(state, "calls.jsonl"), "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:2] == ["get", "raycronjob"]:
    print(open(os.path.join(state, "template.json")).read(), end="")
elif args[:2] == ["get", "rayjobs"]:
    print("gleam-index-rebuild-old01")
elif args[:2] == ["delete", "rayjob"]:
    print("rayjob.ray.io/" + args[2] + " deleted")
elif args[:1] == ["create"]:
    open(os.path.join(state, "created.json"), "w").write(sys.stdin.read())
    print("rayjob.ray.io/gleam-index-rebuild-x7k2p")
elif args[:1] == ["get"] and "jobDeploymentStatus" in args[-1]:
    polls = os.path.join(state, "polls")
    count = int(open(polls).read()) if os.path.exists(polls) else 0
    open(polls, "w").write(str(count + 1))
    print("Running" if count == 0 else "Complete", end="")
elif args[:1] == ["get"] and "jobStatus" in args[-1]:
    print(os.environ["FAKE_JOB_STATUS"], end="")
else:
    sys.exit("unexpected kubectl call: " + " ".join(args))
"""


@pytest.mark.parametrize(("status", "exit_code"), [("SUCCEEDED", 0), ("FAILED", 1)])
def test_cronjob_pod_creates_the_raycronjobs_rayjob_and_waits(
    rendered: dict[str, Objects], checker: ManifestValidator, tmp_path: Path, status: str, exit_code: int
) -> None:
    """Runs the CronJob pod's script with a stand-in kubectl: the RayJob it creates validates."""
    objects = rendered["prod"]
    cron = one(objects, "CronJob", "gleam-index-rebuild-cron")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    scripts = {v["name"]: v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "script")["mountPath"]
    script_file = Path(container["command"][1]).relative_to(mount)
    script = tmp_path / "launch.sh"
    script.write_text(one(objects, "ConfigMap", scripts["script"])["data"][str(script_file)])
    raycron = one(objects, "RayCronJob", "gleam-index-rebuild")
    state = tmp_path / "state"
    state.mkdir()
    (state / "template.json").write_text(json.dumps(raycron["spec"]["jobTemplate"]))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable))
    kubectl.chmod(0o755)
    env = {e["name"]: e["value"] for e in container["env"]}
    env |= {"PATH": f"{bin_dir}:{os.environ['PATH']}", "POLL_SECONDS": "0", "FAKE_KUBE": str(state)}
    env["FAKE_JOB_STATUS"] = status
    result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == exit_code, result.stderr
    created = json.loads((state / "created.json").read_text())
    assert checker.validate_one(created).problems == []
    assert created["metadata"]["generateName"] == "gleam-index-rebuild-"
    assert created["metadata"]["labels"]["gleam.io/schedule"] == env["SCHEDULE_LABEL"]
    assert created["spec"] == raycron["spec"]["jobTemplate"]
    calls = [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]
    assert ["delete", "rayjob", "gleam-index-rebuild-old01"] in calls
    assert sum("jobDeploymentStatus" in call[-1] for call in calls) == 2  # waited through "Running"
    assert f"job {status}" in result.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_all_ray_pods_run_one_image(rendered: dict[str, Objects], overlay: str) -> None:
    images = {
        container["image"]
        for obj in ray_objects(rendered[overlay])
        for _, pod in pod_specs(obj)
        for container in pod["containers"]
    }
    (image,) = images
    assert image.rsplit(":", 1)[0].endswith("gleam-platform")
    assert image.endswith("-cpu") == (overlay == "dev")


def test_prod_puts_gpu_groups_on_gpu_nodes_and_dev_has_no_gpu(rendered: dict[str, Objects]) -> None:
    prod, dev = rendered["prod"], rendered["dev"]
    gpu_objects = {*GPU_JOBS, "gleam-index-rebuild", "gleam"}
    for obj in ray_objects(prod):
        pods = pod_specs(obj)
        with_gpu = [pod for _, pod in pods if gpus(pod)]
        assert bool(with_gpu) == (obj["metadata"]["name"] in gpu_objects), obj["metadata"]["name"]
        for pod in with_gpu:
            assert pod["nodeSelector"] == {f"{GPU}.present": "true"}
            assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert not any(gpus(pod) for group, pod in pods if group == "head")
    assert GPU not in json.dumps(ray_objects(dev))
    assert all("entrypointNumGpus" not in job["spec"] for job in by_kind(dev, "RayJob").values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_training_workers_match_the_train_clusters(rendered: dict[str, Objects], overlay: str) -> None:
    objects = rendered[overlay]
    workers = int(one(objects, "ConfigMap", "gleam-env")["data"]["GLEAM_TRAIN_WORKERS"])
    for name in ("gleam-train-phase1", "gleam-train-phase2"):
        (group,) = ray_cluster_spec(one(objects, "RayJob", name))["workerGroupSpecs"]
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"]
        per_pod = gpus(group["template"]["spec"]) or 1  # CPU workers in dev: one training worker
        assert group["replicas"] * per_pod == workers, name
