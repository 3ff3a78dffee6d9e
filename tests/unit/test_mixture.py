"""Modality-balanced batches: exact shares, unique tiles within a batch, nothing dropped."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from gleam.training.mixture import Allocator, MixtureSampler, normalise_weights


def test_uniform_weights_give_exact_shares_over_steps() -> None:
    allocator = Allocator({"drone": 1, "panorama": 1, "ground": 1}, batch_size=8)
    totals: Counter[str] = Counter()
    for _ in range(30):
        step = allocator.next()
        assert sum(step.values()) == 8
        totals.update(step)
    assert totals == {"drone": 80, "ground": 80, "panorama": 80}


def test_weights_are_followed_not_dataset_sizes() -> None:
    allocator = Allocator({"panorama": 3, "drone": 1}, batch_size=4)
    totals: Counter[str] = Counter()
    for _ in range(100):
        totals.update(allocator.next())
    assert totals == {"panorama": 300, "drone": 100}


def test_small_batches_still_serve_every_modality_in_turn() -> None:
    allocator = Allocator({"a": 1, "b": 1, "c": 1}, batch_size=1)
    steps = [next(iter(allocator.next())) for _ in range(6)]
    assert Counter(steps) == {"a": 2, "b": 2, "c": 2}


def test_allocator_state_restores_exactly() -> None:
    a = Allocator({"x": 0.7, "y": 0.3}, batch_size=5)
    for _ in range(3):
        a.next()
    b = Allocator({"x": 0.7, "y": 0.3}, batch_size=5)
    b.restore(a.state())
    assert [a.next() for _ in range(10)] == [b.next() for _ in range(10)]


@pytest.mark.parametrize(
    ("weights", "message"),
    [({}, "at least one"), ({"a": -1}, ">= 0"), ({"a": 0.0}, "all be zero"), ({"a": float("nan")}, "finite")],
)
def test_bad_weights(weights: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalise_weights(weights)


def stream(modality: str, tiles: list[int]) -> itertools.cycle:
    return itertools.cycle([{"query_id": f"{modality}-{i}-{t}", "tile_id": t} for i, t in enumerate(tiles)])


def test_tiles_are_unique_within_a_batch_and_no_pair_is_lost() -> None:
    # drone and ground share the same 6 tiles: a naive sampler repeats tiles inside a batch
    tiles = [0, 1, 2, 3, 4, 5]
    sampler = MixtureSampler(
        {"drone": stream("drone", tiles), "ground": stream("ground", tiles)},
        {"drone": 1, "ground": 1},
        batch_size=6,
    )
    seen: Counter[str] = Counter()
    for _ in range(40):
        batch = sampler.next_batch()
        ids = [r["tile_id"] for rows in batch.values() for r in rows]
        assert len(ids) == 6 and len(set(ids)) == 6
        seen.update(r["query_id"] for rows in batch.values() for r in rows)
    # every pair keeps being served: deferred rows come back, none starve
    assert len(seen) == 12 and max(seen.values()) - min(seen.values()) <= 2


def test_repeats_are_accepted_when_the_data_cannot_avoid_them() -> None:
    sampler = MixtureSampler({"drone": stream("drone", [7])}, {"drone": 1}, batch_size=3)
    batch = sampler.next_batch()
    assert [r["tile_id"] for r in batch["drone"]] == [7, 7, 7]


def test_a_weighted_modality_without_data_is_an_error() -> None:
    with pytest.raises(ValueError, match="no data stream"):
        MixtureSampler({"drone": stream("drone", [1])}, {"drone": 1, "panorama": 1}, batch_size=2)


class Counting:
    """A stream that counts how many rows were pulled from it."""

    def __init__(self, rows: itertools.cycle) -> None:
        self.rows, self.pulled = rows, 0

    def __next__(self) -> dict:
        self.pulled += 1
        return next(self.rows)


def test_each_step_pulls_exactly_what_it_serves() -> None:
    # workers must consume their Ray Data shards at one fixed rate, whatever the tile collisions
    drone, ground = Counting(stream("drone", [0, 0, 1, 1, 2])), Counting(stream("ground", [0, 1, 2]))
    sampler = MixtureSampler({"drone": drone, "ground": ground}, {"drone": 1, "ground": 1}, batch_size=4)
    for step in range(1, 11):
        sampler.next_batch()
        assert drone.pulled == ground.pulled == 4 + 2 * step  # look-ahead (batch_size) + 2 per step


def test_state_restores_the_same_future_batches() -> None:
    def make() -> MixtureSampler:
        return MixtureSampler(
            {
                "drone": Counting(stream("drone", [0, 0, 1, 2, 3])),
                "ground": Counting(stream("ground", [0, 1, 2, 3, 4, 5])),
            },
            {"drone": 2, "ground": 1},
            batch_size=5,
        )

    first = make()
    for _ in range(3):
        first.next_batch()
    state = first.state()
    position = {m: s.pulled for m, s in first.streams.items()}
    expected = [first.next_batch() for _ in range(4)]
    # a fresh sampler whose streams were advanced to the same position gets the same batches
    second = make()
    for modality, consumed in position.items():
        for _ in range(consumed):
            next(second.streams[modality])
    second.restore(state["credit"], state["pools"])
    assert [second.next_batch() for _ in range(4)] == expected
