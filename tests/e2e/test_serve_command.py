"""`gleam serve` as a user runs it: a process that starts Ray and Serve, answers HTTP, and stops on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from gleam.config import load_config
from gleam.corpus.reader import open_corpus
from gleam.index.config import IndexBuildConfig
from gleam.index.job import build_index
from tests.support.serving import free_port
from tests.support.training import tiny_encoder

REPO = Path(__file__).resolve().parents[2]


def gleam(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gleam_cli.main", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: its local Ray goes down with it
        env={**os.environ, "RAY_ADDRESS": ""},
    )


def test_bad_argument_exits_2_naming_the_field_before_starting_anything() -> None:
    process = gleam("serve", "--port", str(free_port()), "--set", "default_k=0")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2, output
    assert "default_k" in output


@pytest.fixture(scope="module")
def small_index(prepared_world, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A 16-place world, a random-init encoder folder and its published index `cli`."""
    root = tmp_path_factory.mktemp("serve-command")
    corpus = prepared_world(16)
    encoder = tiny_encoder(root / "encoder", seed=3, embed_dim=16)
    store = str(root / "store")
    overrides = [
        "name=cli",
        f"corpus={corpus}",
        f"encoder={encoder}",
        f"store={store}",
        "embed.batch_size=8",
        "embed.num_cpus=0.5",
        "tracking.enabled=false",
    ]
    build_index(load_config(IndexBuildConfig, None, overrides))
    return {"corpus": corpus, "encoder": encoder, "store": store, "index": "cli"}


def wait_healthy(process: subprocess.Popen, url: str, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            health = requests.get(f"{url}/healthz", timeout=10)
            if health.status_code == 200:
                return health.json()
        except requests.RequestException:  # not listening yet, or the proxy up before the app
            pass
        time.sleep(1)
    raise AssertionError(f"{url} never became healthy (process exit code {process.poll()})")


def read_output(process: subprocess.Popen) -> tuple[list[str], threading.Thread]:
    """Drain the process's output in the background (a full pipe would block a chatty server)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    return lines, reader


def interrupt(process: subprocess.Popen, reader: threading.Thread) -> None:
    """Ctrl-C for the command itself, then whatever of its local Ray is left."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        reader.join(timeout=30)


def test_gleam_serve_answers_until_interrupted(small_index: dict[str, str]) -> None:
    port = free_port()
    process = gleam(
        "serve",
        "--port",
        str(port),
        "--encoder",
        small_index["encoder"],
        "--index",
        small_index["index"],
        "--store",
        small_index["store"],
    )
    url = f"http://127.0.0.1:{port}"
    lines, reader = read_output(process)
    try:
        assert wait_healthy(process, url)["index"]["index"] == "cli"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("GLEAM is serving at" in line for line in lines):
            time.sleep(0.2)
        query = open_corpus(small_index["corpus"]).read("queries", ["image", "modality"]).to_pylist()[0]
        files = [("image", ("q.jpg", query["image"], "image/jpeg"))]
        answer = requests.post(
            f"{url}/v1/localize", files=files, data={"modality": query["modality"]}, timeout=60
        )
        assert answer.status_code == 200 and len(answer.json()["candidates"]) == 5
        # every answer says where, or why it cannot (`unknown` with a reason)
        location = answer.json()["location"]
        assert location["method"] in ("fused", "refined", "top1", "unknown")
        assert (location["lat"] is None) == (location["method"] == "unknown") and (
            location["reason"] or location["method"] != "unknown"
        )
    finally:
        interrupt(process, reader)
    output = "".join(lines)
    assert process.returncode == 0, output
    assert f"GLEAM is serving at http://127.0.0.1:{port}/" in output and "stopping" in output
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=5)


def test_serve_run_with_the_shipped_config_file(small_index: dict[str, str]) -> None:
    """`serve run serve/config.yaml`: Ray's own CLI, the file as shipped, arguments from the environment."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.skip("port 8000 (the config file's) is in use on this machine")
    env = {
        "GLEAM_ENCODER": small_index["encoder"],
        "GLEAM_INDEX": small_index["index"],
        "GLEAM_STORE": small_index["store"],
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "serve"), "run", "serve/config.yaml"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # no RAY_ADDRESS at all: `serve run` reads it as its --address, and "" is not an address
        env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **env},
    )
    lines, reader = read_output(process)
    try:
        health = wait_healthy(process, "http://127.0.0.1:8000")
        assert health["index"]["index"] == "cli" and health["encoder"]["uri"] == small_index["encoder"]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{''.join(lines[-40:])}") from None
    finally:
        interrupt(process, reader)
