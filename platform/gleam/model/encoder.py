"""GLEAM-C's encoder: one timm backbone shared by every view, an optional projection, unit-length output.

Every modality goes through the same network at its own input size (panoramas are wide), so the
backbone must accept variable sizes: convnets do by nature, ViTs are built with `dynamic_img_size=True`
(position embeddings are interpolated per input). Window-attention models with fixed sizes (Swin,
MaxViT, CoAtNet) do not fit the panorama size; use a convnet or a plain ViT/EVA/DeiT.

Embeddings are float32 and L2-normalised even under autocast, because the contrastive loss and the
FAISS index both assume unit vectors.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gleam import storage
from gleam.corpus.schema import Modality
from gleam.errors import RefusedError, StorageError
from gleam.model.spec import HF_CACHE, HUB, EncoderSpec, as_modality
from gleam.uris import is_s3

logger = logging.getLogger(__name__)

# Weight files looked for in a folder (a Hugging Face snapshot or a copy of one), best first.
WEIGHT_FILES = (
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
)
# timm's own preference: a safetensors twin of a pickled checkpoint is read instead of it
SAFE_TWINS = {
    "pytorch_model.bin": "model.safetensors",
    "open_clip_pytorch_model.bin": "open_clip_model.safetensors",
}


class PretrainedWeightsError(RefusedError, RuntimeError):
    """Pretrained weights are absent or do not fit the backbone; the message says which and why."""


class GleamEncoder(nn.Module):
    """images (B, 3, H, W), normalised as `spec.normalization()` says -> embeddings (B, D), unit norm."""

    def __init__(self, spec: EncoderSpec, load_pretrained: bool = True) -> None:
        """`load_pretrained=False` skips `spec.pretrained` (used when saved weights replace them anyway)."""
        super().__init__()
        self.spec = spec
        self.backbone = build_backbone(spec)
        if load_pretrained and spec.pretrained is not None:
            load_pretrained_into(self.backbone, spec.backbone, spec.pretrained)
        self.feature_dim = int(self.backbone.num_features)
        self.proj: nn.Module = (
            nn.Linear(self.feature_dim, spec.embed_dim, bias=False) if spec.embed_dim else nn.Identity()
        )
        self.embedding_dim = int(spec.embed_dim or self.feature_dim)
        if spec.grad_checkpointing:
            self.backbone.set_grad_checkpointing(True)
        if spec.channels_last:
            self.to(memory_format=torch.channels_last)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if self.spec.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(self._prepare(images))  # pooled pre-logits (num_classes=0)
        with torch.autocast(device_type=features.device.type, enabled=False):
            if isinstance(self.proj, nn.Linear):  # float32 unless the whole model was cast
                features = features.to(self.proj.weight.dtype)
            return F.normalize(self.proj(features).float(), dim=-1, eps=1e-6)

    def encode(self, images: torch.Tensor, modality: Modality | str) -> torch.Tensor:
        """forward() after checking that the batch has the spec's size for `modality`."""
        modality = as_modality(modality)
        width, height = self.spec.size(modality)
        if tuple(images.shape[-2:]) != (height, width):
            got = f"{images.shape[-1]}x{images.shape[-2]}"
            raise ValueError(f"{modality.value} images must be {width}x{height} (WxH), got {got}")
        return self(images)

    def forward_features_map(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's last spatial feature map (B, C, H', W'); ViT patch tokens are reshaped to a grid.

        Used for explanation heatmaps: C equals `feature_dim`, and pooling this map gives the
        embedding's input (up to the backbone's head norm).
        """
        images = self._prepare(images)
        backbone = self.backbone
        if hasattr(backbone, "forward_intermediates"):
            try:
                maps = backbone.forward_intermediates(
                    images, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True
                )
                return maps[-1]
            except (TypeError, NotImplementedError, AssertionError):
                pass  # an older signature: fall back to forward_features
        features = backbone.forward_features(images)
        if features.ndim == 4:
            return features
        raise NotImplementedError(f"{self.spec.backbone} exposes no spatial feature map")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_backbone(spec: EncoderSpec) -> nn.Module:
    """A timm backbone with random weights and no classifier (pretrained weights are loaded after)."""
    import timm

    if not timm.is_model(spec.backbone):
        base = spec.backbone.split(".")[0]
        close = timm.list_models(f"*{base[:8]}*")[:8]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ValueError(f"unknown timm backbone {spec.backbone!r}{hint}")
    kwargs: dict[str, object] = {"pretrained": False, "num_classes": 0}
    if spec.drop_path_rate:
        kwargs["drop_path_rate"] = spec.drop_path_rate
    width, height = spec.size(Modality.SATELLITE)
    size_kwargs = {"img_size": (height, width), "dynamic_img_size": True, "dynamic_img_pad": True}
    # ViT-like models take position embeddings sized for the tile, interpolated for other sizes;
    # convnets take none of these arguments. Try the richest set first, drop what is refused.
    for keys in (("img_size", "dynamic_img_size", "dynamic_img_pad"), ("img_size", "dynamic_img_size")):
        try:
            return timm.create_model(spec.backbone, **kwargs, **{k: size_kwargs[k] for k in keys})
        except TypeError as exc:
            if not any(key in str(exc) for key in keys):
                raise
    return timm.create_model(spec.backbone, **kwargs)


_FIX_FIT = "pick weights made for this backbone, or set encoder.pretrained to null (random weights)"


# --- pretrained backbone weights: a file (local or in the store) or the local Hugging Face cache ----------
# (`hub` never reaches this code: the train driver fetches it into the store first, see hub_weights)


def load_pretrained_into(backbone: nn.Module, name: str, source: str) -> None:
    """Load `source` (a local file or folder, an s3:// file, or 'hf-cache') into a timm backbone, strictly.

    timm's own checkpoint filter of the model family is applied (ViT position embeddings are resampled
    to our input grid, original-repo layouts are remapped); classifier weights are dropped. Any other
    missing or unexpected key is an error: a silently half-loaded backbone trains, badly.
    """
    with local_weights(name, source) as local:
        state = read_state_dict(local)
    path = source if is_s3(source) else local  # what the messages name: the user's location
    try:
        state = _adapt_state_dict(backbone, state)
    except (KeyError, ValueError, RuntimeError) as exc:  # timm's filter met a layout it does not know
        raise PretrainedWeightsError(f"{path} does not fit backbone {name} ({exc!r}): {_FIX_FIT}") from None
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise PretrainedWeightsError(f"{path} does not fit backbone {name} ({exc}): {_FIX_FIT}") from None
    if result.missing_keys or result.unexpected_keys:
        raise PretrainedWeightsError(
            f"{path} does not fit backbone {name}: missing {_few(result.missing_keys)}, "
            f"unexpected {_few(result.unexpected_keys)}; {_FIX_FIT}"
        )
    logger.info("loaded pretrained weights for %s from %s", name, path)


def check_pretrained(name: str, source: str) -> None:
    """Raise PretrainedWeightsError now if `source` names no weights for backbone `name`.

    Called on the driver before any worker starts, so a wrong path is one clear line, not a worker crash.
    """
    if is_s3(source):
        try:
            found = storage.is_file(source)
        except OSError as exc:  # the store did not answer: not the user's path
            raise StorageError(f"cannot check pretrained weights {source}: {exc}") from exc
        if not found:
            raise PretrainedWeightsError(_not_found(source))
    else:
        pretrained_weights_path(name, source)


def pretrained_weights_path(name: str, source: str) -> Path:
    """The local file that `source` names for backbone `name`; raises PretrainedWeightsError saying what
    to fix."""
    if source == HUB:
        raise PretrainedWeightsError(
            f"encoder.pretrained {HUB!r} is fetched by the train driver (gleam train) into the store; "
            f"elsewhere set it to a weights file or folder, {HF_CACHE!r} (the local HF cache) or null"
        )
    return hf_cached_weights(name) if source == HF_CACHE else weights_file(source)


@contextmanager
def local_weights(name: str, source: str) -> Iterator[Path]:
    """A local file with the weights `source` names: the file itself, or a temporary copy of an s3:// one
    (streamed to disk, not held in memory: several workers of a node may load a large backbone at once)."""
    if not is_s3(source):
        yield pretrained_weights_path(name, source)
        return
    with tempfile.TemporaryDirectory(prefix="gleam-pretrained-") as tmp:
        local = Path(tmp, storage.basename(source))
        try:
            with storage.open_input(source) as remote, open(local, "wb") as out:
                shutil.copyfileobj(remote, out, 1 << 24)
        except FileNotFoundError:
            raise PretrainedWeightsError(_not_found(source)) from None
        except OSError as exc:
            raise StorageError(f"cannot read pretrained weights {source}: {exc}") from exc
        yield local


def _not_found(location: object) -> str:
    return (
        f"pretrained weights not found: {location}; set encoder.pretrained to a weights file or folder, "
        f"{HF_CACHE!r} (the local Hugging Face cache), {HUB!r} (the Hugging Face Hub) or null"
    )


def weights_file(source: str | os.PathLike[str]) -> Path:
    """The weights file named by `source`: the file itself, or the best-known file in a folder."""
    path = Path(source).expanduser()
    if path.is_dir():
        for candidate in WEIGHT_FILES:
            if (path / candidate).is_file():
                return path / candidate
        raise PretrainedWeightsError(
            f"no weights file ({', '.join(WEIGHT_FILES)}) in folder {path}: put one there or point "
            "encoder.pretrained at the file"
        )
    if not path.is_file():
        raise PretrainedWeightsError(_not_found(path))
    return path


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved now (not at import) from HF_HUB_CACHE / HF_HOME."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


@dataclass(frozen=True)
class HubSource:
    """Where timm's pretrained config says a backbone's weights live on the Hugging Face Hub."""

    repo_id: str
    revision: str | None  # None: the repo's default branch
    filenames: tuple[str, ...]  # best first


def hub_source(name: str) -> HubSource:
    """The Hub repo and candidate files of timm's default weights for `name` (`model.tag` picks a tag)."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except Exception:  # timm raises for some malformed names; the backbone check reports those
        cfg = None
    if cfg is None or not cfg.hf_hub_id:
        raise PretrainedWeightsError(
            f"timm knows no Hugging Face weights for {name!r}: set encoder.pretrained to a file or null"
        )
    repo, _, revision = cfg.hf_hub_id.partition("@")
    named = cfg.hf_hub_filename
    filenames = (*([SAFE_TWINS[named]] if named in SAFE_TWINS else []), named) if named else WEIGHT_FILES
    return HubSource(repo, revision or None, tuple(filenames))


