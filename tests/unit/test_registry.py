"""gleam.registry: the one `models:/` parser, and lookups against a real (sqlite) MLflow registry for both
a GLEAM-C encoder and a GLEAM-X model folder."""

from __future__ import annotations

import uuid
from pathlib import Path

import mlflow
import pytest
import torch

from gleam import registry
from gleam.config import TrackingConfig
from gleam.errors import GleamError, RefusedError
from gleam.explain.mllm import folder_fingerprint, model_files, register_mllm
from gleam.model import weights
from gleam.model.encoder import GleamEncoder
from gleam.model.spec import EncoderSpec
from gleam.registry import ModelNotFoundError, ModelURI, RegistryURIError
from gleam.tracking import NullRun, job_run

# --- the parser ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected", "canonical"),
    [
        ("models:/gleam-c@champion", ModelURI("gleam-c", alias="champion"), "models:/gleam-c@champion"),
        ("models:/gleam-c@champion/", ModelURI("gleam-c", alias="champion"), "models:/gleam-c@champion"),
        ("models:/gleam-x/3", ModelURI("gleam-x", version=3), "models:/gleam-x/3"),
        ("models:/gleam-x/12/", ModelURI("gleam-x", version=12), "models:/gleam-x/12"),
        (
            "models:/my.model_v2@phase-1",
            ModelURI("my.model_v2", alias="phase-1"),
            "models:/my.model_v2@phase-1",
        ),
    ],
)
def test_every_accepted_form_parses(uri: str, expected: ModelURI, canonical: str) -> None:
    parsed = ModelURI.parse(uri)
    assert parsed == expected and str(parsed) == canonical
    assert ModelURI.parse(str(parsed)) == parsed  # the canonical form is itself accepted
    assert registry.is_registry_uri(uri)


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("models:/gleam-c", "names no alias and no version"),
        ("models:/gleam-c/", "names no alias and no version"),
        ("models:/gleam-c/latest", "a version is a number"),
        ("models:/gleam-c/3/encoder", "nothing may follow"),
        ("models:/gleam-c@champion/3", "nothing may follow"),
        ("models:/@champion", "model name is missing"),
        ("models:/", "model name is missing"),
        ("models:/gleam-c@", "alias is empty"),
        ("models:/gleam-c@a@b", "second @"),
        ("runs:/0123/encoder", "does not start with models:/"),
        ("/data/encoders/run-1", "does not start with models:/"),
    ],
)
def test_bad_uris_say_which_forms_are_accepted_and_what_is_wrong(uri: str, why: str) -> None:
    with pytest.raises(RegistryURIError) as caught:
        ModelURI.parse(uri)
    message = str(caught.value)
    assert "models:/<name>@<alias> or models:/<name>/<version>" in message and uri in message
    assert why in message
    assert isinstance(caught.value, GleamError) and caught.value.exit_code == RefusedError.exit_code


def test_a_parsed_uri_names_exactly_one_alias_or_version() -> None:
    with pytest.raises(RegistryURIError, match="exactly one"):
        ModelURI("gleam-c")
    with pytest.raises(RegistryURIError, match="exactly one"):
        ModelURI("gleam-c", alias="champion", version=2)
    assert not registry.is_registry_uri("s3://bucket/models:/x")


# --- run ids ---------------------------------------------------------------------------------------------


def test_run_id_of_every_kind_of_run(mlflow_client, experiment_name: str) -> None:
    assert registry.run_id_of("abc123") == "abc123"
    assert registry.run_id_of(NullRun()) is None  # another rank: registers nothing
    assert registry.run_id_of(None) is None  # no active run
    with job_run("registry-test", tracking=TrackingConfig(experiment=experiment_name)) as run:
        assert run.run_id and registry.run_id_of(run) == run.run_id
        assert registry.run_id_of(None) == run.run_id  # the active run
        assert registry.run_id_of(mlflow.active_run()) == run.run_id
        assert registry.run_id_of(mlflow_client.get_run(run.run_id)) == run.run_id


# --- lookups: a GLEAM-C encoder --------------------------------------------------------------------------


def make_encoder(seed: int) -> GleamEncoder:
    torch.manual_seed(seed)
    return GleamEncoder(EncoderSpec.tiny("test_convnext", embed_dim=16))


