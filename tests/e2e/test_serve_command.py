"""`gleam serve` as a user runs it: a process that starts Ray and Serve, answers HTTP, and stops on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from gleam.config import load_config
from gleam.corpus.reader import open_corpus
from gleam.index.config import IndexBuildConfig
from gleam.index.job import build_index
from tests.support.serving import free_port
from tests.support.training import tiny_encoder, world_corpus

REPO = Path(__file__).resolve().parents[2]


def gleam(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gleam.cli", *args],
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


def test_gleam_serve_answers_until_interrupted(ray_cluster, tmp_path: Path) -> None:
    corpus = world_corpus(tmp_path / "world", locations=16)
    encoder = tiny_encoder(tmp_path / "encoder", seed=3, embed_dim=16)
    store = str(tmp_path / "store")
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
    port = free_port()
    process = gleam("serve", "--port", str(port), "--encoder", encoder, "--index", "cli", "--store", store)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = requests.get(f"{url}/healthz", timeout=10)
                if health.status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or the proxy up before the app
                pass
            time.sleep(1)
        assert health is not None and health.status_code == 200, (
            process.stdout.read() if process.poll() else ""
        )
        assert health.json()["index"]["index"] == "cli"
        query = open_corpus(corpus).read("queries", ["image", "modality"]).to_pylist()[0]
        files = [("image", ("q.jpg", query["image"], "image/jpeg"))]
        answer = requests.post(
            f"{url}/v1/localize", files=files, data={"modality": query["modality"]}, timeout=60
        )
        assert answer.status_code == 200 and len(answer.json()["candidates"]) == 5
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # Ctrl-C reaches the command; it shuts Serve down itself
        output, _ = process.communicate(timeout=120)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of its local Ray is left
    assert process.returncode == 0, output
    assert f"GLEAM is serving at http://127.0.0.1:{port}/" in output and "stopping" in output
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=5)
