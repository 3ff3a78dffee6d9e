"""The index job as a scheduler runs it: `python jobs/build_index.py` against a busy lease, and killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gleam import storage
from gleam.index.catalog import open_index
from gleam.index.config import IndexBuildConfig
from gleam.index.job import build_index
from gleam.index.layout import IndexLocation
from gleam.index.lease import acquire, read, release
from gleam.model import weights
from tests.support.console import own_output
from tests.support.training import tiny_encoder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(prepared_world) -> str:
    return prepared_world(16)


def job_config(tmp_path: Path, corpus: str, encoder_uri: str, store: str, **fields: object) -> Path:
    values = {
        "name": "scheduled",
        "corpus": corpus,
        "encoder": encoder_uri,
        "store": store,
        "embed": {"batch_size": 4, "num_cpus": 0.5},
        "tracking": {"enabled": False},
        **fields,
    }
    path = tmp_path / f"index-{len(list(tmp_path.glob('index-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def start_job(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "jobs" / "build_index.py"), "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a kill takes its local Ray down with it
        env={**os.environ, "RAY_ADDRESS": ""},
    )


def test_a_second_build_exits_6_while_the_first_holds_the_lease(corpus: str, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    location = IndexLocation(store, "scheduled")
    running = acquire(location.lease_uri, ttl_s=600)  # a build in progress elsewhere
    try:
        config = job_config(tmp_path, corpus, tiny_encoder(tmp_path / "enc", 0), store)
        process = start_job(config)
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 6, output
        assert "another build holds" in output and f"pid {running.pid}" in output
        assert "Traceback" not in own_output(output)
        assert location.current() is None and location.versions() == {}
    finally:
        release(location.lease_uri, running)


def test_a_killed_build_leaves_current_untouched_and_the_next_run_takes_over(
    corpus: str, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    location = IndexLocation(store, "scheduled")
    first_encoder, second_encoder = tiny_encoder(tmp_path / "a", 0), tiny_encoder(tmp_path / "b", 1)
    published = build_index(
        IndexBuildConfig.model_validate(
            yaml.safe_load(job_config(tmp_path, corpus, first_encoder, store).read_text())
        )
    )
    config = job_config(tmp_path, corpus, second_encoder, store, lease_ttl_s=4)
    process = start_job(config)
    deadline = time.monotonic() + 300
    while not storage.exists(location.lease_uri):  # the build is under way once it holds the lease
        assert process.poll() is None and time.monotonic() < deadline, (
            process.stdout.read() if process.stdout else ""
        )
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert location.current() == published.version  # readers still get the last good version
    assert open_index(store, "scheduled").version == published.version
    stale = read(location.lease_uri)  # the dead build's lease stays until it expires
    assert stale is not None and stale.pid != os.getpid()
    time.sleep(max(0.0, stale.expires - time.time()) + 0.5)

    rerun = start_job(config)
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output
    assert "published" in output and "taking over the expired lease" in output
    current = location.current()
    assert current != published.version
    assert open_index(store, "scheduled").encoder_fingerprint == weights.load(second_encoder)[2].fingerprint
    assert not storage.exists(location.lease_uri)
