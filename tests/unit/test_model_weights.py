"""Encoder weights: safetensors + JSON round trips (local, S3, MLflow registry), fingerprints, no pickle."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gleam import storage
from gleam.config import TrackingConfig
from gleam.model import weights
from gleam.model.encoder import GleamEncoder
from gleam.model.spec import EncoderSpec
from gleam.tracking import NullRun, job_run


def make_encoder(seed: int = 0, **overrides: object) -> GleamEncoder:
    torch.manual_seed(seed)
    return GleamEncoder(EncoderSpec.tiny("test_convnext", embed_dim=16, **overrides))


def embed(encoder: GleamEncoder) -> torch.Tensor:
    torch.manual_seed(42)
    with torch.no_grad():
        return encoder.eval()(torch.randn(3, 3, 64, 128))


def assert_saved_folder(folder: Path, encoder: GleamEncoder) -> dict:
    """Only safetensors and JSON, and encoder.json describes the weights beside it."""
    assert sorted(p.name for p in folder.iterdir()) == ["encoder.json", "model.safetensors"]
    data = (folder / "model.safetensors").read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    assert json.loads(data[8 : 8 + header_len])["__metadata__"] == {"format": "pt"}  # safetensors, no pickle
    meta = json.loads((folder / "encoder.json").read_text())
    assert meta["fingerprint"] == hashlib.sha256(data).hexdigest()
    assert meta["embedding_dim"] == 16 == encoder.embedding_dim
    assert meta["spec"]["backbone"] == "test_convnext" and meta["spec"]["mean"] == [0.5, 0.5, 0.5]
    assert meta["gleam_version"] and meta["created"] and meta["format"] == "gleam-encoder"
    return meta


def test_local_round_trip_gives_identical_embeddings(tmp_path: Path) -> None:
    encoder = make_encoder(channels_last=True)
    info = weights.save(encoder, encoder.spec, str(tmp_path / "enc"), extra={"phase": 1})
    meta = assert_saved_folder(tmp_path / "enc", encoder)
    assert meta["extra"] == {"phase": 1} and info.fingerprint == meta["fingerprint"]

    loaded, spec, loaded_info = weights.load(str(tmp_path / "enc"))
    assert not loaded.training and spec == encoder.spec.resolved()
    assert loaded_info.fingerprint == info.fingerprint and loaded_info.embedding_dim == 16
    assert torch.equal(embed(loaded), embed(encoder))
    again, _, _ = weights.load(str(tmp_path / "enc" / "encoder.json"))  # the file names its folder too
    assert torch.equal(embed(again), embed(encoder))


def test_fingerprint_is_stable_and_tells_weights_apart(tmp_path: Path) -> None:
    a, b = make_encoder(0), make_encoder(1)
    fa = weights.save(a, a.spec, str(tmp_path / "a")).fingerprint
    assert weights.save(a, a.spec, str(tmp_path / "a2")).fingerprint == fa
    assert weights.save(torch.compile(a), a.spec, str(tmp_path / "a3")).fingerprint == fa  # unwrapped
    assert weights.save(b, b.spec, str(tmp_path / "b")).fingerprint != fa


def test_saved_spec_no_longer_needs_the_pretrained_file(tmp_path: Path) -> None:
    init = tmp_path / "init.safetensors"
    save_file({k: v.contiguous() for k, v in make_encoder(3).backbone.state_dict().items()}, str(init))
    encoder = make_encoder(pretrained=str(init))
    weights.save(encoder, encoder.spec, str(tmp_path / "enc"))
    init.unlink()  # e.g. a serving machine that never had it
    loaded, spec, info = weights.load(str(tmp_path / "enc"))
    assert spec.pretrained is None and info.metadata["pretrained_from"] == str(init)
    assert torch.equal(embed(loaded), embed(encoder))


def test_s3_round_trip(s3_bucket: str) -> None:
    encoder = make_encoder()
    uri = storage.join(s3_bucket, "models", "enc-1")
    info = weights.save(encoder, encoder.spec, uri)
    assert [storage.basename(e.uri) for e in storage.list_files(uri)] == ["encoder.json", "model.safetensors"]
    loaded, _, loaded_info = weights.load(uri, expect_fingerprint=info.fingerprint)
    assert loaded_info.source == uri and torch.equal(embed(loaded), embed(encoder))


def test_fingerprint_mismatch_and_corruption_are_refused(tmp_path: Path) -> None:
    encoder = make_encoder()
    folder = tmp_path / "enc"
    info = weights.save(encoder, encoder.spec, str(folder))
    with pytest.raises(
        weights.FingerprintMismatchError, match=f"fingerprint {info.fingerprint}, expected 00"
    ):
        weights.load(str(folder), expect_fingerprint="00" * 32)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(weights.WeightsError, match="corrupt"):
        weights.load(str(folder))
    with pytest.raises(weights.WeightsError, match="no saved GLEAM encoder"):
        weights.load(str(tmp_path / "absent"))


def test_save_refuses_a_spec_of_another_architecture(tmp_path: Path) -> None:
    encoder = make_encoder()
    other = encoder.spec.model_copy(update={"embed_dim": 32})
    with pytest.raises(weights.WeightsError, match=r"spec\.embed_dim"):
        weights.save(encoder, other, str(tmp_path / "x"))


def test_register_then_load_by_alias_and_version(mlflow_client, experiment_name: str) -> None:
    name = f"gleam-c-test-{uuid.uuid4().hex[:8]}"
    first, second = make_encoder(0), make_encoder(1)
    with job_run("train", tracking=TrackingConfig(experiment=experiment_name)) as run:
        v1 = weights.register(first, first.spec, run, name=name, aliases=["phase1"])
        v2 = weights.register(second, second.spec, run, name=name, aliases=["phase2", "champion"])
    assert (v1, v2) == (1, 2)

    loaded, spec, info = weights.load(f"models:/{name}@champion")
    assert torch.equal(embed(loaded), embed(second)) and spec.embed_dim == 16
    assert (info.model_name, info.model_version, info.run_id) == (name, 2, run.run_id)
    assert info.uri == f"models:/{name}@champion"
    old, _, old_info = weights.load(f"models:/{name}/1", expect_fingerprint=None)
    assert torch.equal(embed(old), embed(first)) and old_info.model_version == 1
    assert old_info.fingerprint != info.fingerprint

    version = mlflow_client.get_model_version_by_alias(name, "phase1")
    assert int(version.version) == 1 and version.tags["gleam.fingerprint"] == old_info.fingerprint
    # both registrations of one run keep their own files; nothing but safetensors and JSON is logged
    paths = {a.path for a in mlflow_client.list_artifacts(run.run_id)}
    assert paths == {"encoder", f"encoder-{info.fingerprint[:12]}"}
    for folder in paths:
        names = {Path(a.path).name for a in mlflow_client.list_artifacts(run.run_id, folder)}
        assert names == {"model.safetensors", "encoder.json"}


def test_registry_errors_are_clear(mlflow_client) -> None:
    name = f"gleam-c-test-{uuid.uuid4().hex[:8]}"
    with pytest.raises(weights.WeightsError, match="cannot resolve"):
        weights.load(f"models:/{name}@nowhere")
    with pytest.raises(weights.WeightsError, match="models:/<name>@<alias>"):
        weights.load(f"models:/{name}")
    encoder = make_encoder()
    assert weights.register(encoder, encoder.spec, NullRun(), name=name) is None  # other ranks: no-op
    with pytest.raises(weights.WeightsError, match="needs a run"):
        weights.register(encoder, encoder.spec, None, name=name)
