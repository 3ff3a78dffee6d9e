"""`encoder.pretrained: hub` without the internet: a Hugging Face Hub on 127.0.0.1 (tests.support.hub_server)
that answers the resolve endpoint the way huggingface.co does, tiny timm models with random weights, and
the store the workers load from (local and S3)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from typer.testing import CliRunner

from gleam import storage
from gleam.errors import RefusedError
from gleam.model.encoder import GleamEncoder, PretrainedWeightsError
from gleam.model.hub_weights import HubWeightsUnavailableError, stage_pretrained
from gleam.model.spec import HUB, EncoderSpec
from tests.support.hub_server import COMMIT, LocalHub


@pytest.fixture
def local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """The hub client pointed at a LocalHub (HF_ENDPOINT, read at call time by gleam), an empty HF cache, a
    fresh store, and no connection anywhere but 127.0.0.1."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("GLEAM_STORE", str(tmp_path / "store"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # the library read HF_HUB_OFFLINE once at import; an outer environment must not switch it off here
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    real_connect = socket.socket.connect

    def local_only(sock: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"the test tried to reach {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    with LocalHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        yield hub


def random_checkpoint(backbone: str, seed: int) -> dict[str, torch.Tensor]:
    """What the Hub holds for a timm model: the backbone with its 1000-class head (random weights here)."""
    torch.manual_seed(seed)
    return timm.create_model(backbone, num_classes=1000).state_dict()


def assert_backbone_has(encoder: GleamEncoder, state: dict[str, torch.Tensor]) -> None:
    for key, value in encoder.backbone.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)


def test_hub_weights_are_fetched_once_stored_by_content_and_loaded_by_every_worker(
    local_hub: LocalHub, tmp_path: Path
) -> None:
    state = random_checkpoint("test_convnext", seed=1)
    served = save_safetensors(state)
    assert local_hub.add_timm("test_convnext", served) == "timm/test_convnext.r160_in1k"
    spec = EncoderSpec.tiny("test_convnext", pretrained=HUB)

    staged = stage_pretrained(spec)

    sha = hashlib.sha256(served).hexdigest()
    stored = tmp_path / "store" / "pretrained" / "test_convnext" / f"{sha}.safetensors"
    assert staged.spec is not None and staged.spec.pretrained == str(stored)
    assert stored.read_bytes() == served and spec.pretrained == HUB  # the user's spec keeps `hub`
    assert staged.tags == {
        "gleam.pretrained.backbone": "test_convnext",
        "gleam.pretrained.repo_id": "timm/test_convnext.r160_in1k",
        "gleam.pretrained.filename": "model.safetensors",
        "gleam.pretrained.revision": "main",
        "gleam.pretrained.commit": COMMIT,
        "gleam.pretrained.endpoint": local_hub.endpoint,
        "gleam.pretrained.sha256": sha,
        "gleam.pretrained.size": str(len(served)),
        "gleam.pretrained.uri": str(stored),
    }
    assert json.loads(stored.with_suffix(".json").read_text())["repo_id"] == "timm/test_convnext.r160_in1k"
    for _worker in range(2):  # every worker loads the stored file; none asks the Hub
        assert_backbone_has(GleamEncoder(staged.spec), state)
    assert local_hub.gets("model.safetensors") == 1

    again = stage_pretrained(spec)  # the same job submitted again: same file, same config for the workers
    assert again == staged and local_hub.gets("model.safetensors") == 1


def test_a_pickled_hub_checkpoint_is_stored_as_safetensors_in_s3(local_hub: LocalHub, s3_bucket: str) -> None:
    """A repo with only pytorch_model.bin (timm asks for model.safetensors first): read weights-only,
    stored as safetensors in an S3 store, and loaded by the workers from s3://; an absent s3:// file is
    one clear error on the driver."""
    state = random_checkpoint("test_resnet", seed=2)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    local_hub.add_timm("test_resnet", buffer.getvalue(), filename="pytorch_model.bin")

    staged = stage_pretrained(EncoderSpec.tiny("test_resnet", pretrained=HUB), store=f"{s3_bucket}/gleam")

    assert staged.spec is not None and staged.spec.pretrained is not None
    sha = staged.tags["gleam.pretrained.sha256"]
    assert staged.spec.pretrained == f"{s3_bucket}/gleam/pretrained/test_resnet/{sha}.safetensors"
    data = storage.read_bytes(staged.spec.pretrained)
    assert hashlib.sha256(data).hexdigest() == sha
    assert load_safetensors(data).keys() == state.keys()
    assert staged.tags["gleam.pretrained.filename"] == "pytorch_model.bin"
    assert local_hub.gets("model.safetensors") == 0 and local_hub.gets("pytorch_model.bin") == 1
    assert_backbone_has(GleamEncoder(staged.spec), state)
    with pytest.raises(PretrainedWeightsError, match="pretrained weights not found: s3://"):  # on the driver
        stage_pretrained(EncoderSpec.tiny("test_resnet", pretrained=f"{s3_bucket}/absent.safetensors"))


