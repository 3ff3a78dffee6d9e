"""The index build config: shipped files validate, mistakes name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gleam.config import ConfigError, load_config
from gleam.corpus.config import PrepareConfig
from gleam.index.config import IndexBuildConfig

REPO = Path(__file__).resolve().parents[2]
BASE = ["name=region", "corpus=/data/prepared/x", "encoder=models:/gleam-c@champion"]


@pytest.mark.parametrize("name", ["index_demo.yaml", "index_region.yaml"])
def test_shipped_index_configs_are_valid(name: str) -> None:
    config = load_config(IndexBuildConfig, REPO / "jobs" / "configs" / name)
    assert config.incremental and config.recall.floor == 0.95


def test_the_raster_example_prepares_overlapping_tiles() -> None:
    config = load_config(PrepareConfig, REPO / "jobs" / "configs" / "prepare_raster_region.yaml")
    (source,) = config.sources
    assert source.kind == "raster" and source.stride < source.tile_size


def test_defaults_and_budget_units() -> None:
    config = load_config(IndexBuildConfig, None, [*BASE, "memory_budget=512MiB"])
    assert int(config.memory_budget) == 512 * 2**20
    assert config.index_key is None and config.exact_limit == 50_000 and config.recall.k == 10
    assert config.store.endswith("store")  # GLEAM_STORE or .gleam/store


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("recall.floor=1.5", "recall.floor"),
        ("memory_budget=lots", "memory_budget"),
        ("embed.precision=int4", "embed.precision"),
        ("name=bad/name", "name"),
        ("lease_ttl_s=0", "lease_ttl_s"),
        ("splits=[holdout]", "splits.0"),
        ("colour=red", "colour"),
    ],
)
def test_bad_fields_are_named(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"{field}:"):
        load_config(IndexBuildConfig, None, [*BASE, override])
