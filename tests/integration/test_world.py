"""The synthetic world on Ray: the same bytes as one process (the demo itself: tests/e2e/test_demo.py),
and a located world (offsets, grid gallery, sets) prepared by `gleam prepare` with its tile geometry."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from gleam import storage
from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.corpus.prepare import prepare
from gleam.corpus.reader import open_corpus
from gleam.corpus.world import OutputOccupiedError, WorldConfig, generate_world
from gleam.corpus.world.layout import MARKER_FILE, POSES_FILE

pytestmark = pytest.mark.integration

# A tiny located world: every new option at once (grid gallery, offsets, sets with an odd photo out).
LOCATED = {
    "locations": 3,
    "tile_size": 32,
    "query_size": 32,
    "tile_metres": 64.0,
    "seed": 4,
    "modalities": ["drone", "panorama"],
    "query_offset_m": 25.0,
    "gallery": "grid",
    "set_size": 2,
    "set_outliers": 0.5,
}


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
    generate_world(WorldConfig(output=str(tmp_path / "ray-located"), **LOCATED))
    ray_files = _files(tmp_path / "ray")
    ray.shutdown()
    try:
        local = generate_world(
            WorldConfig(output=str(tmp_path / "local"), locations=6, distractors=2, seed=5)
        )
        generate_world(WorldConfig(output=str(tmp_path / "local-located"), **LOCATED))
    finally:
        from gleam.cluster import init_ray

        init_ray(num_cpus=2)
    assert on_ray.counts == local.counts
    assert ray_files == _files(tmp_path / "local")
    assert _files(tmp_path / "ray-located") == _files(tmp_path / "local-located")


def test_a_located_world_prepares_with_tile_geometry_and_sets(ray_cluster, tmp_path: Path) -> None:
    """gsd_m reaches the prepared tiles (scaled to the prepared size) and set_id the prepared queries."""
    raw = tmp_path / "raw"
    summary = generate_world(WorldConfig(output=str(raw), **LOCATED))
    config = load_config(
        PrepareConfig,
        None,
        [
            "name=located",
            f"output={tmp_path / 'prepared'}",
            "sources.0.kind=world",
            f"sources.0.uri={raw}",
            "batch_size=16",
            "tracking.enabled=false",
            *(f"sizes.{m}=[16,16]" for m in ("satellite", "drone", "streetmap", "ground")),
            "sizes.panorama=[32,16]",
        ],
    )
    corpus = open_corpus(prepare(config).corpus_uri)
    tiles = corpus.read("tiles", ["tile_id", "gsd_m"]).to_pylist()
    queries = corpus.read("queries", ["query_id", "modality", "set_id", "lat", "lon"]).to_pylist()
    assert len(tiles) == summary.tiles
    assert all(t["gsd_m"] == pytest.approx(64.0 / 16) for t in tiles)  # 2 m/px at 32 px: 4 at 16 px
    assert len(queries) == 3 * 2 * 2
    sets: dict[str, int] = {}
    for q in queries:
        sets[q["set_id"]] = sets.get(q["set_id"], 0) + 1
    assert len(sets) == 6 and set(sets.values()) == {2}
    with (raw / POSES_FILE).open(newline="") as handle:
        poses = list(csv.DictReader(handle))
    assert sum(1 for p in poses if p["outlier_of"]) == 3  # half of the 6 sets
    assert all(math.isfinite(q["lat"]) and math.isfinite(q["lon"]) for q in queries)


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
