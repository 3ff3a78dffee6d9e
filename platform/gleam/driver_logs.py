"""Keep Ray's and the libraries' own lines off a user's console: into Ray's session log folder instead.

The console belongs to the job's story (headers, progress, result tables). What Ray, Ray Data, Serve,
MLflow and alembic log in the driver, Python warnings, the messages the raylet pushes to the driver
("N worker processes have been started", a retried shutdown task) and what Ray's C++ core writes to
the process's stderr (known harmless errors such as Ray Data's "actor has constructor arguments in
the object store") all go to `<ray session>/logs/gleam-driver.log`. Python's own `sys.stderr` (our
tracebacks, rich's error output) stays on the terminal: only file descriptor 2 is re-pointed, which
only native code writes to directly.

Used by `gleam.cluster.init_ray` when the console is quiet (the `gleam` command without --verbose):
`hold()` before `ray.init` buffers what init logs, `settle(path)` after it writes the buffer to the
file and sends everything after it there too.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

LIBRARY_LOGGERS = (
    "ray",
    "ray.data",
    "ray.train",
    "ray.serve",
    "ray.tune",
    "mlflow",
    "alembic",
    "py.warnings",
    "gleam.raylet",
)
DRIVER_LOG = "gleam-driver.log"
_raylet = logging.getLogger("gleam.raylet")
_active: dict[str, DriverLogs | None] = {"logs": None}


class LibraryRecords(logging.Filter):
    """Records of the libraries' loggers (and their children), at INFO or above."""

    def __init__(self, keep: bool) -> None:
        super().__init__()
        self.keep = keep

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name.startswith(LIBRARY_LOGGERS) and record.levelno >= logging.INFO
        return ours if self.keep else not ours


def is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


class DriverLogs:
    """The driver's library log lines, buffered until Ray's session folder exists, then in a file there.

    Routed at the root logger rather than at each library's: `ray.init` resets the `ray` logger's
    handlers, so a handler put there would be gone before Ray's first warning.
    """

    def __init__(self) -> None:
        self.buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
        self.buffer.addFilter(LibraryRecords(keep=True))
        self.path: Path | None = None

    def hold(self) -> DriverLogs:
        import mlflow  # noqa: F401  (these configure their loggers on import: undo that after)
        import ray.data
        import ray.serve  # noqa: F401

        logging.captureWarnings(True)
        _send_to_root()
        root = logging.getLogger()
        for handler in root.handlers:
            if is_console(handler):
                handler.addFilter(LibraryRecords(keep=False))
        root.addHandler(self.buffer)
        if root.level > logging.INFO:  # the root's console handlers keep their own levels
            for handler in root.handlers:
                if is_console(handler) and handler.level == logging.NOTSET:
                    handler.setLevel(root.level)
            root.setLevel(logging.INFO)
        return self

    def settle(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(LibraryRecords(keep=True))
        _send_to_root()  # ray.init may have given a library logger a console handler again
        root = logging.getLogger()
        root.addHandler(handler)
        root.removeHandler(self.buffer)
        self.buffer.setTarget(handler)
        self.buffer.flush()
        self.buffer.close()
        self.path = path
        _active["logs"] = self
        _raylet_messages_to_log()
        _native_stderr_to(path)


def reroute() -> None:
    """After starting a library that installs console handlers late (Serve), send them to the file too."""
    if _active["logs"] is not None:
        _send_to_root()


def _send_to_root() -> None:
    """Libraries that print for themselves (mlflow, Ray Data) hand their records to the root instead."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for existing in list(logger.handlers):
            if is_console(existing):
                logger.removeHandler(existing)
        logger.propagate = True
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)


def _raylet_messages_to_log() -> None:
    """The raylet's pushed messages (printed to stdout by Ray's listener thread) go to the log file."""
    from ray._private import worker

    def to_log(data: dict, ignore_prefix: bool = False) -> None:
        for line in data.get("lines", []):
            _raylet.warning("(%s) %s", data.get("pid", "raylet"), line)

    worker.print_to_stdstream = to_log  # looked up by name on every message: this reroutes them


def _native_stderr_to(path: Path) -> None:
    """Point file descriptor 2 at the log; Python's sys.stderr keeps writing to the terminal."""
    try:
        terminal = os.dup(2)
        before = sys.stderr
        before.flush()
        sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=before.encoding, errors="replace")
        log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        for handler in logging.getLogger().handlers:  # our own console lines stay on the terminal
            if is_console(handler) and getattr(handler, "stream", None) is before:
                handler.setStream(sys.stderr)
    except (OSError, ValueError, AttributeError):  # no real stderr (embedded interpreters): leave it
        pass