def test_gleam_c_versions_resolve_download_and_move(
    mlflow_client, experiment_name: str, tmp_path: Path
) -> None:
    name = f"gleam-c-registry-{uuid.uuid4().hex[:8]}"
    first, second = make_encoder(0), make_encoder(1)
    with job_run("train", tracking=TrackingConfig(experiment=experiment_name)) as run:
        assert weights.register(first, first.spec, run, name=name, aliases=["phase1"]) == 1
        assert weights.register(second, second.spec, run, name=name, aliases=["champion"]) == 2
    fingerprints = [
        weights.save(e, e.spec, str(tmp_path / f"e{i}")).fingerprint for i, e in enumerate((first, second))
    ]

    champion = registry.resolve(f"models:/{name}@champion")
    assert (champion.name, champion.version, champion.run_id) == (name, 2, run.run_id)
    assert champion.uri == f"models:/{name}/2" and champion.fingerprint == fingerprints[1]
    assert champion.tags["gleam.backbone"] == "test_convnext" and champion.tags["gleam.embedding_dim"] == "16"
    assert registry.resolve(ModelURI(name, version=1)).fingerprint == fingerprints[0]
    assert registry.resolve(f"models:/{name}/2/") == champion

    local = registry.download(champion, tmp_path / "download")
    assert sorted(p.name for p in local.iterdir()) == ["encoder.json", "model.safetensors"]
    assert weights.load(str(local), expect_fingerprint=fingerprints[1])[2].fingerprint == fingerprints[1]
    # one run, two registrations: the second keeps its own artifact folder
    source = mlflow_client.get_model_version(name, "2").source
    assert source == f"runs:/{run.run_id}/encoder-{fingerprints[1][:12]}"
    assert (
        registry.free_artifact_path(mlflow_client, run.run_id, "encoder", "f" * 64) == "encoder-ffffffffffff"
    )
    assert registry.free_artifact_path(mlflow_client, run.run_id, "mllm", "f" * 64) == "mllm"

    registry.set_alias(name, "champion", 1)  # a rollback
    assert registry.resolve(f"models:/{name}@champion").version == 1
    assert weights.pin(f"models:/{name}@champion") == (f"models:/{name}/1", fingerprints[0])


def test_missing_models_aliases_and_versions_are_clear(mlflow_client, tmp_path: Path) -> None:
    name = f"gleam-c-registry-{uuid.uuid4().hex[:8]}"
    for uri in (f"models:/{name}@champion", f"models:/{name}/1"):
        with pytest.raises(ModelNotFoundError, match=f"cannot resolve {uri} in the MLflow registry"):
            registry.resolve(uri)
    registry.ensure_registered_model(mlflow_client, name, "first description")
    registry.ensure_registered_model(mlflow_client, name, "second description")  # exists: left as is
    assert mlflow_client.get_registered_model(name).description == "first description"
    with pytest.raises(ModelNotFoundError, match="cannot resolve"):
        registry.resolve(f"models:/{name}@nowhere")
    missing = registry.RegisteredVersion(name, 7, None)
    with pytest.raises(ModelNotFoundError, match=f"cannot download models:/{name}/7"):
        registry.download(missing, tmp_path / "download")
    with pytest.raises(RegistryURIError):
        registry.resolve(f"models:/{name}")  # parsed before the registry is asked


# --- lookups: a GLEAM-X model folder ---------------------------------------------------------------------


def test_gleam_x_version_resolves_and_downloads_once(
    mlflow_client, experiment_name: str, tiny_vlm_folder: Path, tmp_path: Path
) -> None:
    name = f"gleam-x-registry-{uuid.uuid4().hex[:8]}"
    with job_run("register-mllm", tracking=TrackingConfig(experiment=experiment_name)) as run:
        assert register_mllm(tiny_vlm_folder, name=name, alias="champion", run=run) == (name, 1)
    found = registry.resolve(f"models:/{name}@champion")
    assert (found.version, found.run_id) == (1, run.run_id)
    assert found.fingerprint == folder_fingerprint(tiny_vlm_folder)
    assert found.tags["gleam.kind"] == "mllm" and found.tags["gleam.model_type"] == "qwen2_5_vl"
    assert mlflow_client.get_model_version(name, "1").source == f"runs:/{run.run_id}/mllm"

    cache = tmp_path / "cache"
    target = registry.download_cached(found, cache)
    assert target == cache / f"{name}-v1" and model_files(target) == model_files(tiny_vlm_folder)
    assert folder_fingerprint(target) == found.fingerprint
    mlflow_client.delete_model_version(name, "1")  # a second call reuses the folder: no download
    assert registry.download_cached(found, cache) == target
    with pytest.raises(ModelNotFoundError, match="cannot download"):
        registry.download_cached(found, tmp_path / "other-cache")
    assert not any((tmp_path / "other-cache").iterdir())  # a failed download leaves nothing behind
    assert sorted(p.name for p in cache.iterdir()) == [f"{name}-v1"]  # no half-written folder left


def test_register_folder_logs_subfolders_and_tags_the_fingerprint(
    mlflow_client, experiment_name: str, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.json").write_text("{}")
    (folder / "sub" / "b.txt").write_text("b")
    name = f"gleam-x-registry-{uuid.uuid4().hex[:8]}"
    with job_run("register", tracking=TrackingConfig(experiment=experiment_name)) as run:
        created = registry.register_folder(
            folder,
            ["a.json", "sub/b.txt"],
            run.run_id,
            name,
            artifact_path="files",
            fingerprint="ab" * 32,
            tags={"gleam.kind": "test"},
            aliases=["one", "two"],
        )
    assert (created.name, created.version, created.fingerprint) == (name, 1, "ab" * 32)
    for alias in ("one", "two"):
        assert registry.resolve(f"models:/{name}@{alias}") == created
    local = registry.download(created, tmp_path / "out")
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == [
        "a.json",
        "sub/b.txt",
    ]
