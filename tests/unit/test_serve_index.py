"""The index replica's health check: it asks the loaded index a question whose answer can change."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from gleam.index.catalog import OpenedIndex, open_index
from gleam.index.layout import IndexLocation
from serve.index import Canary
from tests.unit.test_index_build import clustered
from tests.unit.test_index_catalog import DIM, publish


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


@pytest.mark.parametrize("key", ["Flat", "HNSW16,Flat", "IVF8,Flat"])
def test_a_sound_index_passes_its_health_check_again_and_again(store: str, key: str) -> None:
    publish(IndexLocation(store, "region"), clustered(300, DIM), key=key)
    opened = open_index(store, "region")
    canary = Canary.record(opened)
    assert len(canary.tiles) == 5 and canary.scores.shape == (5,)
    for _ in range(3):
        canary.check(opened)


@pytest.fixture
def loaded(store: str) -> tuple[OpenedIndex, Canary]:
    """A published flat index of 300 vectors, opened, and its canary recorded."""
    publish(IndexLocation(store, "region"), clustered(300, DIM), key="Flat")
    opened = open_index(store, "region")
    return opened, Canary.record(opened)


def test_an_emptied_index_fails(loaded: tuple[OpenedIndex, Canary]) -> None:
    opened, canary = loaded
    opened.index.reset()
    with pytest.raises(RuntimeError, match="0 vectors for 300 tiles"):
        canary.check(opened)


def test_an_index_whose_vectors_changed_under_it_fails(loaded: tuple[OpenedIndex, Canary]) -> None:
    """What a replica sees when the file behind a memory-mapped index is overwritten in place."""
    opened, canary = loaded
    other = faiss.IndexFlatIP(DIM)
    other.add(clustered(300, DIM, seed=99))  # as many vectors, other places
    opened.index = other
    with pytest.raises(RuntimeError, match="no longer gives the answer it gave when loaded"):
        canary.check(opened)


def test_an_index_out_of_step_with_its_tile_map_fails(loaded: tuple[OpenedIndex, Canary]) -> None:
    opened, canary = loaded
    opened.tile_ids = opened.tile_ids[:-1]
    with pytest.raises(RuntimeError, match="300 vectors for 299 tiles"):
        canary.check(opened)


def test_an_empty_index_is_refused_when_it_is_loaded(store: str) -> None:
    publish(IndexLocation(store, "region"), clustered(300, DIM), key="Flat")
    opened = open_index(store, "region")
    opened.index = faiss.IndexFlatIP(DIM)
    with pytest.raises(RuntimeError, match="is empty"):
        Canary.record(opened)
    assert np.isfinite(Canary.record(open_index(store, "region")).scores).all()
