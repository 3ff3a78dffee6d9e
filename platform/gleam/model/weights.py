"""Encoder weights on disk, in the store and in the MLflow registry: safetensors + JSON, never pickle.

A saved encoder is a folder of two files: `model.safetensors` (the state dict) and `encoder.json` (the
spec with its normalisation written out, the embedding size, and a fingerprint = sha256 of the
safetensors bytes). `encoder.json` is written last, so its presence means the folder is complete. The
fingerprint is what an index records and what a server checks: vectors from one encoder must never
be searched with queries from another.

Registry (`gleam.registry` does the MLflow I/O): `register()` logs the folder as artifacts of a run and
creates a version of a registered model (`gleam-c` by default) tagged with the fingerprint.
`load("models:/gleam-c@alias")` resolves the alias to one version first, then downloads that version's
artifacts, so a concurrent alias move cannot mix two versions.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, TypeVar

import torch

from gleam import registry, storage
from gleam.errors import RefusedError
from gleam.model.encoder import GleamEncoder
from gleam.model.spec import EncoderSpec

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "encoder.json"
FORMAT = "gleam-encoder"
FORMAT_VERSION = 1
DEFAULT_MODEL_NAME = registry.GLEAM_C
ARTIFACT_PATH = "encoder"
# Fields that shape the network or its inputs: the spec saved with the weights must agree on them.
_ARCHITECTURE_FIELDS = ("backbone", "embed_dim", "image_sizes")


class WeightsError(RefusedError, RuntimeError):
    """Saved weights are missing, corrupt, or not a GLEAM encoder; the message names the URI."""


class FingerprintMismatchError(WeightsError):
    """The weights are not the ones the caller expected (e.g. an index built with another encoder)."""


@dataclass(frozen=True)
class EncoderInfo:
    """What `load` found: where, which weights, and (for the registry) which model version."""

    uri: str
    source: str
    fingerprint: str
    embedding_dim: int
    created: str
    gleam_version: str
    model_name: str | None = None
    model_version: int | None = None
    run_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)


# --- files ----------------------------------------------------------------------------------------------


def serialize(encoder: GleamEncoder) -> bytes:
    """The state dict as safetensors bytes: contiguous CPU tensors, so layout never changes the hash."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in encoder.state_dict().items()}
    return save(state, metadata={"format": "pt"})


