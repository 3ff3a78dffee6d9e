"""The MLflow model registry: the one place that parses `models:/` URIs, resolves, downloads and registers.

Both GLEAM models live there: `gleam-c`, the retrieval encoder (`gleam.model.weights` saves and loads its
folder), and `gleam-x`, the explaining multimodal LLM (`gleam.explain.mllm`). Each registers a plain
folder of files logged as artifacts of a run, and the version's source is `runs:/<run_id>/<artifact
path>`. MLflow 3's `mlflow.register_model` wants a logged model (an MLmodel with a flavor) for such a
URI, so versions are made with the client's `create_registered_model` + `create_model_version`.

A URI names a version (`models:/name/3`) or an alias (`models:/name@champion`); an alias is resolved to
one version first and only that version's artifacts are downloaded, so an alias moved meanwhile cannot
mix two versions. Every version carries the `gleam.fingerprint` tag its loader checks the files against.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gleam import tracking
from gleam.errors import RefusedError

log = logging.getLogger(__name__)

SCHEME = "models:/"
GLEAM_C = "gleam-c"
GLEAM_X = "gleam-x"
FINGERPRINT_TAG = "gleam.fingerprint"
FORMS = "models:/<name>@<alias> or models:/<name>/<version>"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))/?$")


class RegistryError(RefusedError, RuntimeError):
    """A registry URI or model version that cannot be used; the message names it and says why."""


class RegistryURIError(RegistryError):
    """A `models:/` URI of none of the accepted forms."""


class ModelNotFoundError(RegistryError, LookupError):
    """The name, alias or version is not in the registry, or its files cannot be downloaded."""


@dataclass(frozen=True)
class ModelURI:
    """A parsed `models:/name@alias` or `models:/name/<version>` (a trailing slash is allowed)."""

    name: str
    alias: str | None = None
    version: int | None = None

    def __post_init__(self) -> None:
        if (self.alias is None) == (self.version is None):
            raise RegistryURIError(f"a registry URI names exactly one alias or version: {FORMS}")

    @classmethod
    def parse(cls, uri: str) -> ModelURI:
        match = _URI.match(uri)
        if match is None:
            raise RegistryURIError(f"registry URI must be {FORMS}: {uri} ({_why_not(uri)})")
        version = match.group("version")
        return cls(match.group("name"), match.group("alias"), int(version) if version else None)

    def __str__(self) -> str:
        return f"{SCHEME}{self.name}@{self.alias}" if self.alias else f"{SCHEME}{self.name}/{self.version}"


def _why_not(uri: str) -> str:
    if not uri.startswith(SCHEME):
        return f"it does not start with {SCHEME}"
    rest = uri[len(SCHEME) :].rstrip("/")
    if not rest or rest.startswith(("/", "@")):
        return "the model name is missing"
    if "/" not in rest and "@" not in rest:
        return "it names no alias and no version"
    if "@" in rest and "/" not in rest:
        return "the alias is empty or holds a second @"
    return "a version is a number, and nothing may follow it or the alias"


def is_registry_uri(uri: str) -> bool:
    """Whether `uri` is meant for the registry (as opposed to a folder or a store URI)."""
    return str(uri).startswith(SCHEME)


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model, resolved: what `models:/name@alias` pointed at when asked."""

    name: str
    version: int
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """`models:/name/<version>`: keeps naming these exact files whatever an alias does later."""
        return str(ModelURI(self.name, version=self.version))

    @property
    def fingerprint(self) -> str | None:
        return self.tags.get(FINGERPRINT_TAG) or None


def client() -> Any:
    """An `MlflowClient` on the platform's tracking store (`gleam.tracking.configure`)."""
    import mlflow

    tracking.configure()
    return mlflow.MlflowClient()


def resolve(uri: str | ModelURI) -> RegisteredVersion:
    """The version `uri` names now (an alias is looked up once): RegistryURIError, ModelNotFoundError."""
    from mlflow.exceptions import MlflowException

    parsed = uri if isinstance(uri, ModelURI) else ModelURI.parse(uri)
    mlflow_client = client()
    try:
        if parsed.alias is not None:
            found = mlflow_client.get_model_version_by_alias(parsed.name, parsed.alias)
        else:
            found = mlflow_client.get_model_version(parsed.name, str(parsed.version))
    except MlflowException as exc:
        raise ModelNotFoundError(f"cannot resolve {uri} in the MLflow registry: {exc.message}") from None
    return RegisteredVersion(parsed.name, int(found.version), found.run_id or None, dict(found.tags or {}))


