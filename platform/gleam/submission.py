"""Submitting a job to a Ray cluster's job server: what travels with it, and the calls to that server.

The config is a local file. It travels in a runtime_env `working_dir` that holds only that file, and
the entrypoint runs the installed package (`python -m gleam_cli <job> --config <file>`), so the same
submission works against the image on Kubernetes and against a local head. Settings travel as
runtime_env `env_vars`, by name, with the local values. Secrets never do: the runtime_env is shown in
the Ray dashboard and in every job's info, so credentials belong in the cluster's own environment
(the Kubernetes Secret), and a name that looks secret is refused rather than trusted.

A relative location (the demo's `.gleam/store`) would resolve in the job's temporary working folder on
the cluster: an empty store that vanishes with the job. It is refused, or, with `allow_local_paths`
(a head that shares this filesystem), resolved here, once, before submitting: settings travel with
the work, and no worker ever resolves a relative path (docs/architecture.md, "Locations travel").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gleam import runtime_env
from gleam.config import apply_override, expand_env
from gleam.errors import ConfigError, InvalidInputError, RefusedError
from gleam.storage_errors import RetryPolicy
from gleam.uris import is_s3, normalize

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

# job name -> the `gleam` sub-command its entrypoint runs (jobs/<file>.py run the same commands)
JOB_COMMANDS: dict[str, tuple[str, ...]] = {
    "prepare": ("prepare",),
    "train": ("train",),
    "build-index": ("index", "build"),
    "evaluate": ("evaluate",),
    "world": ("world",),
    "explain-data": ("explain-data",),
    "finetune-explainer": ("finetune-explainer",),
    "evaluate-explainer": ("evaluate-explainer",),
}
# settings the platform reads, passed when set here (a name the config references is passed too)
DEFAULT_ENV: tuple[str, ...] = (
    runtime_env.HOME,
    runtime_env.STORE,
    runtime_env.TRACKING,
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    *RetryPolicy.ENV.values(),
)
SECRET_MARKERS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "CREDENTIAL")
# config fields that hold a location (a store URI, a folder, a file)
LOCATION_FIELDS = frozenset(
    {"output", "store", "corpus", "uri", "storage_path", "init", "encoder", "pretrained", "explanation_set"}
)
LOCATION_ENV = (runtime_env.HOME, runtime_env.STORE, *runtime_env.CACHE_VARIABLES)
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
PLATFORM_EXIT_CODES = frozenset({2, 3, 4, 5, 6})  # gleam.errors: a failed job keeps its meaning
EXIT_STOPPED = 143  # 128 + SIGTERM: Ray stops a job's driver with SIGTERM
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*:[^/@\s]*@")
_KEYWORDS = frozenset({"hf-cache", "hub"})  # EncoderSpec.pretrained: not a path


class SecretVariableError(InvalidInputError):
    """A variable that looks secret was asked to travel in the job's runtime_env (exit 2)."""


class LocalPathsError(InvalidInputError):
    """A location would resolve in the job's temporary working folder on the cluster (exit 2)."""


class ClusterAuthError(InvalidInputError):
    """The job server wants a token this client does not have, or rejects it (exit 2: a setting)."""


class UnknownJobError(InvalidInputError):
    """No job with that id on the cluster (exit 2)."""


class ClusterUnreachableError(RefusedError):
    """Nothing answers at the job server's address (exit 3: the cluster is not there to take it)."""


class JobServerError(RefusedError):
    """The job server refused a request; the message is its own (exit 3)."""


# --- what travels -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """Everything a submission sends, worked out here before the cluster is contacted."""

    job: str
    config: Path
    entrypoint: str
    env_vars: dict[str, str]
    not_passed: list[str] = field(default_factory=list)  # secret-looking names the config references
    resolved: dict[str, str] = field(default_factory=dict)  # relative location -> absolute, made here

    def runtime_env(self, working_dir: str) -> dict[str, Any]:
        return {"working_dir": working_dir, "env_vars": dict(self.env_vars)}

    @property
    def metadata(self) -> dict[str, str]:
        return {"gleam.job": self.job, "gleam.config": self.config.name}


