"""A real MLflow tracking server (`mlflow server`), started as the cluster runs it: tracking over HTTP,
a SQL backend store, artifacts proxied by the server to S3 (`--serve-artifacts --artifacts-destination`).

Clients (jobs, replicas) then need only `MLFLOW_TRACKING_URI=http://...`: they never see the bucket,
the server reads and writes it with its own credentials. The server starts in the background (its
imports and database migrations take ~15 s on 2 cores) so callers can do other work before `wait`.
It runs in its own process group; `stop` ends that group (the server and its uvicorn worker) only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.ports import free_port


@dataclass
class MlflowServer:
    """A running `mlflow server`: `url` is what MLFLOW_TRACKING_URI takes."""

    url: str
    process: subprocess.Popen
    log: Path

    def wait(self, timeout_s: float = 120) -> str:
        """Block until GET /health answers 200; returns the URL. Raises with the server's log tail."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self.url
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"mlflow server at {self.url} not healthy after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout_s: float = 15) -> None:
        """SIGTERM to the server's process group, SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=timeout_s)
                return
            except subprocess.TimeoutExpired:
                continue


def start_mlflow_server(root: Path, artifacts_destination: str) -> MlflowServer:
    """Start `mlflow server` on 127.0.0.1 (free port), backend `sqlite:///<root>/mlflow.db`, artifacts
    proxied to `artifacts_destination` (e.g. `s3://bucket/mlflow`). Returns at once; call `wait`.

    The S3 endpoint and keys come from this process's environment (AWS_ENDPOINT_URL and the AWS_* keys);
    MLflow's S3 artifact repository reads MLFLOW_S3_ENDPOINT_URL, so it is set from AWS_ENDPOINT_URL.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no GenAI job runners (8 extra processes)
    }
    if env.get("AWS_ENDPOINT_URL"):
        env.setdefault("MLFLOW_S3_ENDPOINT_URL", env["AWS_ENDPOINT_URL"])
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        f"--backend-store-uri=sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts",
        f"--artifacts-destination={artifacts_destination}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--workers=1",
    ]
    log = root / "mlflow-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return MlflowServer(url=f"http://127.0.0.1:{port}", process=process, log=log)


@contextmanager
def mlflow_server(root: Path, artifacts_destination: str, ready: bool = True) -> Iterator[MlflowServer]:
    """`start_mlflow_server`, stopped on exit; healthy on entry unless `ready=False` (then the caller
    does other work first and calls `wait`)."""
    server = start_mlflow_server(root, artifacts_destination)
    try:
        if ready:
            server.wait()
        yield server
    finally:
        server.stop()
