"""The synthetic world on Ray: the same bytes as one process (the demo itself: tests/e2e/test_demo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gleam.config import WorldConfig
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
