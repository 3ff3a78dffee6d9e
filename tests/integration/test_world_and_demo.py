"""The synthetic world on Ray, and the demo path (world -> ... -> index -> evaluate through it) end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gleam.cli import app
from gleam.config import WorldConfig
from gleam.corpus.reader import open_corpus
from gleam.corpus.world import generate_world
from gleam.index.layout import IndexLocation

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
    """world -> prepare -> train phase 1 and 2 -> evaluate -> index -> evaluate through it, made small."""
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
    copy("index_demo.yaml", encoder=f"models:/{model}@champion", embed={"batch_size": 16, "num_cpus": 0.5})

    first = CliRunner().invoke(app, ["demo", "--configs", str(configs)])
    assert first.exit_code == 0, first.output
    counts = open_corpus(str(store / "prepared" / "world-demo")).manifest["counts"]
    assert counts["tiles"] == 19 and counts["queries"] == {
        m: 16 for m in ("drone", "ground", "panorama", "streetmap")
    }
    assert "accepted 83 + rejected 0 = listed 83" in first.output
    assert "phase1" in first.output and "phase2" in first.output
    exact_part, indexed = first.output.split("evaluate the phase-2 encoder")[1].split("6. index every tile")
    for modality in ("drone", "ground", "panorama", "streetmap"):
        assert modality in exact_part
    built, through = indexed.split("7. evaluate through the published index")
    assert "index world-demo" in built and ": published" in built and "Flat" in built
    assert "19 (embedded 19, reused 0)" in built  # every tile of every split
    assert "through index world-demo" in through and "19 tiles" in through
    gap_rows = [line for line in through.splitlines() if "│ gap " in line]
    assert len(gap_rows) == 4  # one per modality
    for row in gap_rows:  # a Flat index is exact search: no gap at all
        cells = [c.strip() for c in row.split("│")[3:-2]]
        assert cells and all(c == "+0.00" for c in cells), row
    location = IndexLocation(str(store), "world-demo")
    version = location.current()
    assert version is not None

    second = CliRunner().invoke(app, ["demo", "--configs", str(configs)])
    assert second.exit_code == 0 and "reused" in second.output
    assert second.output.count("run already complete for this config: reused") == 2
    assert "unchanged, nothing published" in second.output and "through index world-demo" in second.output
    assert location.current() == version and list(location.versions()) == [version]
