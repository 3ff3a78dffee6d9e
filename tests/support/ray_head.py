"""A real Ray head with the dashboard's job server, started as `ray start --head` is on a cluster.

Jobs submitted to it run `python jobs/...` as their drivers, so the head's PATH starts with this
interpreter's folder. Ray 2.60 turns token authentication on for new clusters; the head runs with
`RAY_AUTH_MODE=token` and a token of its own, and clients get the same two variables (`client_env`), as
a user's shell would on a real cluster. The head lives in its own temp folder, and stopping it kills
only the processes started under that folder (`ray stop` would also stop the test session's cluster).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.ports import free_port


@dataclass
class RayHead:
    """A running head: `address` is the job server's URL (what `gleam submit --address` takes)."""

    address: str
    gcs_address: str
    temp_dir: Path
    token: str
    serve_port: int
    env: dict[str, str] = field(default_factory=dict)

    def client_env(self) -> dict[str, str]:
        """Environment for a process that talks to this head (submission clients, `serve deploy`)."""
        return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def stop(self) -> None:
        """Kill every process started under this head's temp folder, then wait for them to go."""
        pattern = str(self.temp_dir)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            subprocess.run(["pkill", f"-{sig.name[3:]}", "-f", pattern], check=False)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode != 0:
                    return
                time.sleep(0.3)


def start_ray_head(extra_env: dict[str, str] | None = None, num_cpus: int = 2) -> RayHead:
    """Start a head on 127.0.0.1 and wait until its job server answers."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))  # short: Ray's socket paths are limited
    gcs_port, dashboard_port, serve_port = free_port(), free_port(), free_port()
    token = secrets.token_hex(16)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        **(extra_env or {}),
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_DEDUP_LOGS": "0",
    }
    env.pop("RAY_ADDRESS", None)
    command = [
        str(Path(bin_dir, "ray")),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs_port}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}",  # Ray's fixed default is taken by ray_cluster
        f"--ray-client-server-port={free_port()}",
        f"--num-cpus={num_cpus}",
        "--object-store-memory=700000000",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    head = RayHead(
        address=f"http://127.0.0.1:{dashboard_port}",
        gcs_address=f"127.0.0.1:{gcs_port}",
        temp_dir=temp_dir,
        token=token,
        serve_port=serve_port,
        env=env,
    )
    if started.returncode != 0:
        head.stop()
        raise RuntimeError(f"ray start failed ({started.returncode}):\n{started.stdout}\n{started.stderr}")
    deadline = time.monotonic() + 120
    headers = {"Authorization": f"Bearer {token}"}
    probe = {"entrypoint": "true", "submission_id": f"probe-{secrets.token_hex(4)}"}
    while time.monotonic() < deadline:  # the job server answers before its agent takes jobs: probe both
        try:
            if requests.post(f"{head.address}/api/jobs/", json=probe, headers=headers, timeout=10).ok:
                return head
        except requests.RequestException:
            pass
        time.sleep(1)
    head.stop()
    raise RuntimeError(f"the job server at {head.address} took no job within 120 s")
