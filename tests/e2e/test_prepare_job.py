"""The prepare job as users run it: the CLI and `python jobs/prepare.py`, including a real crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.corpus.prepare import prepare
from gleam.corpus.reader import open_corpus
from gleam_cli.main import app
from tests.support.corpora import bad_input_corpus

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, **fields: object) -> Path:
    path.write_text(yaml.safe_dump(fields))
    return path


def base_fields(manifest: Path, output: Path, experiment: str) -> dict:
    return {
        "name": "job",
        "output": str(output),
        "sources": [{"kind": "manifest", "uri": str(manifest)}],
        "sizes": {"satellite": [32, 32], "drone": [32, 32], "ground": [32, 32], "panorama": [64, 32]},
        "batch_size": 4,
        "tracking": {"experiment": experiment},
    }


def test_invalid_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.yaml",
        name="x",
        output=str(tmp_path),
        sources=[{"kind": "cvact", "uri": "/nowhere"}],
        limits={"jpeg_quality": 7},
    )
    result = CliRunner().invoke(app, ["prepare", "--config", str(config)])
    assert result.exit_code == 2
    assert "limits.jpeg_quality" in result.output and "Traceback" not in result.output


def test_unknown_source_kind_and_bad_override(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", name="x", output=str(tmp_path), sources=[{"kind": "flickr"}])
    result = CliRunner().invoke(app, ["prepare", "-c", str(config)])
    assert result.exit_code == 2 and "sources.0" in result.output
    result = CliRunner().invoke(app, ["prepare", "-c", str(config), "--set", "novalue"])
    assert result.exit_code == 2 and "key.path=value" in result.output


def test_job_entrypoint_runs_and_reruns(tmp_path: Path, experiment_name: str) -> None:
    corpus, expected = bad_input_corpus(tmp_path / "raw")
    fields = base_fields(corpus.write_manifest(), tmp_path / "out", experiment_name)
    config = write_config(tmp_path / "job.yaml", **fields)
    command = [sys.executable, str(REPO / "jobs" / "prepare.py"), "--config", str(config)]
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    manifest = open_corpus(str(tmp_path / "out" / "job")).manifest
    assert manifest["counts"]["listed"] == len(expected)
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "nothing to do" in second.stdout
    # a different config into the same corpus is refused with exit code 3
    other = write_config(tmp_path / "other.yaml", **{**fields, "limits": {"jpeg_quality": 60}})
    third = subprocess.run([*command[:-1], str(other)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert third.returncode == 3 and "overwrite" in third.stdout


def test_a_killed_job_reruns_to_the_same_result(ray_cluster, tmp_path: Path, experiment_name: str) -> None:
    """SIGKILL the job (and its local Ray cluster) mid-decode, re-run, compare with a clean run."""
    corpus, expected = bad_input_corpus(tmp_path / "raw")
    for i in range(150):  # enough rows that decoding is still running when we strike
        name = corpus.file(f"extra/q{i:03d}.jpg", _photo(i))
        corpus.row(name, "drone", "sat/t1.jpg", "loc-t1")
    manifest = corpus.write_manifest()
    fields = base_fields(manifest, tmp_path / "out", experiment_name)
    fields["batch_size"] = 2
    fields["rows_per_shard"] = 2
    config = write_config(tmp_path / "job.yaml", **fields)
    work = tmp_path / "out" / "job" / "_work"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "jobs" / "prepare.py"), "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not any(work.glob("*.parquet")):
        assert process.poll() is None, "the job finished before it could be killed"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert not (tmp_path / "out" / "job" / "manifest.json").exists()

    rerun = prepare(load_config(PrepareConfig, config))
    reference = prepare(load_config(PrepareConfig, config, [f"output={tmp_path / 'clean'}"]))
    assert rerun.manifest["counts"] == reference.manifest["counts"]
    assert rerun.manifest["counts"]["listed"] == len(expected) + 150
    for part, key in (("tiles", "tile_id"), ("queries", "query_id"), ("rejects", "record_id")):
        ids = open_corpus(rerun.corpus_uri).read(part, [key])[key].to_pylist()
        clean = open_corpus(reference.corpus_uri).read(part, [key])[key].to_pylist()
        assert sorted(ids) == sorted(clean) and len(ids) == len(set(ids))


def _photo(seed: int) -> bytes:
    from tests.support.bad_images import jpeg

    return jpeg((160, 120), seed=1000 + seed)


def test_world_over_another_config_exits_3_without_traceback(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["world", "--output", str(tmp_path / "w"), "--locations", "2"]).exit_code == 0
    again = runner.invoke(app, ["world", "--output", str(tmp_path / "w"), "--locations", "3"])
    assert again.exit_code == 3
    assert "overwrite" in again.output and "Traceback" not in again.output