def looks_secret(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def plan_submission(
    job: str,
    config: str | Path,
    overrides: list[str] | None = None,
    extra_args: list[str] | None = None,
    env_names: list[str] | None = None,
    allow_local_paths: bool = False,
    default_env: bool = True,
) -> Submission:
    """The entrypoint, env vars and resolved locations of a submission (reads this process's env).

    `default_env=False` sends only `env_names`: the cluster's own environment holds the settings (a
    port-forwarded store or tracking server has another address here than on the cluster), and a
    location that depends on a variable not sent is the cluster's to resolve."""
    if job not in JOB_COMMANDS:
        raise InvalidInputError(f"unknown job {job!r}: choose one of {', '.join(JOB_COMMANDS)}")
    path = Path(config).expanduser()
    if is_s3(str(config)) or not path.is_file():
        raise InvalidInputError(f"config {config}: no such file here (gleam submit uploads a local file)")
    text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {config} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {config} must be a mapping at the top level")
    overrides = list(overrides or [])
    for assignment in overrides:  # a malformed --set fails here, not on the cluster
        apply_override(data, assignment)
    referenced = set(_REFERENCE.findall(text + "\n" + "\n".join(overrides)))
    env, not_passed = pass_through(env_names or [], referenced if default_env else set(), default_env)

    relative = relative_locations(data, env, trust_cluster_env=not default_env)
    resolved: dict[str, str] = {}
    if relative:
        if not allow_local_paths:
            raise LocalPathsError(_relative_message(relative))
        env.update(runtime_env.resolved())  # the locations `gleam <job>` would use here, absolute
        resolved = {
            where: normalize(value) for where, value in relative.items() if not where.startswith("env ")
        }
    arguments = [*JOB_COMMANDS[job], "--config", path.name]
    for assignment in [*overrides, *(f"{k}={json.dumps(v)}" for k, v in resolved.items())]:
        arguments += ["--set", assignment]
    entrypoint = shlex.join(["python", "-m", "gleam_cli", *arguments, *(extra_args or [])])
    return Submission(job, path, entrypoint, env, sorted(not_passed), resolved)


def pass_through(
    explicit: list[str], referenced: set[str], defaults: bool = True
) -> tuple[dict[str, str], list[str]]:
    """(env vars to send, secret-looking referenced names left out). Explicit names must be set here and
    look harmless; defaults and names the config references are sent when set. Values never appear in an
    error message."""
    env: dict[str, str] = {}
    for name in explicit:
        if not _NAME.match(name):
            raise InvalidInputError(f"--env {name!r}: give a variable's name (its value is read from here)")
        if looks_secret(name):
            raise SecretVariableError(
                f"--env {name}: refused, the name looks secret and the runtime_env is visible in the Ray "
                "dashboard and job info; set it in the cluster's environment (the Kubernetes Secret)"
            )
        if not os.environ.get(name):
            raise InvalidInputError(f"--env {name}: not set here")
        env[name] = os.environ[name]
    not_passed = []
    for name in [*(DEFAULT_ENV if defaults else ()), *sorted(referenced)]:
        if name in env or not os.environ.get(name):
            continue
        if looks_secret(name):
            not_passed.append(name)
        else:
            env[name] = os.environ[name]
    for name, value in env.items():
        if _URL_PASSWORD.match(value):
            raise SecretVariableError(
                f"{name} holds a password in its URL, and the runtime_env is visible in the Ray dashboard: "
                "give the cluster its credentials through its own environment (e.g. MLFLOW_TRACKING_PASSWORD "
                "in the Kubernetes Secret)"
            )
    return env, not_passed


def relative_locations(
    config: Any, env: Mapping[str, str], trust_cluster_env: bool = False
) -> dict[str, str]:
    """`env NAME` or the dotted config field -> value (expanded), for each location that is not absolute.

    A field is expanded with this machine's values, which are the ones sent (every variable a config
    references is, unless it looks secret); with `trust_cluster_env`, a field that depends on a variable
    not sent is the cluster's to resolve and is left alone."""
    found: dict[str, str] = {}
    for name in LOCATION_ENV:
        if name in env and _is_relative(env[name]):
            found[f"env {name}"] = env[name]
    tracking = env.get(runtime_env.TRACKING)
    if tracking and (runtime_env.absolute_tracking_uri(tracking) != tracking or tracking.startswith("~")):
        found[f"env {runtime_env.TRACKING}"] = tracking
    for dotted, raw in _config_locations(config, ""):
        if trust_cluster_env and any(name not in env for name in _REFERENCE.findall(raw)):
            continue
        value = expand_env(raw)
        if _is_relative(value):
            found[dotted] = value
    return found


def _config_locations(node: Any, prefix: str) -> Iterator[tuple[str, str]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        dotted = f"{prefix}{key}"
        if isinstance(value, str) and str(key) in LOCATION_FIELDS:
            yield dotted, value
        elif isinstance(value, dict | list):
            yield from _config_locations(value, dotted + ".")


def _is_relative(value: str) -> bool:
    text = value.strip()
    if not text or text in _KEYWORDS:
        return False
    if text.startswith("file:"):
        text = text[len("file:") :].removeprefix("//")
    elif _SCHEME.match(text):
        return False  # s3://, models:/, runs:/, http://: the same from anywhere
    return text.startswith("~") or not os.path.isabs(text)


def _relative_message(relative: Mapping[str, str]) -> str:
    shown = ", ".join(
        where if where.startswith("env ") else f"{where}={value}" for where, value in relative.items()
    )
    return (
        f"relative locations would resolve in the job's temporary folder on the cluster: {shown}. Set "
        "GLEAM_STORE (and MLFLOW_TRACKING_URI) here to locations the cluster reaches "
        "(e.g. s3://bucket/gleam), or --set the fields; for a head that shares this filesystem, "
        "--allow-local-paths resolves them here"
    )


# --- the job server -----------------------------------------------------------------------------------


def job_server_address(explicit: str | None = None) -> str:
    """--address, else RAY_API_SERVER_ADDRESS or RAY_ADDRESS when it is an http(s) URL, else the local
    default. A bare host:port means http."""
    address = explicit
    if not address:
        candidates = (os.environ.get("RAY_API_SERVER_ADDRESS"), os.environ.get("RAY_ADDRESS"))
        address = next(
            (a for a in candidates if a and a.startswith(("http://", "https://"))), DEFAULT_ADDRESS
        )
    if "://" not in address:
        address = f"http://{address}"
    if not address.startswith(("http://", "https://")):
        raise InvalidInputError(
            f"--address {address}: give the job server's http(s) URL "
            f"(the dashboard port, e.g. {DEFAULT_ADDRESS})"
        )
    return address.rstrip("/")


@contextlib.contextmanager
def talking_to(address: str, job_id: str | None = None) -> Iterator[None]:
    """Turn the job server's failures into one-line errors that say what to fix."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        raise ClusterAuthError(_auth_message(address, str(exc))) from None
    except (ConnectionError, requests.exceptions.ConnectionError):
        raise ClusterUnreachableError(
            f"no Ray job server answers at {address}: check --address (or RAY_API_SERVER_ADDRESS), and "
            "that the dashboard port is reachable (kubectl port-forward svc/<head> 8265)"
        ) from None
    except RuntimeError as exc:
        text = str(exc)
        if job_id is not None and "status code 404" in text:
            raise UnknownJobError(f"no job {job_id} on {address} (gleam jobs list shows them)") from None
        if text.startswith("Request failed with status code"):
            raise JobServerError(f"the job server at {address} refused: {' '.join(text.split())}") from None
        raise


def _auth_message(address: str, detail: str) -> str:
    has_token = bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"))
    if "Authentication failed" in detail or (has_token and os.environ.get("RAY_AUTH_MODE") == "token"):
        return (
            f"the job server at {address} rejected the token: check RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)"
        )
    return (
        f"the job server at {address} requires a token: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
        "(or RAY_AUTH_TOKEN_PATH, a file holding it)"
    )


def connect(address: str) -> JobSubmissionClient:
    import logging

    from ray.job_submission import JobSubmissionClient

    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # "Uploading package ..." unless --verbose
        for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
            logging.getLogger(name).setLevel(logging.WARNING)  # the last two set INFO themselves
        # "no token was found" comes back as ClusterAuthError's one line, saying what to set
        logging.getLogger("ray._private.authentication.http_token_authentication").setLevel(logging.ERROR)
    with talking_to(address):
        return JobSubmissionClient(address)


def submit(
    client: JobSubmissionClient, address: str, plan: Submission, entrypoint_num_cpus: float | None = None
) -> str:
    """Upload the config (alone, in a folder of its own) and submit; returns the submission id."""
    with tempfile.TemporaryDirectory(prefix="gleam-submit-") as folder:
        shutil.copyfile(plan.config, Path(folder, plan.config.name))
        with talking_to(address):
            return client.submit_job(
                entrypoint=plan.entrypoint,
                runtime_env=plan.runtime_env(folder),
                metadata=plan.metadata,
                entrypoint_num_cpus=entrypoint_num_cpus,
            )


def job_info(client: JobSubmissionClient, address: str, job_id: str) -> JobDetails:
    with talking_to(address, job_id):
        return client.get_job_info(job_id)


def list_jobs(client: JobSubmissionClient, address: str) -> list[JobDetails]:
    with talking_to(address):
        return sorted(client.list_jobs(), key=lambda d: d.start_time or 0)


def job_logs(client: JobSubmissionClient, address: str, job_id: str) -> str:
    with talking_to(address, job_id):
        return client.get_job_logs(job_id)


def stop_job(client: JobSubmissionClient, address: str, job_id: str) -> bool:
    """Ask the job to stop (SIGTERM, then a kill); False when it was not running."""
    with talking_to(address, job_id):
        return client.stop_job(job_id)


def wait_for_end(client: JobSubmissionClient, address: str, job_id: str, poll_s: float = 1.0) -> JobDetails:
    while True:
        info = job_info(client, address, job_id)
        if str(info.status) in TERMINAL:
            return info
        time.sleep(poll_s)


def follow_logs(
    client: JobSubmissionClient, address: str, job_id: str, write: Callable[[str], None]
) -> JobDetails:
    """Stream the job's logs until it ends (the server closes the stream then); its final details."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    info = job_info(client, address, job_id)  # an unknown id fails here, as one line
    if str(info.status) not in TERMINAL:
        with contextlib.suppress(RuntimeError), talking_to(address, job_id):
            asyncio.run(tail())  # a stream cut short is not the job's end: wait for that below
    else:
        write(job_logs(client, address, job_id))
    return wait_for_end(client, address, job_id)


def exit_code(info: JobDetails) -> int:
    """0 SUCCEEDED; a FAILED job keeps the platform's exit code (2-6, gleam.errors) or 1; 143 STOPPED."""
    status = str(info.status)
    if status == "SUCCEEDED":
        return 0
    if status == "STOPPED":
        return EXIT_STOPPED
    code = getattr(info, "driver_exit_code", None)
    return code if code in PLATFORM_EXIT_CODES else 1


def summary(info: JobDetails) -> str:
    """What a job runs, short: `prepare prepare_demo.yaml` for ours, the entrypoint for others."""
    meta = info.metadata or {}
    if "gleam.job" in meta:
        return f"{meta['gleam.job']} {meta.get('gleam.config', '')}".strip()
    entry = " ".join(info.entrypoint.split())
    return entry if len(entry) <= 60 else entry[:57] + "..."
