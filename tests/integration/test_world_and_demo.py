"""The synthetic world on Ray, and the demo path (world -> prepare -> summary) end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gleam.cli import app
from gleam.config import WorldConfig
from gleam.corpus.reader import open_corpus
from gleam.corpus.world import generate_world

pytestmark = pytest.mark.integration


def _files(root: Path) -> dict[str, bytes]:
    skip = {"world.json"}  # holds the creation time
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def test_world_rendered_on_ray_is_byte_identical_to_one_process(ray_cluster, tmp_path: Path) -> None:
    import ray

    assert ray.is_initialized()
    on_ray = generate_world(WorldConfig(output=str(tmp_path / "ray"), locations=6, distractors=2, seed=5))
    ray_files = _files(tmp_path / "ray")
    ray.shutdown()
    try:
        local = generate_world(
            WorldConfig(output=str(tmp_path / "local"), locations=6, distractors=2, seed=5)
        )
    finally:
        from gleam.cluster import init_ray

        init_ray(num_cpus=2)
    assert on_ray.counts == local.counts
    assert ray_files == _files(tmp_path / "local")


def test_demo_runs_twice_on_small_configs(
    ray_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("GLEAM_STORE", str(store))
    configs = tmp_path / "configs"
    configs.mkdir()
    repo_configs = Path(__file__).resolve().parents[2] / "jobs" / "configs"
    world = yaml.safe_load((repo_configs / "world_demo.yaml").read_text())
    world.update(locations=10, distractors=3)
    (configs / "world_demo.yaml").write_text(yaml.safe_dump(world))
    prepare = yaml.safe_load((repo_configs / "prepare_demo.yaml").read_text())
    prepare["tracking"]["experiment"] = f"demo-{tmp_path.name}"
    (configs / "prepare_demo.yaml").write_text(yaml.safe_dump(prepare))

    first = CliRunner().invoke(app, ["demo", "--configs", str(configs)])
    assert first.exit_code == 0, first.output
    counts = open_corpus(str(store / "prepared" / "world-demo")).manifest["counts"]
    assert counts["tiles"] == 13 and counts["queries"] == {
        m: 10 for m in ("drone", "ground", "panorama", "streetmap")
    }
    assert "accepted 53 + rejected 0 = listed 53" in first.output

    second = CliRunner().invoke(app, ["demo", "--configs", str(configs)])
    assert second.exit_code == 0 and "reused" in second.output