def test_offline_or_a_refusing_hub_is_one_line_with_exit_3_and_no_request(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_hub.add_timm("test_convnext", save_safetensors(random_checkpoint("test_convnext", seed=3)))

    with pytest.raises(HubWeightsUnavailableError) as refused:  # a repo the Hub does not know (401)
        stage_pretrained(EncoderSpec.tiny("test_vit", pretrained=HUB))
    message = str(refused.value)
    assert refused.value.exit_code == 3 and "\n" not in message
    assert (
        "timm/test_vit.r160_in1k" in message
        and "RepositoryNotFoundError" in message
        and "hf-cache" in message
    )

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read when the job runs, not when the library was imported
    asked = len(local_hub.requests)
    with pytest.raises(
        HubWeightsUnavailableError, match=r"offline .*set encoder\.pretrained to a weights file"
    ):
        stage_pretrained(EncoderSpec.tiny("test_convnext", pretrained=HUB))
    assert len(local_hub.requests) == asked  # offline means no request at all

    with pytest.raises(PretrainedWeightsError, match="fetched by the train driver"):  # a worker never fetches
        GleamEncoder(EncoderSpec.tiny("test_convnext", pretrained=HUB))


def test_gleam_train_with_hub_offline_exits_3_with_one_line_before_ray_starts(
    local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    from gleam import cluster
    from gleam_cli.main import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started: list[object] = []
    real_init = cluster.init_ray
    monkeypatch.setattr(cluster, "init_ray", lambda *a, **k: started.append(a) or real_init(*a, **k))
    ray_was_up = ray.is_initialized()
    overrides = {
        "name": "hub-offline",
        "corpus": str(tmp_path / "corpus"),
        "modalities": "[drone]",
        "steps": "1",
        "storage_path": str(tmp_path / "train"),
        "encoder.backbone": "test_convnext",
        "encoder.pretrained": "hub",
    }
    args = ["train", *(part for key, value in overrides.items() for part in ("--set", f"{key}={value}"))]

    outcome = CliRunner().invoke(app, args)

    assert outcome.exit_code == RefusedError.exit_code == 3, outcome.output
    lines = outcome.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: cannot fetch the pretrained weights of test_convnext"
    )
    assert "offline" in lines[0] and "'hf-cache'" in lines[0] and "Traceback" not in outcome.output
    assert started == [] and ray.is_initialized() == ray_was_up
    assert not (tmp_path / "train").exists()  # nothing of the run was written


def test_a_finished_hub_run_resubmitted_offline_is_done_without_a_request(
    local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's record answers first: a complete run needs neither the Hub nor the corpus again."""
    from dataclasses import asdict

    from gleam.config import config_hash
    from gleam.training.config import TrainConfig
    from gleam.training.phases import STATE_FILE, TrainResult, absolute_paths, run_dir, run_training

    config = TrainConfig.model_validate(
        {
            "name": "hub-done",
            "corpus": str(tmp_path / "gone"),  # deleted since: a finished run does not read it
            "modalities": ["drone"],
            "steps": 1,
            "storage_path": str(tmp_path / "train"),
            "encoder": {"backbone": "test_convnext", "pretrained": HUB},
        }
    )
    resolved = absolute_paths(config)
    done = TrainResult("hub-done", "phase1", 1, "ckpt", "ckpt/encoder", None, None, None)
    digest = config_hash(resolved, exclude={"tracking", "batching"})
    state = {"config_hash": digest, "status": "complete", "result": asdict(done)}
    storage.write_json(storage.join(run_dir(resolved), STATE_FILE), state)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    again = run_training(config)

    assert again.already_done and again.checkpoint == "ckpt"
    assert local_hub.requests == []
