"""Where the platform's data lives, resolved once where a job starts and handed to every Ray process.

A relative default (`.gleam`, `sqlite:///.gleam/mlflow.db`) means "here" only in the process that
started the job. Ray Train V2 runs the worker function with the run's artifact folder as its working
directory, and a Serve replica or a Ray Data actor may run on another node in another folder, so a
path resolved inside one of them names a different place: an empty store, a brand-new registry. Hence
one rule: the driver resolves every location here (`pin`), and every worker, actor and replica applies
the same values (`apply`) before it touches the store or the registry. They travel twice over: as the
local cluster's runtime_env (so nothing started on it can miss them) and in each job's own payload (so
a cluster joined through RAY_ADDRESS, where the job's runtime_env is the operator's, gets them too).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from gleam.uris import normalize

HOME = "GLEAM_HOME"
STORE = "GLEAM_STORE"
TRACKING = "MLFLOW_TRACKING_URI"
DEFAULT_HOME = ".gleam"
# caches that libraries read from the environment: made absolute when set, left to the library when not
CACHE_VARIABLES = ("HF_HOME", "HF_HUB_CACHE", "TORCH_HOME")
SQLITE = "sqlite:///"


def home() -> Path:
    """The embedded defaults' folder: `GLEAM_HOME`, else `.gleam` in the working directory."""
    return Path(os.environ.get(HOME) or DEFAULT_HOME).expanduser().resolve()


def absolute_tracking_uri(uri: str) -> str:
    """A tracking URI that means the same from any working directory (sqlite and plain paths)."""
    if uri.startswith(SQLITE):
        path = uri[len(SQLITE) :]
        return uri if path.startswith("/") else SQLITE + str(Path(path).resolve())
    if "://" in uri or uri.startswith(("databricks", "file:")):
        return uri
    return Path(uri).expanduser().resolve().as_uri()  # a bare folder of file-store runs


def tracking_uri() -> str:
    return absolute_tracking_uri(os.environ.get(TRACKING) or f"{SQLITE}{home() / 'mlflow.db'}")


def resolved() -> dict[str, str]:
    """The locations of this process as absolute environment values (nothing is changed)."""
    env = {HOME: str(home()), TRACKING: tracking_uri()}
    if os.environ.get(STORE):
        env[STORE] = normalize(os.environ[STORE])
    for name in CACHE_VARIABLES:
        if os.environ.get(name):
            env[name] = str(Path(os.environ[name]).expanduser().resolve())
    return env


def apply(env: Mapping[str, str] | None) -> None:
    """Adopt locations resolved by the driver (in a worker, actor or replica, before any I/O)."""
    if env:
        os.environ.update({k: str(v) for k, v in env.items()})


def pin() -> dict[str, str]:
    """Resolve the locations where the job starts and keep them in this process's environment."""
    env = resolved()
    apply(env)
    return env