def hf_cached_weights(name: str) -> Path:
    """The cached file of timm's Hugging Face weights for `name`; nothing is ever downloaded."""
    from huggingface_hub import try_to_load_from_cache

    source = hub_source(name)
    cache = hf_cache_dir()
    for filename in source.filenames:
        found = try_to_load_from_cache(source.repo_id, filename, cache_dir=cache, revision=source.revision)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    raise PretrainedWeightsError(
        f"weights of {name} ({source.repo_id}) are not in the local Hugging Face cache {cache}; fetch them "
        f"on a machine with network (`hf download {source.repo_id}`) and copy the cache, set pretrained "
        f"to a file, or to {HUB!r} (fetched from the Hub by the train driver)"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a torch checkpoint read with weights_only=True (no pickle)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(
            f"cannot read {path} as a weights-only torch checkpoint ({exc}): convert it to .safetensors"
        ) from None
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, Mapping):
        raise PretrainedWeightsError(f"{path} holds no state dict: point encoder.pretrained at weights")
    return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def _adapt_state_dict(backbone: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrappers (DDP's `module.`, a GLEAM encoder's `backbone.`), apply timm's filter, drop heads."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):  # a GLEAM encoder: keep its backbone, not its head
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    filter_fn = getattr(sys.modules.get(type(backbone).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, backbone)
    classifiers = (getattr(backbone, "pretrained_cfg", None) or {}).get("classifier") or ()
    if isinstance(classifiers, str):
        classifiers = (classifiers,)
    own = backbone.state_dict()
    for name in classifiers:
        for suffix in (".weight", ".bias"):
            if name + suffix not in own:
                state.pop(name + suffix, None)
    return state


def _few(keys: list[str], limit: int = 6) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
