"""Connect to Ray the same way everywhere: `RAY_ADDRESS` when set, else a local cluster.

A local cluster binds to 127.0.0.1 (the machines this runs on may have no other usable interface),
skips the dashboard, and gets the driver's resolved locations as its runtime_env (gleam.runtime_env:
every worker, actor and replica sees the same store and registry, whatever its working directory).

The console is for the user: with `quiet_console(True)` (the `gleam` command without `--verbose`),
workers' output stays in Ray's session log folder (`<session>/logs/worker-*.out|err`, where Ray puts
it anyway) instead of being echoed to the driver, and the driver's own library lines go to
`<session>/logs/gleam-driver.log` (gleam.driver_logs). Errors still reach the user: the job's
exception carries the failing worker's message.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from gleam import runtime_env
from gleam.driver_logs import DRIVER_LOG, DriverLogs

_settings = {"quiet": False}
_session = {"logs": None}


def quiet_console(quiet: bool) -> None:
    """Keep Ray's and libraries' log lines off the console (the CLI's default; `--verbose` keeps them)."""
    _settings["quiet"] = quiet


def logs_dir() -> str | None:
    """Ray's log folder of the session this process started or joined (None before init_ray)."""
    return _session["logs"]


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start or join Ray once per process (a no-op when already connected)."""
    import ray

    if ray.is_initialized():
        return
    quiet = _settings["quiet"]
    held = DriverLogs().hold() if quiet else None
    env = runtime_env.pin()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        context = ray.init(
            address=address,
            logging_level=logging.WARNING,
            configure_logging=not quiet,
            log_to_driver=not quiet,
        )
    else:
        context = ray.init(
            num_cpus=num_cpus,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            logging_level=logging.WARNING,
            configure_logging=not quiet,
            log_to_driver=not quiet,
            runtime_env={"env_vars": env},
        )
    session_dir = (getattr(context, "address_info", None) or {}).get("session_dir")
    _session["logs"] = str(Path(session_dir, "logs")) if session_dir else None
    quiet_data_progress()
    if held is not None:
        held.settle(Path(_session["logs"] or runtime_env.home() / "logs") / DRIVER_LOG)


def quiet_data_progress() -> None:
    from ray.data import DataContext

    context = DataContext.get_current()
    if not sys.stderr.isatty() or os.environ.get("CI"):
        context.enable_progress_bars = False
    context.print_on_execution_start = False