def unwrap_as(model: torch.nn.Module, cls: type[ModuleT]) -> ModuleT:
    """The `cls` module inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while not isinstance(model, cls):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"expected a {cls.__name__}, got {type(model).__name__}")
        model = inner
    return model


def unwrap(model: torch.nn.Module) -> GleamEncoder:
    """The GleamEncoder inside DDP and torch.compile wrappers."""
    return unwrap_as(model, GleamEncoder)


def fingerprint_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save(
    encoder: GleamEncoder, spec: EncoderSpec, uri: str, extra: Mapping[str, Any] | None = None
) -> EncoderInfo:
    """Write `model.safetensors` then `encoder.json` under `uri` (a local folder or a store URI).

    `encoder` may be wrapped in DDP or torch.compile. `extra` (JSON-able: phase, step, metrics...)
    is kept in `encoder.json` under "extra".
    """
    import timm

    from gleam import __version__

    encoder = unwrap(encoder)
    _check_same_architecture(encoder.spec, spec)
    data = serialize(encoder)
    fingerprint = fingerprint_of(data)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights_file": WEIGHTS_FILE,
        "fingerprint": fingerprint,
        "embedding_dim": encoder.embedding_dim,
        "feature_dim": encoder.feature_dim,
        "num_parameters": encoder.num_parameters(),
        # the weights replace any pretrained init: rebuilding must not look for that file again
        "spec": spec.resolved().model_copy(update={"pretrained": None}).model_dump(mode="json"),
        "pretrained_from": spec.pretrained,
        "gleam_version": __version__,
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "created": created,
        "extra": dict(extra or {}),
    }
    uri = storage.normalize(uri)
    storage.write_bytes(storage.join(uri, WEIGHTS_FILE), data)
    storage.write_json(storage.join(uri, CONFIG_FILE), metadata)  # last: marks the folder complete
    return _info(uri, uri, metadata)


def load(
    uri: str,
    map_location: str | torch.device = "cpu",
    expect_fingerprint: str | None = None,
) -> tuple[GleamEncoder, EncoderSpec, EncoderInfo]:
    """Load an encoder (in eval mode) from a folder, a store URI, `models:/name@alias` or `models:/name/N`.

    The weights' sha256 must match `encoder.json` (else the files are corrupt) and, when given,
    `expect_fingerprint` (else FingerprintMismatchError). No pickle is read on any path.
    """
    if registry.is_registry_uri(uri):
        with tempfile.TemporaryDirectory(prefix="gleam-model-") as tmp:
            local, found = download_registered(uri, tmp)
            encoder, spec, info = _load_folder(local, uri, map_location, expect_fingerprint)
        info = replace(info, model_name=found.name, model_version=found.version, run_id=found.run_id)
        return encoder, spec, info
    folder = storage.normalize(uri)
    if storage.basename(folder) in (CONFIG_FILE, WEIGHTS_FILE):
        folder = storage.parent(folder)
    return _load_folder(folder, uri, map_location, expect_fingerprint)


def read_metadata(uri: str) -> dict[str, Any]:
    """`encoder.json` of a saved folder or store URI, checked to be a GLEAM encoder."""
    config_uri = storage.join(uri, CONFIG_FILE)
    try:
        metadata = storage.read_json(config_uri)
    except storage.StorageError as exc:
        raise WeightsError(f"no saved GLEAM encoder at {uri}: {exc}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise WeightsError(f"{config_uri} is not a GLEAM encoder config")
    if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
        raise WeightsError(f"{config_uri} has format {metadata['format_version']}; upgrade gleam to read it")
    return metadata


def _load_folder(
    folder: str, requested: str, map_location: str | torch.device, expect_fingerprint: str | None
) -> tuple[GleamEncoder, EncoderSpec, EncoderInfo]:
    from safetensors.torch import load as load_safetensors

    metadata = read_metadata(folder)
    weights_uri = storage.join(folder, WEIGHTS_FILE)  # never a path taken from the JSON
    try:
        data = storage.read_bytes(weights_uri)
    except storage.StorageError as exc:
        raise WeightsError(f"encoder weights missing: {exc}") from None
    actual = fingerprint_of(data)
    if actual != metadata.get("fingerprint"):
        raise WeightsError(f"{weights_uri} is corrupt: sha256 {actual} differs from {CONFIG_FILE}")
    if expect_fingerprint is not None and expect_fingerprint != actual:
        raise FingerprintMismatchError(
            f"encoder {requested} has fingerprint {actual}, expected {expect_fingerprint}: these are "
            "other weights than the ones the caller was built with"
        )
    spec = EncoderSpec.model_validate(metadata["spec"])
    encoder = GleamEncoder(spec, load_pretrained=False)
    try:
        encoder.load_state_dict(load_safetensors(data), strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"weights at {folder} do not fit their own spec: {exc}") from None
    encoder.to(map_location).eval()
    return encoder, spec, _info(requested, folder, metadata)


def _info(uri: str, source: str, metadata: dict[str, Any]) -> EncoderInfo:
    return EncoderInfo(
        uri=uri,
        source=source,
        fingerprint=metadata["fingerprint"],
        embedding_dim=int(metadata["embedding_dim"]),
        created=str(metadata.get("created", "")),
        gleam_version=str(metadata.get("gleam_version", "")),
        metadata=metadata,
    )


def _check_same_architecture(built: EncoderSpec, given: EncoderSpec) -> None:
    for name in _ARCHITECTURE_FIELDS:
        ours, theirs = getattr(given, name), getattr(built, name)
        if ours != theirs:
            raise WeightsError(f"spec.{name} ({ours!r}) differs from the encoder's ({theirs!r})")


# --- MLflow registry (gleam.registry does the registry I/O) ----------------------------------------------


def pin(uri: str) -> tuple[str, str]:
    """(a URI that keeps naming these exact weights, their fingerprint), without loading them.

    `models:/name@alias` becomes `models:/name/<version>`: replicas of a service started minutes apart
    must load the same weights even when the alias moves in between. Folders and store URIs are pinned
    by their fingerprint alone (checked again when the weights are loaded).
    """
    if not registry.is_registry_uri(uri):
        return uri, str(read_metadata(storage.normalize(uri))["fingerprint"])
    found = _resolve(uri)
    if not found.fingerprint:
        raise WeightsError(
            f"{uri} (version {found.version}) is not a GLEAM encoder: no gleam.fingerprint tag"
        )
    return found.uri, found.fingerprint


def download_registered(uri: str, dst: str | os.PathLike[str]) -> tuple[str, registry.RegisteredVersion]:
    """Download the version `uri` names now -> (local folder, that version)."""
    found = _resolve(uri)
    try:
        return str(registry.download(found, dst)), found
    except registry.RegistryError as exc:
        raise WeightsError(str(exc)) from None


def _resolve(uri: str) -> registry.RegisteredVersion:
    try:
        return registry.resolve(uri)
    except registry.RegistryError as exc:  # callers of weights catch WeightsError for every refusal
        raise WeightsError(str(exc)) from None


def register(
    encoder: GleamEncoder,
    spec: EncoderSpec,
    run: Any = None,
    name: str = DEFAULT_MODEL_NAME,
    aliases: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> int | None:
    """Log the encoder as artifacts of `run` and register them as a new version of `name`.

    `run`: a `gleam.tracking.JobRun`, an MLflow run, a run id, or None for the active run. A run that
    does not log (NullRun: another rank, or tracking disabled) registers nothing and returns None,
    so training code need not branch on rank. Returns the new version number.
    """
    run_id = registry.run_id_of(run)
    if run_id is None:
        if run is None:
            raise WeightsError("register() needs a run: pass one or call it inside an active MLflow run")
        return None
    with tempfile.TemporaryDirectory(prefix="gleam-register-") as tmp:
        info = save(encoder, spec, tmp, extra)
        version = registry.register_folder(
            tmp,
            [WEIGHTS_FILE, CONFIG_FILE],  # the config last, as on disk
            run_id,
            name,
            artifact_path=ARTIFACT_PATH,
            fingerprint=info.fingerprint,
            tags={
                "gleam.backbone": spec.backbone,
                "gleam.embedding_dim": str(info.embedding_dim),
                "gleam.format_version": str(FORMAT_VERSION),
            },
            description=f"GLEAM-C encoder {spec.backbone}, {info.embedding_dim}-d, sha256 {info.fingerprint}",
            model_description="GLEAM-C: the shared cross-view image encoder",
            aliases=aliases,
        )
    return version.version
