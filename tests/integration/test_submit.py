"""`gleam submit` and `gleam jobs` against a real Ray head (`ray start --head`, token auth on), run as a
user runs them: the `gleam` command in its own process, with the head's address and token in its env.

A prepare job is followed to SUCCEEDED, a bad config is reported FAILED with the job's own exit code,
Ctrl-C while following leaves the job running and `gleam jobs stop` stops it. The argument handling
without a head is tests/unit/test_submit_args.py.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gleam.corpus.world import WorldConfig, generate_world
from tests.support.paths import REPO
from tests.support.ray_head import RayHead

pytestmark = pytest.mark.integration

CONFIGS = REPO / "jobs" / "configs"
GLEAM = (sys.executable, "-m", "gleam_cli")


def _env(head: RayHead, **settings: str | None) -> dict[str, str]:
    env = head.client_env()
    for name in ("GLEAM_HOME", "GLEAM_STORE", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        env.pop(name, None)
    env.update({k: v for k, v in settings.items() if v is not None})
    for name in [k for k, v in settings.items() if v is None]:
        env.pop(name, None)
    return env


def gleam(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GLEAM, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _submitted_id(stdout: str) -> str:
    first = stdout.splitlines()[0].split()
    assert first[0] == "submitted" and first[1].startswith("raysubmit_"), stdout
    return first[1]


def test_a_prepare_job_is_followed_to_succeeded(ray_head: RayHead, tmp_path: Path) -> None:
    """The shipped demo config with its relative defaults, resolved here (the refusal without
    --allow-local-paths is in the unit tests)."""
    store = tmp_path / ".gleam" / "store"
    generate_world(WorldConfig.model_validate({"output": str(store / "raw" / "world-demo"), "locations": 4}))
    env = _env(ray_head, RAY_API_SERVER_ADDRESS=ray_head.address)
    config = str(CONFIGS / "prepare_demo.yaml")

    done = gleam(
        env, "submit", "prepare", "--config", config, "--allow-local-paths", "--follow", cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = _submitted_id(done.stdout)
    assert f"submitted {job_id} to {ray_head.address}" in done.stdout
    assert f"resolved here: output={store / 'prepared'}" in done.stdout
    passed = next(line for line in done.stdout.splitlines() if line.startswith("env passed: "))
    names = passed.removeprefix("env passed: ").removesuffix(" (values not shown)").split(", ")
    assert {"GLEAM_HOME", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"} <= set(names)  # names only...
    assert not [name for name in names if "SECRET" in name or "TOKEN" in name]  # ...and no secret
    assert env["MLFLOW_TRACKING_URI"] not in done.stdout and env["AWS_ENDPOINT_URL"] not in done.stdout
    assert "accepted 20 + rejected 0" in done.stdout  # the job's own output, streamed
    assert done.stdout.rstrip().endswith(f"{job_id} SUCCEEDED")
    assert (store / "prepared" / "world-demo" / "manifest.json").is_file()


def test_a_bad_config_is_reported_failed_with_the_jobs_exit_code(ray_head: RayHead, tmp_path: Path) -> None:
    env = _env(ray_head, GLEAM_STORE=str(tmp_path / "store"))
    address = ("--address", ray_head.address)
    failed = gleam(
        env,
        "submit",
        "prepare",
        "-c",
        str(CONFIGS / "prepare_demo.yaml"),
        "--set",
        "batch_size=0",
        "--wait",
        *address,
    )
    job_id = _submitted_id(failed.stdout)
    assert failed.returncode == 2, (
        failed.stdout + failed.stderr
    )  # ConfigError on the cluster: exit 2, as here
    assert f"{job_id} FAILED (exit code 2)" in failed.stdout and "batch_size" in failed.stdout

    shown = gleam(env, "jobs", "status", job_id, *address)
    assert shown.returncode == 0 and shown.stdout.startswith(f"{job_id} FAILED")
    unknown = gleam(env, "jobs", "status", "raysubmit_none", *address)
    assert (
        unknown.returncode == 2
        and unknown.stdout.count("\n") == 1
        and "no job raysubmit_none" in unknown.stdout
    )

    no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    refused = gleam(no_token, "jobs", "list", *address)
    assert refused.returncode == 2 and refused.stdout.count("\n") == 1, refused.stdout + refused.stderr
    assert "requires a token: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN" in refused.stdout
    assert not refused.stderr.strip(), refused.stderr  # that one line is all


def test_ctrl_c_leaves_the_job_running_and_stop_stops_it(ray_head: RayHead, tmp_path: Path) -> None:
    """A world far too big to finish keeps the job busy until it is stopped."""
    env = _env(ray_head, GLEAM_STORE=str(tmp_path / "store"), RAY_API_SERVER_ADDRESS=ray_head.address)
    err_file = tmp_path / "follow.err"
    with err_file.open("w") as err:
        follower = subprocess.Popen(
            [
                *GLEAM,
                "submit",
                "world",
                "-c",
                str(CONFIGS / "world_demo.yaml"),
                "--set",
                "locations=1000000",
                "--follow",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
        )
        lines = _lines_until(follower, "Running entrypoint", timeout_s=120)
        job_id = _submitted_id(lines[0])
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=30)
    assert follower.returncode == 130, "".join(lines) + err_file.read_text()
    assert f"{job_id} keeps running (stop it with: gleam jobs stop {job_id}" in err_file.read_text()

    listed = gleam(env, "jobs", "list")
    assert listed.returncode == 0 and any(
        line.split()[:2] == [job_id, "RUNNING"] and line.endswith("world world_demo.yaml")
        for line in listed.stdout.splitlines()
    ), listed.stdout

    stopped = gleam(env, "jobs", "stop", job_id, "--wait")
    assert stopped.returncode == 0 and stopped.stdout.splitlines()[-1] == f"{job_id} STOPPED", stopped.stdout
    assert gleam(env, "jobs", "status", job_id).stdout.startswith(f"{job_id} STOPPED")
    again = gleam(env, "jobs", "stop", job_id)
    assert again.returncode == 0 and "is not running (STOPPED)" in again.stdout
    logs = gleam(env, "jobs", "logs", job_id)
    assert logs.returncode == 0 and "python -m gleam_cli world --config world_demo.yaml" in logs.stdout


def _lines_until(process: subprocess.Popen[str], marker: str, timeout_s: float) -> list[str]:
    """stdout lines up to and including the first that starts with `marker`."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        if seen[-1].startswith(marker):
            return seen
    process.kill()
    raise AssertionError(f"no {marker!r} line within {timeout_s} s: {''.join(seen)}")
