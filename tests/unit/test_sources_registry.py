"""A source kind is one file: its config model and adapter, registered together, are all prepare needs.

This test module is such a file for a tiny kind (`test_numbered`: `count` numbered tiles under `uri`);
nothing else in the platform names it, yet a prepare config naming it validates, reports its own field
errors with their paths, hashes its own fields and lists through its adapter.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal

import pytest
from pydantic import Field

from gleam.config import ConfigError, config_hash, load_config
from gleam.corpus.config import PrepareConfig
from gleam.corpus.listing import build_listing
from gleam.corpus.sources import Listed, SourceBase, adapter_for, kinds, list_records, make_id, register

BUILT_IN = ("cvact", "manifest", "raster", "university1652", "vigor", "world")


class NumberedSource(SourceBase):
    kind: Literal["test_numbered"]
    count: int = Field(gt=0, description="how many tiles to list")

    default_name: ClassVar[str] = "numbered"


@register(NumberedSource)
def list_numbered(source: NumberedSource) -> Iterator[Listed]:
    for i in range(source.count):
        tile_id = make_id(source.source_name, f"t{i}")
        yield Listed.tile(tile_id=tile_id, source=source.source_name, source_uri=f"{source.uri}/t{i}.png")


def write_config(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "prepare.yaml"
    path.write_text(f"name: c\noutput: {tmp_path / 'out'}\nsources:\n  - {source}\n")
    return path


def test_a_config_naming_the_new_kind_validates_and_lists_through_its_adapter(tmp_path: Path) -> None:
    config = load_config(PrepareConfig, write_config(tmp_path, "{kind: test_numbered, uri: /n, count: 3}"))
    source = config.sources[0]
    assert isinstance(source, NumberedSource) and source.count == 3 and source.source_name == "numbered"
    assert adapter_for("test_numbered") is list_numbered
    assert [r.record_id for r in list_records(source)] == ["numbered_t0", "numbered_t1", "numbered_t2"]
    listing, per_source = build_listing(config)
    assert per_source == {"numbered": 3}
    assert listing.column("source_uri").to_pylist() == ["/n/t0.png", "/n/t1.png", "/n/t2.png"]
    assert set(listing.column("split").to_pylist()) <= {"train", "val", "test"}


def test_the_new_kinds_own_fields_are_checked_and_named() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(PrepareConfig, None, ["name=c", "output=/o", "sources.0.kind=test_numbered"])
    message = str(err.value)
    assert "  sources.0.test_numbered.uri: Field required" in message
    assert "  sources.0.test_numbered.count: Field required" in message
    with pytest.raises(
        ConfigError, match=r"sources\.0\.test_numbered\.count: Input should be greater than 0"
    ):
        load_config(
            PrepareConfig,
            None,
            ["name=c", "output=/o", "sources.0.kind=test_numbered", "sources.0.uri=/n", "sources.0.count=0"],
        )


def test_the_hash_covers_the_kinds_own_fields() -> None:
    base = ["name=c", "output=/o", "sources.0.kind=test_numbered", "sources.0.uri=/n"]
    three = load_config(PrepareConfig, None, [*base, "sources.0.count=3"])
    four = load_config(PrepareConfig, None, [*base, "sources.0.count=4"])
    assert three.model_dump(mode="json")["sources"][0] == {
        "kind": "test_numbered",
        "uri": "/n",
        "name": None,
        "count": 3,
    }
    assert config_hash(three) != config_hash(four)


def test_an_unknown_kind_is_refused_naming_every_registered_kind() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(PrepareConfig, None, ["name=c", "output=/o", "sources.0.kind=flickr", "sources.0.uri=/f"])
    line = next(line for line in str(err.value).splitlines() if line.startswith("  sources.0:"))
    assert "'flickr'" in line
    assert all(f"'{kind}'" in line for kind in (*BUILT_IN, "test_numbered")), line
    assert set(BUILT_IN) | {"test_numbered"} == set(kinds())


def test_a_kind_is_registered_once_and_must_name_itself() -> None:
    class Impostor(SourceBase):
        kind: Literal["test_numbered"]
        default_name: ClassVar[str] = "impostor"

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)(list_numbered)

    class Nameless(SourceBase):
        kind: str

    with pytest.raises(TypeError, match="Literal"):
        register(Nameless)


def test_built_in_kinds_are_known_before_any_of_their_modules_is_imported() -> None:
    """A fresh interpreter validates a config of every built-in kind with no kind module imported by hand."""
    code = (
        "import sys\n"
        "from gleam.config import load_config\n"
        "from gleam.corpus.config import PrepareConfig\n"
        "assert 'gleam.corpus.sources.vigor' not in sys.modules\n"
        f"kinds = {BUILT_IN!r}\n"
        "sets = ['name=c', 'output=/o', *(f'sources.{i}.kind={k}' for i, k in enumerate(kinds)),"
        " *(f'sources.{i}.uri=/{k}' for i, k in enumerate(kinds)), 'sources.2.tile_size=64']\n"
        "config = load_config(PrepareConfig, None, sets)\n"
        "print(' '.join(type(s).__name__ for s in config.sources))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "CVACTSource",
        "ManifestSource",
        "RasterSource",
        "University1652Source",
        "VIGORSource",
        "WorldSource",
    ]
