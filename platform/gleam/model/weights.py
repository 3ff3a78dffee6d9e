"""Encoder weights on disk, in the store and in the MLflow registry: safetensors + JSON, never pickle.

A saved encoder is a folder of two files: `model.safetensors` (the state dict) and `encoder.json` (the
spec with its normalisation written out, the embedding size, and a fingerprint = sha256 of the
safetensors bytes). `encoder.json` is written last, so its presence means the folder is complete. The
fingerprint is what an index records and what a server checks: vectors from one encoder must never
be searched with queries from another.

Registry: `register()` logs the folder as artifacts of a run and creates a version of a registered
model whose source is `runs:/<run_id>/<artifact path>`. MLflow 3's `mlflow.register_model` wants a
logged model (an MLmodel with a flavor) for such a URI, so we use the client's
`create_registered_model` + `create_model_version` directly. `load("models:/gleam-c@alias")` resolves
the alias to one version first, then downloads that version's artifacts, so a concurrent alias move
cannot mix two versions.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, TypeVar

import torch

from gleam import storage
from gleam.errors import RefusedError
from gleam.model.encoder import GleamEncoder
from gleam.model.spec import EncoderSpec

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "encoder.json"
FORMAT = "gleam-encoder"
FORMAT_VERSION = 1
DEFAULT_MODEL_NAME = "gleam-c"
ARTIFACT_PATH = "encoder"
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))/?$")
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
    if uri.startswith("models:/"):
        with tempfile.TemporaryDirectory(prefix="gleam-model-") as tmp:
            local, name, version, run_id = download_registered(uri, tmp)
            encoder, spec, info = _load_folder(local, uri, map_location, expect_fingerprint)
        info = _with_registry(info, name, version, run_id)
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


def _with_registry(info: EncoderInfo, name: str, version: int, run_id: str | None) -> EncoderInfo:
    return replace(info, model_name=name, model_version=version, run_id=run_id)


def _check_same_architecture(built: EncoderSpec, given: EncoderSpec) -> None:
    for name in _ARCHITECTURE_FIELDS:
        ours, theirs = getattr(given, name), getattr(built, name)
        if ours != theirs:
            raise WeightsError(f"spec.{name} ({ours!r}) differs from the encoder's ({theirs!r})")


# --- MLflow registry ------------------------------------------------------------------------------------


def parse_registry_uri(uri: str) -> tuple[str, str | None, int | None]:
    """`models:/name@alias` -> (name, alias, None); `models:/name/3` -> (name, None, 3)."""
    match = _REGISTRY_URI.match(uri)
    if not match:
        raise WeightsError(f"registry URI must be models:/<name>@<alias> or models:/<name>/<version>: {uri}")
    version = match.group("version")
    return match.group("name"), match.group("alias"), int(version) if version else None


def pin(uri: str) -> tuple[str, str]:
    """(a URI that keeps naming these exact weights, their fingerprint), without loading them.

    `models:/name@alias` becomes `models:/name/<version>`: replicas of a service started minutes apart
    must load the same weights even when the alias moves in between. Folders and store URIs are pinned
    by their fingerprint alone (checked again when the weights are loaded).
    """
    if not uri.startswith("models:/"):
        return uri, str(read_metadata(storage.normalize(uri))["fingerprint"])
    name, found = _registered_version(uri)
    fingerprint = (found.tags or {}).get("gleam.fingerprint")
    if not fingerprint:
        raise WeightsError(
            f"{uri} (version {found.version}) is not a GLEAM encoder: no gleam.fingerprint tag"
        )
    return f"models:/{name}/{found.version}", str(fingerprint)


def download_registered(uri: str, dst: str | os.PathLike[str]) -> tuple[str, str, int, str | None]:
    """Download a registered version's artifacts -> (local folder, name, version, run id)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name, found = _registered_version(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in service logs
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{found.version}", dst_path=str(dst)
        )
    except MlflowException as exc:
        raise WeightsError(f"cannot download {uri} from the MLflow registry: {exc.message}") from None
    return local, name, int(found.version), found.run_id or None


def _registered_version(uri: str) -> tuple[str, Any]:
    """(model name, its ModelVersion) for `models:/name@alias` or `models:/name/N`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from gleam import tracking

    name, alias, version = parse_registry_uri(uri)
    tracking.configure()
    client = mlflow.MlflowClient()
    try:
        found = (
            client.get_model_version_by_alias(name, alias)
            if alias is not None
            else client.get_model_version(name, str(version))
        )
    except MlflowException as exc:
        raise WeightsError(f"cannot resolve {uri} in the MLflow registry: {exc.message}") from None
    return name, found


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
    import mlflow

    from gleam import tracking

    run_id = _run_id(run)
    if run_id is None:
        return None
    tracking.configure()
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory(prefix="gleam-register-") as tmp:
        info = save(encoder, spec, tmp, extra)
        artifact_path = _free_artifact_path(client, run_id, info.fingerprint)
        client.log_artifacts(run_id, tmp, artifact_path)
    _ensure_registered_model(client, name)
    version = client.create_model_version(
        name=name,
        source=f"runs:/{run_id}/{artifact_path}",
        run_id=run_id,
        tags={
            "gleam.fingerprint": info.fingerprint,
            "gleam.backbone": spec.backbone,
            "gleam.embedding_dim": str(info.embedding_dim),
            "gleam.format_version": str(FORMAT_VERSION),
        },
        description=f"GLEAM-C encoder {spec.backbone}, {info.embedding_dim}-d, sha256 {info.fingerprint}",
    )
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version.version)
    return int(version.version)


def _run_id(run: Any) -> str | None:
    if run is None:
        import mlflow

        active = mlflow.active_run()
        if active is None:
            raise WeightsError("register() needs a run: pass one or call it inside an active MLflow run")
        return active.info.run_id
    if isinstance(run, str):
        return run
    if hasattr(run, "info"):  # mlflow.ActiveRun / mlflow.entities.Run
        return run.info.run_id
    return getattr(run, "run_id", None)  # gleam.tracking.JobRun; None for a NullRun


def _free_artifact_path(client: Any, run_id: str, fingerprint: str) -> str:
    """`encoder`, unless this run already holds another encoder there (registered twice in one run)."""
    if not client.list_artifacts(run_id, ARTIFACT_PATH):
        return ARTIFACT_PATH
    return f"{ARTIFACT_PATH}-{fingerprint[:12]}"


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return
    except MlflowException:
        pass
    try:
        client.create_registered_model(name, description="GLEAM-C: the shared cross-view image encoder")
    except MlflowException as exc:  # created concurrently by another job
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
