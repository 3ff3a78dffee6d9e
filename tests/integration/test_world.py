"""The synthetic world on Ray: the same bytes as one process (the demo itself: tests/e2e/test_demo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gleam import storage
from gleam.corpus.world import OutputOccupiedError, WorldConfig, generate_world
from gleam.corpus.world.layout import MARKER_FILE

pytestmark = pytest.mark.integration


def _files(root: Path) -> dict[str, bytes]:
    skip = {MARKER_FILE}  # holds the creation time
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


def test_world_on_s3_is_reused_and_an_occupied_prefix_is_refused(s3_bucket: str) -> None:
    """On a store the occupied-output check lists the prefix too: a world is reused, foreign keys are kept."""
    small = {"locations": 2, "tile_size": 32, "query_size": 32, "seed": 3}
    uri = f"{s3_bucket}/raw/world"
    first = generate_world(WorldConfig(output=uri, **small))
    assert not first.reused and storage.read_json(storage.join(uri, MARKER_FILE))["seed"] == 3
    assert generate_world(WorldConfig(output=uri, **small)).reused
    occupied = f"{s3_bucket}/raw/mine"
    storage.write_text(storage.join(occupied, "notes.txt"), "keep me")
    with pytest.raises(OutputOccupiedError, match=r"notes\.txt"):
        generate_world(WorldConfig(output=occupied, **small))
    assert storage.read_text(storage.join(occupied, "notes.txt")) == "keep me"
