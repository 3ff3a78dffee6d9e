"""Configs fail early and name the field; overrides and env references behave as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from gleam.config import (
    ConfigError,
    apply_override,
    config_hash,
    expand_env,
    load_config,
)
from gleam.corpus.config import PrepareConfig
from gleam.corpus.schema import Modality
from gleam.corpus.world import WorldConfig

REPO = Path(__file__).resolve().parents[2]
BASE = ["name=c", "output=/tmp/out", "sources.0.kind=cvact", "sources.0.uri=/data/cvact"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_valid_yaml_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "name: c\noutput: /tmp/o\nsources:\n  - {kind: university1652, uri: /d}\n")
    config = load_config(PrepareConfig, path)
    assert config.sources[0].source_name == "u1652"
    assert config.sizes[Modality.PANORAMA] == (768, 384)
    assert config.corpus_uri == "/tmp/o/c"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["sources.0.kind=nope"], "sources.0"),
        (["limits.jpeg_quality=7"], "limits.jpeg_quality"),
        (["limits.jpeg_qualty=90"], "limits.jpeg_qualty"),
        (["split.test_fraction=0.6", "split.val_fraction=0.5"], "split.test_fraction"),
        (["name=has space"], "name"),
        (["sizes.drone=[4, 4]"], "sizes"),
        (["sizes.satelite=[64, 64]"], "sizes.satelite"),
    ],
)
def test_errors_name_the_field(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(PrepareConfig, None, [*BASE, *overrides])
    assert f"  {field}" in str(err.value)


def test_missing_required_fields_are_all_named() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(PrepareConfig, None, ["sources.0.kind=cvact"])
    message = str(err.value)
    for field in ("name", "output", "sources.0.cvact.uri"):
        assert f"  {field}: Field required" in message


def test_overrides_parse_yaml_values_and_append_list_items() -> None:
    data: dict = {"a": {"b": 1}, "items": [{"x": 1}]}
    apply_override(data, "a.b=5")
    apply_override(data, "a.c=true")
    apply_override(data, "items.1.x=two")
    apply_override(data, "new.list.0=3")
    assert data == {"a": {"b": 5, "c": True}, "items": [{"x": 1}, {"x": "two"}], "new": {"list": [3]}}
    with pytest.raises(ConfigError, match="out of range"):
        apply_override(data, "items.5.x=1")
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        apply_override(data, "novalue")


def test_env_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLEAM_T_SET", "s3://b")
    monkeypatch.delenv("GLEAM_T_UNSET", raising=False)
    expanded = expand_env({"x": ["${GLEAM_T_SET}/p", "${GLEAM_T_UNSET:-local}/p"]})
    assert expanded == {"x": ["s3://b/p", "local/p"]}


def test_env_defaults_nest_so_the_store_follows_gleam_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """The configs' `${GLEAM_STORE:-${GLEAM_HOME:-.gleam}/store}` is where storage.default_store() looks."""
    reference = "${GLEAM_STORE:-${GLEAM_HOME:-.gleam}/store}/prepared"
    monkeypatch.delenv("GLEAM_STORE", raising=False)
    monkeypatch.delenv("GLEAM_HOME", raising=False)
    assert expand_env(reference) == ".gleam/store/prepared"
    monkeypatch.setenv("GLEAM_HOME", "/data/gleam")
    assert expand_env(reference) == "/data/gleam/store/prepared"
    monkeypatch.setenv("GLEAM_STORE", "s3://bucket/gleam")
    assert expand_env(reference) == "s3://bucket/gleam/prepared"
    assert expand_env("${A_UNSET_ONE:-${B_UNSET_TWO:-${C_UNSET_THREE:-deep}}}") == "deep"


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(PrepareConfig, tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(PrepareConfig, write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(PrepareConfig, write(tmp_path, "a: [unclosed\n"))


def test_world_config_rejects_satellite_queries() -> None:
    with pytest.raises(ConfigError, match="modalities"):
        load_config(WorldConfig, None, ["output=/tmp/w", "modalities=[satellite]"])


def test_hash_ignores_excluded_fields() -> None:
    a = load_config(PrepareConfig, None, BASE)
    b = load_config(PrepareConfig, None, [*BASE, "batch_size=7"])
    c = load_config(PrepareConfig, None, [*BASE, "limits.jpeg_quality=80"])
    assert config_hash(a, {"batch_size"}) == config_hash(b, {"batch_size"})
    assert config_hash(a) != config_hash(c)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "jobs" / "configs").glob("prepare_*.yaml")))
def test_shipped_prepare_configs_are_valid(name: str) -> None:
    load_config(PrepareConfig, REPO / "jobs" / "configs" / name)


def test_shipped_world_config_is_valid() -> None:
    load_config(WorldConfig, REPO / "jobs" / "configs" / "world_demo.yaml")