def download(version: RegisteredVersion, dst: str | os.PathLike[str]) -> Path:
    """Download the version's artifacts (never an alias: the files of exactly this version) under `dst`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    tracking.configure()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in service logs
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=version.uri, dst_path=str(dst))
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"cannot download {version.uri} from the MLflow registry: {exc.message}"
        ) from None
    return Path(local)


def download_cached(version: RegisteredVersion, cache_dir: str | os.PathLike[str]) -> Path:
    """`<cache_dir>/<name>-v<version>`, downloaded once and reused; the folder appears only when complete."""
    cache = Path(cache_dir)
    target = cache / f"{version.name}-v{version.version}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    prefix = f".{version.name}-v{version.version}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=cache, ignore_cleanup_errors=True) as tmp:
        local = download(version, tmp)
        try:
            os.replace(local, target)  # atomic on one filesystem
        except OSError:
            if not target.is_dir():  # not a concurrent download that won the race
                raise
    log.info("downloaded %s to %s", version.uri, target)
    return target


def run_id_of(run: Any) -> str | None:
    """The run id of a `gleam.tracking.JobRun`, an MLflow run or a run id; None (the argument) means the
    active MLflow run. None back: a run that does not log (NullRun) or no active run."""
    if run is None:
        import mlflow

        active = mlflow.active_run()
        return active.info.run_id if active is not None else None
    if isinstance(run, str):
        return run
    info = getattr(run, "info", None)  # mlflow.ActiveRun / mlflow.entities.Run
    if info is not None:
        return info.run_id
    return getattr(run, "run_id", None)  # gleam.tracking.JobRun; None for a NullRun


def free_artifact_path(mlflow_client: Any, run_id: str, base: str, fingerprint: str) -> str:
    """`base`, unless the run already holds other files there (a second model registered in one run)."""
    if not mlflow_client.list_artifacts(run_id, base):
        return base
    return f"{base}-{fingerprint[:12]}"


def ensure_registered_model(mlflow_client: Any, name: str, description: str) -> None:
    """Create the registered model `name` unless it exists (also when another job creates it meanwhile)."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
        return
    except MlflowException:
        pass
    try:
        mlflow_client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def set_alias(name: str, alias: str, version: int) -> None:
    """Point `models:/name@alias` at `version` (moving it from wherever it was)."""
    client().set_registered_model_alias(name, alias, str(version))


@dataclass(frozen=True)
class VersionSummary:
    """One row of `gleam models show`: enough to choose a version to promote or roll back to."""

    version: int
    aliases: tuple[str, ...]
    run_id: str | None
    created_ms: int
    fingerprint: str | None


def list_versions(name: str) -> list[VersionSummary]:
    """Every version of a registered model, newest first; ModelNotFoundError when there is no such model."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    try:
        model = mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"no registered model {name!r} in the MLflow registry: {exc.message}"
        ) from None
    aliases_of: dict[int, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases_of.setdefault(int(version), []).append(alias)
    rows = [
        VersionSummary(
            version=int(found.version),
            aliases=tuple(sorted(aliases_of.get(int(found.version), []))),
            run_id=found.run_id or None,
            created_ms=int(found.creation_timestamp or 0),
            fingerprint=(found.tags or {}).get(FINGERPRINT_TAG) or None,
        )
        for found in mlflow_client.search_model_versions(f"name='{name}'")
    ]
    return sorted(rows, key=lambda row: row.version, reverse=True)


def move_alias(name: str, alias: str, version: int) -> int | None:
    """Point `alias` at an existing `version`; returns where it pointed before (None: nowhere)."""
    known = {row.version: row for row in list_versions(name)}
    if version not in known:
        have = ", ".join(str(v) for v in sorted(known)) or "none"
        raise ModelNotFoundError(f"{name} has no version {version} (versions: {have})")
    previous = next((row.version for row in known.values() if alias in row.aliases), None)
    set_alias(name, alias, version)
    return previous


def register_folder(
    folder: str | os.PathLike[str],
    files: Sequence[str],
    run_id: str,
    name: str,
    *,
    artifact_path: str,
    fingerprint: str,
    tags: Mapping[str, str] | None = None,
    description: str = "",
    model_description: str = "",
    aliases: Iterable[str] = (),
) -> RegisteredVersion:
    """Log `files` (relative to `folder`) under `artifact_path` of the run and make them a new version of
    `name`, tagged with `fingerprint`; then move each alias to it. `model_description` is used only when
    this creates the registered model."""
    mlflow_client = client()
    path = free_artifact_path(mlflow_client, run_id, artifact_path, fingerprint)
    for relative in files:
        parent = Path(relative).parent.as_posix()
        mlflow_client.log_artifact(
            run_id, str(Path(folder) / relative), path if parent == "." else f"{path}/{parent}"
        )
    ensure_registered_model(mlflow_client, name, model_description)
    all_tags = {FINGERPRINT_TAG: fingerprint, **(tags or {})}
    created = mlflow_client.create_model_version(
        name=name, source=f"runs:/{run_id}/{path}", run_id=run_id, tags=all_tags, description=description
    )
    for alias in aliases:
        mlflow_client.set_registered_model_alias(name, alias, created.version)
    return RegisteredVersion(name, int(created.version), run_id, all_tags)
