"""The shared encoder: unit float32 embeddings at every modality's size, for convnets and ViTs alike,
and pretrained weights from a local file or the local Hugging Face cache (never the network)."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest
import timm
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from gleam.corpus.schema import Modality
from gleam.model.encoder import GleamEncoder, PretrainedWeightsError
from gleam.model.spec import IMAGENET_MEAN, EncoderSpec

BACKBONES = ["test_convnext", "test_vit", "vit_tiny_patch16_224"]


def batch(spec: EncoderSpec, modality: Modality, n: int = 2) -> torch.Tensor:
    width, height = spec.size(modality)
    return torch.randn(n, 3, height, width)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_unit_embeddings_at_every_modality_size(backbone: str) -> None:
    torch.manual_seed(0)
    spec = EncoderSpec.tiny(backbone)
    encoder = GleamEncoder(spec).eval()
    assert spec.size(Modality.PANORAMA) == (128, 64)  # wide
    with torch.no_grad():
        for modality in Modality:
            out = encoder.encode(batch(spec, modality, 3), modality)
            assert out.shape == (3, encoder.embedding_dim) and out.dtype == torch.float32
            torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert encoder.embedding_dim == timm.create_model(backbone, num_classes=0).num_features


@pytest.mark.parametrize("backbone", ["test_convnext", "test_vit"])
def test_float32_output_under_bf16_autocast(backbone: str) -> None:
    encoder = GleamEncoder(EncoderSpec.tiny(backbone, embed_dim=16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoder(torch.randn(2, 3, 64, 128))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_projection_sets_the_embedding_dim_and_gradients_reach_every_layer() -> None:
    encoder = GleamEncoder(EncoderSpec.tiny("test_convnext", embed_dim=24))
    out = encoder(torch.randn(4, 3, 64, 128))
    assert out.shape == (4, 24) and encoder.embedding_dim == 24 and encoder.feature_dim == 64
    (out[:, 0] * torch.arange(4.0)).sum().backward()
    grads = {name: p.grad for name, p in encoder.named_parameters()}
    assert grads["proj.weight"] is not None and grads["proj.weight"].abs().sum() > 0
    stem = next(name for name in grads if name.startswith("backbone.stem"))
    assert grads[stem] is not None and grads[stem].abs().sum() > 0


@pytest.mark.parametrize(("backbone", "stride"), [("test_convnext", 32), ("test_vit", 16)])
def test_feature_map_of_a_wide_panorama(backbone: str, stride: int) -> None:
    encoder = GleamEncoder(EncoderSpec.tiny(backbone)).eval()
    with torch.no_grad():
        fmap = encoder.forward_features_map(torch.randn(2, 3, 64, 128))
    assert fmap.shape == (2, encoder.feature_dim, 64 // stride, 128 // stride)


def test_encode_checks_the_modality_size() -> None:
    encoder = GleamEncoder(EncoderSpec.tiny())
    with pytest.raises(ValueError, match="panorama images must be 128x64"):
        encoder.encode(torch.randn(1, 3, 64, 64), "panorama")


def test_channels_last_and_grad_checkpointing_do_not_change_the_function() -> None:
    torch.manual_seed(1)
    plain = GleamEncoder(EncoderSpec.tiny("test_vit"))
    fancy = GleamEncoder(EncoderSpec.tiny("test_vit", channels_last=True, grad_checkpointing=True))
    fancy.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 128)
    torch.testing.assert_close(fancy(x), plain(x))
    fancy(x).sum().backward()  # checkpointed backward runs


def test_unknown_backbone_and_unknown_spec_keys_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown timm backbone 'convnext_nope'"):
        GleamEncoder(EncoderSpec.tiny("convnext_nope"))
    with pytest.raises(ValidationError, match="embed_dims"):
        EncoderSpec.model_validate({"embed_dims": 4})
    with pytest.raises(ValidationError, match="satellite size must be square"):
        EncoderSpec(image_sizes={Modality.SATELLITE: (64, 32)})
    with pytest.raises(ValidationError, match="multiple of 4"):
        EncoderSpec(image_sizes={Modality.PANORAMA: (130, 64)})


def test_spec_defaults_and_json_round_trip() -> None:
    spec = EncoderSpec()
    assert spec.backbone == "convnext_base.fb_in22k_ft_in1k_384" and spec.pretrained is None
    assert spec.size("panorama") == (768, 384) and spec.size(Modality.DRONE) == (384, 384)
    assert spec.normalization()[0] == IMAGENET_MEAN  # from timm's pretrained config
    assert EncoderSpec.tiny("test_vit").normalization() == ((0.5,) * 3, (0.5,) * 3)
    resolved = EncoderSpec.tiny("test_vit", mean=(0.1, 0.2, 0.3)).resolved()
    assert resolved.mean == (0.1, 0.2, 0.3) and resolved.std == (0.5, 0.5, 0.5)
    assert EncoderSpec.model_validate_json(resolved.model_dump_json()) == resolved


# --- pretrained weights ----------------------------------------------------------------------------------


def classifier_checkpoint(backbone: str, **kwargs: object) -> dict[str, torch.Tensor]:
    """What a timm/HF checkpoint holds: the backbone *with* its 1000-class head."""
    torch.manual_seed(123)
    return timm.create_model(backbone, num_classes=1000, **kwargs).state_dict()


def assert_backbone_has(encoder: GleamEncoder, state: dict[str, torch.Tensor]) -> None:
    own = encoder.backbone.state_dict()
    for key, value in own.items():
        torch.testing.assert_close(value, state[key], msg=key)


def test_pretrained_from_a_safetensors_file_drops_the_classifier(tmp_path: Path) -> None:
    state = classifier_checkpoint("test_convnext")
    assert "head.fc.weight" in state
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    encoder = GleamEncoder(EncoderSpec.tiny("test_convnext", pretrained=str(path)))
    assert_backbone_has(encoder, state)
    folder = GleamEncoder(EncoderSpec.tiny("test_convnext", pretrained=str(tmp_path)))  # a snapshot folder
    assert_backbone_has(folder, state)


def test_pretrained_from_a_torch_checkpoint_is_read_weights_only(tmp_path: Path) -> None:
    state = classifier_checkpoint("test_convnext")
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    assert_backbone_has(GleamEncoder(EncoderSpec.tiny("test_convnext", pretrained=str(path))), state)

    pickled = tmp_path / "with_args.pth"  # old training scripts pickled their argparse namespace
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)}, pickled)
    with pytest.raises(PretrainedWeightsError, match="weights-only"):
        GleamEncoder(EncoderSpec.tiny("test_convnext", pretrained=str(pickled)))


def test_vit_position_embeddings_are_resampled_to_the_tile_size(tmp_path: Path) -> None:
    state = classifier_checkpoint("test_vit", img_size=160)  # pretrained at 160 px, we run at 64 px
    path = tmp_path / "vit.safetensors"
    save_file(state, str(path))
    encoder = GleamEncoder(EncoderSpec.tiny("test_vit", pretrained=str(path)))
    assert encoder.backbone.pos_embed.shape[1] == 1 + (64 // 16) ** 2 < state["pos_embed"].shape[1]
    torch.testing.assert_close(encoder.backbone.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


def test_weights_of_another_backbone_or_a_missing_file_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file(classifier_checkpoint("test_resnet"), str(path))
    with pytest.raises(PretrainedWeightsError, match="does not fit backbone test_convnext"):
        GleamEncoder(EncoderSpec.tiny("test_convnext", pretrained=str(path)))
    with pytest.raises(PretrainedWeightsError, match="not found"):
        GleamEncoder(EncoderSpec.tiny("test_convnext", pretrained=str(tmp_path / "absent.safetensors")))


def test_a_gleam_encoder_file_initialises_the_backbone(tmp_path: Path) -> None:
    """Phase 2 may start its backbone from phase 1's saved encoder (projection left out)."""
    phase1 = GleamEncoder(EncoderSpec.tiny("test_convnext", embed_dim=8))
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in phase1.state_dict().items()}, str(path))
    phase2 = GleamEncoder(EncoderSpec.tiny("test_convnext", embed_dim=16, pretrained=str(path)))
    assert_backbone_has(phase2, phase1.backbone.state_dict())


def fake_hf_cache(root: Path, repo: str, state: dict[str, torch.Tensor]) -> None:
    """The on-disk layout huggingface_hub leaves after a download: refs/main -> snapshots/<commit>/."""
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))


def test_hf_cache_loads_cached_weights_and_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    spec = EncoderSpec.tiny("resnet18", pretrained="hf-cache")
    with pytest.raises(PretrainedWeightsError, match=r"timm/resnet18\.a1_in1k\) are not in the local"):
        GleamEncoder(spec)
    state = classifier_checkpoint("resnet18")
    fake_hf_cache(tmp_path / "hub", "timm/resnet18.a1_in1k", state)
    assert_backbone_has(GleamEncoder(spec), state)
