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
    """world -> prepare -> train phase 1 and 2 -> evaluate, on the repository's demo configs made small."""
    store = tmp_path / "store"
    monkeypatch.setenv("GLEAM_STORE", str(store))
    monkeypatch.setenv("GLEAM_HOME", str(tmp_path / "home"))
    configs = tmp_path / "configs"
    configs.mkdir()
    repo_configs = Path(__file__).resolve().parents[2] / "jobs" / "configs"
    model = f"gleam-c-demo-{tmp_path.name[-8:]}"

    def copy(name: str, **changes: object) -> None:
        data = yaml.safe_load((repo_configs / name).read_text())
        data.update(changes)
        if "tracking" in data:
            data["tracking"]["experiment"] = f"demo-{tmp_path.name}"
        (configs / name).write_text(yaml.safe_dump(data))

    copy("world_demo.yaml", locations=16, distractors=3)
    copy("prepare_demo.yaml")
    small = {
        "steps": 3,
        "batch_size": 4,
        "checkpoint": {"every": 3},
        "scaling": {"workers": 2, "cpus_per_worker": 0.5},
    }
    copy("train_demo_phase1.yaml", **small, registry={"name": model})
    copy(
        "train_demo_phase2.yaml",
        **small,
        init=f"models:/{model}@phase1",
        registry={"name": model, "champion": True},
    )
    copy("evaluate_demo.yaml", encoder=f"models:/{model}@champion", grid_queries=2)

    first = CliRunner().invoke(app, ["demo", "--configs", str(configs)])
    assert first.exit_code == 0, first.output
    counts = open_corpus(str(store / "prepared" / "world-demo")).manifest["counts"]
    assert counts["tiles"] == 19 and counts["queries"] == {
        m: 16 for m in ("drone", "ground", "panorama", "streetmap")
    }
    assert "accepted 83 + rejected 0 = listed 83" in first.output
    assert "phase1" in first.output and "phase2" in first.output
    for modality in ("drone", "ground", "panorama", "streetmap"):
        assert modality in first.output.split("evaluate the phase-2 encoder")[1]

    second = CliRunner().invoke(app, ["demo", "--configs", str(configs)])
    assert second.exit_code == 0 and "reused" in second.output
    assert second.output.count("run already complete for this config: reused") == 2
