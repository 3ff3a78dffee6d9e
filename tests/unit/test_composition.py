"""Neighbourhood batches (gps / similarity modes): the mixture's guarantees kept, neighbours together."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from gleam.training.composition import Composer, compose_plan, shard
from gleam.training.mixture import Allocator, PlannedSampler
from gleam.training.neighbours import gps_neighbours, haversine_m

SIDE = 12  # a 12 x 12 grid of places, ~1.1 km apart


def grid() -> tuple[list[str], list[float], list[float]]:
    ids = [f"t{r:02d}{c:02d}" for r in range(SIDE) for c in range(SIDE)]
    lat = [48.0 + 0.01 * r for r in range(SIDE) for _ in range(SIDE)]
    lon = [11.0 + 0.015 * c for _ in range(SIDE) for c in range(SIDE)]
    return ids, lat, lon


def pairs_of(tiles: list[str], modalities: dict[str, int]) -> dict[str, list[tuple[str, str]]]:
    """Each modality gets queries at the first `n` tiles (a modality may lack some places)."""
    return {m: [(f"{m}-{t}", t) for t in tiles[:n]] for m, n in modalities.items()}


def composer(neighbours=None, seed: int = 3, batch: int = 16, **kw) -> Composer:
    tiles, _, _ = grid()
    pairs = kw.pop("pairs", pairs_of(tiles, {"drone": 144, "panorama": 60}))
    weights = kw.pop("weights", {"drone": 1, "panorama": 1})
    return Composer(pairs, weights, batch, seed, neighbours, **kw)


def test_modality_counts_are_the_allocators_and_tiles_are_unique_per_batch() -> None:
    tiles, lat, lon = grid()
    c = composer(gps_neighbours(tiles, lat, lon, k=16), weights={"drone": 3, "panorama": 1})
    reference = Allocator({"drone": 3, "panorama": 1}, 16)
    for _ in range(40):
        batch = c.next_batch()
        assert dict(Counter(p.modality for p in batch)) == reference.next()
        assert len({p.tile_id for p in batch}) == len(batch) == 16


@pytest.mark.parametrize("neighbours", [None, "gps"])
def test_every_pair_exactly_once_per_epoch_of_its_modality(neighbours) -> None:
    tiles, lat, lon = grid()
    lists = gps_neighbours(tiles, lat, lon, k=16) if neighbours else None
    c = composer(lists)  # drone 144 pairs, panorama 60: uniform shares, panorama cycles faster
    seen: dict[str, list[str]] = {"drone": [], "panorama": []}
    for _ in range(9 * 3):  # 27 steps x 8 per modality = 216 = 1.5 drone epochs, 3.6 panorama epochs
        for p in c.next_batch():
            seen[p.modality].append(p.query_id)
    drone, pano = seen["drone"], seen["panorama"]
    assert sorted(drone[:144]) == sorted(f"drone-{t}" for t in tiles)  # first epoch: each once
    assert sorted(pano[:60]) == sorted(pano[60:120]) == sorted(pano[120:180])
    assert len(set(pano[:60])) == 60
    assert c.state()["modalities"]["panorama"]["epoch"] == 3


def test_composition_is_deterministic_and_resumes_from_its_state() -> None:
    tiles, lat, lon = grid()
    lists = gps_neighbours(tiles, lat, lon, k=16)
    a, b = composer(lists), composer(lists)
    first = [a.next_batch() for _ in range(7)]
    assert first == [b.next_batch() for _ in range(7)]
    state = a.state()
    later = [a.next_batch() for _ in range(12)]
    resumed = composer(lists)
    resumed.restore(state)
    assert [resumed.next_batch() for _ in range(12)] == later
    assert [composer(lists, seed=4).next_batch() for _ in range(1)] != first[:1]


def nearest_in_batch_m(c: Composer, coords: dict[str, tuple[float, float]], steps: int) -> float:
    """Mean over pairs of the distance to the nearest other place of the same batch: how hard its
    hardest in-batch negative is likely to be."""
    nearest = []
    for _ in range(steps):
        batch = c.next_batch()
        for p in batch:
            nearest.append(min(haversine_m(*coords[p.tile_id], *coords[q.tile_id]) for q in batch if q != p))
    return float(np.mean(nearest))


def test_gps_batches_hold_near_places_random_ones_do_not() -> None:
    tiles, lat, lon = grid()
    coords = dict(zip(tiles, zip(lat, lon, strict=True), strict=True))
    pairs = pairs_of(tiles, {"drone": 144})
    gps = composer(
        gps_neighbours(tiles, lat, lon, k=8),
        pairs=pairs,
        weights={"drone": 1},
        batch=8,
        group=8,
        candidates=8,
    )
    rand = composer(None, pairs=pairs, weights={"drone": 1}, batch=8)
    near, far = nearest_in_batch_m(gps, coords, 18), nearest_in_batch_m(rand, coords, 18)
    assert near < 1300 and near < 0.5 * far, (near, far)  # grid spacing ~1.1 km


def test_an_anchor_brings_at_most_group_minus_one_neighbours_from_its_candidates() -> None:
    tiles, lat, lon = grid()
    lists = gps_neighbours(tiles, lat, lon, k=20)
    pairs = pairs_of(tiles, {"drone": 144})
    c = composer(lists, pairs=pairs, weights={"drone": 1}, batch=12, group=4, candidates=6)
    for _ in range(5):
        batch = c.next_batch()
        for start in range(0, 12, 4):  # anchor, then 3 of its 6 nearest (a 12-slot batch: 3 groups)
            anchor, *others = (p.tile_id for p in batch[start : start + 4])
            assert set(others) <= set(lists[anchor][:6]), (anchor, others)


def test_mined_lists_naming_places_without_pairs_are_skipped() -> None:
    tiles, _, _ = grid()
    pairs = pairs_of(tiles, {"drone": 144})
    lists = {t: ["unknown-1", "unknown-2", tiles[(i + 1) % 144]] for i, t in enumerate(tiles)}
    c = composer(lists, pairs=pairs, weights={"drone": 1}, batch=8, group=2, candidates=1)
    batch = c.next_batch()
    assert [batch[1].tile_id] == lists[batch[0].tile_id][2:]


def test_a_place_with_two_modalities_is_never_twice_in_one_batch() -> None:
    tiles = [f"p{i}" for i in range(10)]
    pairs = pairs_of(tiles, {"drone": 10, "ground": 10})
    lists = {t: [u for u in tiles if u != t] for t in tiles}
    c = Composer(pairs, {"drone": 1, "ground": 1}, 10, 0, lists, group=10, candidates=9)
    for _ in range(6):
        batch = c.next_batch()
        assert len({p.tile_id for p in batch}) == 10


def test_a_global_batch_is_dealt_slot_by_slot_and_the_plan_orders_each_worker() -> None:
    tiles, lat, lon = grid()
    c = composer(gps_neighbours(tiles, lat, lon, k=8), batch=8, group=4)
    batch = composer(gps_neighbours(tiles, lat, lon, k=8), batch=8, group=4).next_batch()
    assert shard(batch, 2) == [batch[0::2], batch[1::2]]  # anchor and its first neighbour part ways
    plan = compose_plan(c, 0, 3, world=2)
    assert plan.num_rows == 24
    worker = plan.filter(plan["rank"].to_numpy() == 1).sort_by("pos")
    assert worker["step"].to_pylist() == [0] * 4 + [1] * 4 + [2] * 4
    assert worker["tile_id"].to_pylist()[:4] == [p.tile_id for p in batch[1::2]]
    with pytest.raises(ValueError, match="the plan starts at 0"):
        compose_plan(c, 0, 1, world=2)


def test_planned_sampler_serves_its_steps_in_order_and_refuses_stray_rows() -> None:
    rows = [
        {"step": s, "modality": m, "query_id": f"{m}{s}", "tile_id": f"t{s}{m}"} for s in (4, 5) for m in "ab"
    ]
    sampler = PlannedSampler(iter(rows), batch_size=2, step=4, segment=1)
    assert {m: [r["query_id"] for r in rs] for m, rs in sampler.next_batch().items()} == {
        "a": ["a4"],
        "b": ["b4"],
    }
    assert sampler.state()["last_batch"] == ["a4", "b4"] and sampler.state()["segment"] == 1
    sampler.step = 7  # a stream that does not match the plan
    with pytest.raises(RuntimeError, match="out of order"):
        sampler.next_batch()


def test_segments_are_a_mining_period_or_for_gps_an_epoch_and_enough_pairs() -> None:
    from gleam.training.config import TrainConfig
    from gleam.training.plan import SEGMENT_PAIRS, segment_length

    base = {"name": "r", "corpus": "/c", "modalities": ["drone"], "steps": 10, "batch_size": 8}
    config = TrainConfig.model_validate({**base, "batching": {"mode": "similarity", "mine_every_steps": 7}})
    assert segment_length(config, 1000) == 7
    config = TrainConfig.model_validate({**base, "batching": {"mode": "similarity"}})
    assert segment_length(config, 1000) == 125  # one epoch
    config = TrainConfig.model_validate({**base, "batching": {"mode": "gps"}})
    assert segment_length(config, 1000) == SEGMENT_PAIRS // 8
    assert segment_length(config, 10 * SEGMENT_PAIRS) == 10 * SEGMENT_PAIRS // 8


def test_plan_rows_are_tagged_onto_pairs_even_when_a_pair_is_planned_twice() -> None:
    import pyarrow as pa

    from gleam.training.plan import _tag

    pairs = pa.table({"query_id": pa.array(["q1", "q2"], pa.large_string()), "tile_image": [b"a", b"b"]})
    plan = pa.table({"query_id": ["q2", "q1", "q2"], "step": [0, 0, 1], "pos": [0, 1, 2], "rank": [0, 0, 0]})
    tagged = _tag(pairs, plan).sort_by("pos")
    assert tagged["query_id"].to_pylist() == ["q2", "q1", "q2"] and tagged["step"].to_pylist() == [0, 0, 1]
    assert tagged["tile_image"].to_pylist() == [b"b", b"a", b"b"]
