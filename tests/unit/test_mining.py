"""Similarity mining's search (`nearest_places`) on hand-made vectors whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from gleam.retrieval.search import flat_index
from gleam.training.mining import _best_tiles, nearest_places


def _angles(degrees: list[float]) -> np.ndarray:
    """Unit vectors in the plane at these angles (rounded, so cos 90 is exactly 0 and right angles tie)."""
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.round(np.stack([np.cos(radians), np.sin(radians)], axis=1), 6).astype(np.float32)


def test_a_candidate_scores_the_best_of_the_places_queries_and_the_place_is_never_its_own() -> None:
    tile_ids = ["a", "b", "c", "d"]
    tiles = _angles([0, 90, 180, 270])
    # a's queries: one near a itself (excluded), one at 100 deg (near b), one at 200 deg (near c but farther
    # than the first is from b); c's query sits between b and c, closer to b
    queries = _angles([5, 100, 200, 120]) * 3.0  # lengths do not matter: vectors are normalised
    places = ["a", "a", "a", "c"]
    found = nearest_places(queries, places, tiles, tile_ids, k=2)
    assert found["a"] == ["b", "c"]  # b: cos 10 deg; c: cos 20 deg; d: cos 70 deg at best
    assert found["c"] == ["b", "a"]  # b: cos 30 deg, then a (cos 120) before d (cos 150)
    # b and d have no query: their own tile scores the others, nearest first, ties by tile_id
    assert found["b"] == ["a", "c"]
    assert found["d"] == ["a", "c"]
    assert all(place not in others for place, others in found.items())


def test_the_order_of_the_inputs_does_not_change_the_answer() -> None:
    rng = np.random.default_rng(3)
    tile_ids = [f"t{i:02d}" for i in range(12)]
    tiles = rng.normal(size=(12, 6)).astype(np.float32)
    queries = rng.normal(size=(30, 6)).astype(np.float32)
    places = [tile_ids[i % 9] for i in range(30)]  # t09..t11 have no query
    found = nearest_places(queries, places, tiles, tile_ids, k=4)
    shuffle = rng.permutation(12)
    again = nearest_places(queries, places, tiles[shuffle], [tile_ids[i] for i in shuffle], k=4)
    assert found == again
    assert sorted(found) == tile_ids and all(len(v) == 4 for v in found.values())
    # a place's first neighbour is the best inner product any of its queries reaches outside itself
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    unit_t = tiles / np.linalg.norm(tiles, axis=1, keepdims=True)
    scores = unit_q @ unit_t.T
    mine = [i for i, p in enumerate(places) if p == "t00"]
    best = scores[mine][:, 1:].max(axis=0)
    assert found["t00"][0] == tile_ids[1 + int(best.argmax())]


def test_ties_go_to_the_smaller_tile_id_even_past_the_cut() -> None:
    # eight identical candidates: with k = 2 whichever two FAISS returns first, the answer is the two smallest
    tile_ids = ["p", *(f"n{i}" for i in (7, 3, 5, 0, 6, 2, 4, 1))]
    tiles = np.vstack([_angles([0]), np.repeat(_angles([90]), 8, axis=0)])
    queries = _angles([90, 90])
    found = nearest_places(queries, ["p", "p"], tiles, tile_ids, k=2)
    assert found["p"] == ["n0", "n1"]
    # each n-place has no query: its own tile ties with the other seven n-tiles and p is last
    assert found["n0"] == ["n1", "n2"]
    assert found["n3"] == ["n0", "n1"]


def test_fewer_than_k_other_places_gives_all_of_them() -> None:
    found = nearest_places(_angles([10]), ["x"], _angles([0, 45, 90]), ["x", "y", "z"], k=5)
    assert found == {"x": ["y", "z"], "y": ["x", "z"], "z": ["y", "x"]}
    assert nearest_places(np.zeros((0, 2)), [], _angles([0]), ["only"], k=3) == {"only": []}


def test_bad_inputs_are_refused() -> None:
    tiles = _angles([0, 90])
    with pytest.raises(ValueError, match="no tile here"):
        nearest_places(_angles([0]), ["elsewhere"], tiles, ["a", "b"], k=1)
    with pytest.raises(ValueError, match="repeat"):
        nearest_places(_angles([0]), ["a"], tiles, ["a", "a"], k=1)
    with pytest.raises(ValueError, match="at least 1"):
        nearest_places(_angles([0]), ["a"], tiles, ["a", "b"], k=0)


def test_the_search_keeps_every_tile_tied_with_the_last_one_it_needs() -> None:
    # one better tile, then seven tied ones: depth 2 must bring back all eight, not two of the seven
    tiles = np.vstack([_angles([0]), np.repeat(_angles([30]), 7, axis=0), _angles([90])])
    rows, found, scores = _best_tiles(flat_index(tiles), _angles([0, 90]), depth=2)
    assert sorted(found[rows == 0].tolist()) == list(range(8))
    assert np.all(scores[rows == 0][1:] == scores[rows == 0][1])
    assert sorted(found[rows == 1].tolist()) == [1, 2, 3, 4, 5, 6, 7, 8]  # 90 itself, then the seven at 30
