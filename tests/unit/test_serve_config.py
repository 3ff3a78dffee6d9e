"""The shipped Serve config files, the application arguments, and the request field parsers."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.serve.schema import ServeDeploySchema

from gleam.config import ConfigError, expand_env, parse_config
from serve.requests import APIError, bool_field, k_field, language_field, modality_field
from serve.run import DEFAULT_CONFIG, load_config
from serve.settings import ServeArgs

SERVE = Path(__file__).resolve().parents[2] / "serve"
DEPLOYMENTS = {"Ingress", "QueryEncoder", "SatelliteIndex", "Explainer"}


@pytest.mark.parametrize("name", ["config.yaml", "config.gpu.yaml"])
def test_config_files_are_valid_serve_configs_with_valid_args(name: str, monkeypatch) -> None:
    monkeypatch.setenv("GLEAM_STORE", "s3://bucket/gleam")
    config = load_config(SERVE / name)
    schema = ServeDeploySchema.model_validate(config)
    application = schema.applications[0]
    assert application.import_path == "serve.app:app"
    args = parse_config(ServeArgs, expand_env(application.args), name)
    assert args.store == "s3://bucket/gleam"
    deployments = {d.name: d for d in application.deployments}
    assert set(deployments) == DEPLOYMENTS
    for deployment in deployments.values():
        scaling = deployment.autoscaling_config
        assert scaling["min_replicas"] >= 1 and scaling["max_replicas"] >= scaling["min_replicas"]
        assert scaling["target_ongoing_requests"] < deployment.max_ongoing_requests
        assert deployment.health_check_period_s and deployment.health_check_timeout_s
        assert deployment.ray_actor_options.num_cpus > 0
    gpus = {n: d.ray_actor_options.num_gpus or 0 for n, d in deployments.items()}
    if name == "config.gpu.yaml":
        assert gpus == {"Ingress": 0, "QueryEncoder": 1, "SatelliteIndex": 0, "Explainer": 1}
        assert args.explainer.mllm is not None
    else:
        assert set(gpus.values()) == {0}
        assert sum(d.ray_actor_options.num_cpus for d in deployments.values()) < 1


def test_load_config_merges_args_and_replaces_options() -> None:
    config = load_config(
        DEFAULT_CONFIG,
        args={"index": "region", "batching": {"max_batch_size": 1}},
        port=9123,
        deployments={
            "Ingress": {"ray_actor_options": {"num_cpus": 0.2}},
            "QueryEncoder": {"num_replicas": 1},
        },
    )
    application = config["applications"][0]
    assert application["args"]["index"] == "region"
    assert application["args"]["batching"] == {"max_batch_size": 1, "batch_wait_timeout_s": 0.0}
    assert config["http_options"]["port"] == 9123
    by_name = {d["name"]: d for d in application["deployments"]}
    assert by_name["Ingress"]["ray_actor_options"] == {"num_cpus": 0.2}
    assert by_name["QueryEncoder"]["num_replicas"] == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("default_k", 0, "default_k"),
        ("batching.max_batch_size", 0, "batching.max_batch_size"),
        ("index", "a/b", "index"),
        ("limits.max_images", 0, "limits.max_images"),
        ("explainer.mllm.dtype", "int3", "explainer.mllm"),
        ("colour", "red", "colour"),
    ],
)
def test_bad_args_name_the_field(field: str, value: object, message: str) -> None:
    data: dict = {"explainer": {"mllm": {"model": "/models/x"}}} if field.startswith("explainer") else {}
    node = data
    *parents, last = field.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(ServeArgs, data, "serve args")


def test_field_parsers() -> None:
    assert modality_field({"modality": " Drone "}) == "drone"
    assert k_field({"k": "7"}, 5) == 7 and k_field({}, 5) == 5 and k_field({"k": 100}, 5) == 100
    assert bool_field({"explain": "true"}, "explain") is True and bool_field({}, "explain") is False
    assert language_field({"language": "ZH"}) == "zh" and language_field({}) == "en"
    for call, code in [
        (lambda: modality_field({"modality": "satellite"}), "unknown_modality"),
        (lambda: modality_field({}), "missing_field"),
        (lambda: k_field({"k": 2.5}, 5), "invalid_field"),
        (lambda: k_field({"k": True}, 5), "invalid_field"),
        (lambda: k_field({"k": "-1"}, 5), "out_of_range"),
        (lambda: bool_field({"explain": "maybe"}, "explain"), "invalid_field"),
        (lambda: language_field({"language": "fr"}), "unsupported_language"),
    ]:
        with pytest.raises(APIError) as caught:
            call()
        assert caught.value.code == code and 400 <= caught.value.status < 500
