"""Pair mining for the explanation set: balanced, seeded query choice; hard negatives of the query's own
split with their 1-based rank and score from a real FAISS search; deepening until found."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from gleam.explain.dataset.job import assemble, carry_reviews
from gleam.explain.dataset.pairs import Mined, choose_queries, keep_balanced, mine, pair_rows
from gleam.explain.dataset.rationales import RESULT_SCHEMA
from gleam.explain.explanation_set import PAIRS_SCHEMA, REJECTS_SCHEMA, pair_id


class FlatIndex:
    """A real FAISS inner-product index behind the protocol the miner uses (as OpenedIndex provides)."""

    name, version, meta = "test", "v1", {}

    def __init__(self, tile_ids: list[str], vectors: np.ndarray) -> None:
        import faiss

        self.tile_ids = np.asarray(tile_ids, dtype=object)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.depths: list[int] = []

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.depths.append(k)
        scores, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        tiles = np.full(ids.shape, None, dtype=object)
        tiles[ids >= 0] = self.tile_ids[ids[ids >= 0]]
        return scores, tiles

    def position(self, tile_id: str) -> int | None:
        hits = np.flatnonzero(self.tile_ids == tile_id)
        return int(hits[0]) if len(hits) else None

    def __len__(self) -> int:
        return len(self.tile_ids)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def query_rows(spec: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    rows = []
    for (split, modality), count in spec.items():
        for i in range(count):
            rows.append({"query_id": f"{split}-{modality}-{i:02d}", "modality": modality, "split": split})
            rows[-1]["tile_id"] = f"t-{split}-{i:02d}"
    return rows


def test_every_modality_of_a_split_gets_the_same_count_chosen_by_seed() -> None:
    rows = query_rows({("train", "drone"): 9, ("train", "ground"): 4, ("test", "drone"): 3})
    chosen, targets = choose_queries(rows, lambda t: True, ["drone", "ground"], {"train": 6, "test": 2}, 7)
    assert targets == {("train", "drone"): 4, ("train", "ground"): 4, ("test", "drone"): 2}
    assert len(chosen[("train", "drone")]) == 5  # the target plus a spare, in case one is not reached
    assert len(chosen[("train", "ground")]) == 4  # all there are
    again, _ = choose_queries(
        list(reversed(rows)), lambda t: True, ["drone", "ground"], {"train": 6, "test": 2}, 7
    )
    assert again == chosen  # the input order does not matter, the seed does
    other, _ = choose_queries(rows, lambda t: True, ["drone", "ground"], {"train": 6, "test": 2}, 8)
    assert [r["query_id"] for r in other[("train", "drone")]] != [
        r["query_id"] for r in chosen[("train", "drone")]
    ]


def test_only_queries_whose_tile_is_indexed_and_of_chosen_splits_and_modalities_count() -> None:
    rows = query_rows({("train", "drone"): 4, ("val", "drone"): 4, ("train", "panorama"): 4})
    chosen, targets = choose_queries(rows, lambda t: not t.endswith("00"), ["drone"], {"train": 10}, 0)
    assert set(targets) == {("train", "drone")} and targets[("train", "drone")] == 3
    assert all(r["tile_id"] != "t-train-00" for r in chosen[("train", "drone")])


def world(
    splits: dict[str, int], dim: int = 8, seed: int = 0
) -> tuple[FlatIndex, dict[str, str], np.ndarray]:
    rng = np.random.default_rng(seed)
    tiles = [f"t-{split}-{i:02d}" for split, n in splits.items() for i in range(n)]
    vectors = unit(rng.normal(size=(len(tiles), dim)))
    tile_split = {t: t.split("-")[1] for t in tiles}
    return FlatIndex(tiles, vectors), tile_split, vectors


def test_negatives_are_the_top_ranked_wrong_tiles_of_the_query_split() -> None:
    index, tile_split, vectors = world({"train": 30, "test": 30})
    queries = [
        {"query_id": f"q{i}", "tile_id": f"t-test-{i:02d}", "split": "test", "modality": "drone"}
        for i in range(5)
    ]
    own = vectors[[index.position(q["tile_id"]) for q in queries]]
    noisy = unit(own + 0.3 * np.random.default_rng(1).normal(size=own.shape))
    mined = mine(index, noisy, queries, tile_split, negatives=3, start_depth=2)
    for item, vector in zip(mined, noisy, strict=True):
        order = np.argsort(-(vectors @ vector), kind="stable")
        ranked = [index.tile_ids[i] for i in order]
        expected = [t for t in ranked if tile_split[t] == "test" and t != item.query["tile_id"]][:3]
        assert [t for t, _, _ in item.negatives] == expected
        for tile, rank, score in item.negatives:
            assert ranked[rank - 1] == tile  # 1-based rank in the whole search, whatever the split above it
            assert score == pytest.approx(float(vectors[index.position(tile)] @ vector), abs=1e-5)
        assert item.positive is not None and ranked[item.positive[0] - 1] == item.query["tile_id"]
    assert index.depths[0] == 16 and index.depths == sorted(index.depths)  # deepened only as needed


def test_a_small_split_gives_what_it_has_after_searching_everything() -> None:
    index, tile_split, vectors = world({"train": 20, "val": 3})
    query = {"query_id": "q", "tile_id": "t-val-00", "split": "val", "modality": "ground"}
    (item,) = mine(index, vectors[[index.position("t-val-00")]], [query], tile_split, negatives=5)
    assert sorted(t for t, _, _ in item.negatives) == ["t-val-01", "t-val-02"]
    assert item.positive == (1, pytest.approx(1.0, abs=1e-5)) and index.depths[-1] == len(index)


def mined_item(split: str, modality: str, i: int, reached: bool = True) -> Mined:
    query = {"query_id": f"{split}-{modality}-{i}", "tile_id": f"t{i}", "split": split, "modality": modality}
    return Mined(query, (1, 0.9) if reached else None, [(f"n{i}", 2, 0.5)])


def test_keep_balanced_drops_unreached_queries_and_trims_every_modality_alike() -> None:
    mined = [mined_item("train", "drone", i, reached=i != 1) for i in range(4)]
    mined += [mined_item("train", "ground", i) for i in range(4)]
    targets = {("train", "drone"): 3, ("train", "ground"): 3}
    kept, skipped = keep_balanced(mined, targets)
    assert skipped == {"own_tile_not_reached": 1}
    names = [m.query["query_id"] for m in kept]
    assert names == [
        "train-drone-0",
        "train-drone-2",
        "train-drone-3",
        "train-ground-0",
        "train-ground-1",
        "train-ground-2",
    ]
    mined[2].positive = None  # drone now has two reached: ground is trimmed to two as well
    kept, _ = keep_balanced(mined, targets)
    assert len(kept) == 4


def test_pair_rows_put_the_match_first_with_stable_ids() -> None:
    rows = pair_rows([mined_item("test", "drone", 3)])
    assert [(r["tile_id"], r["match"], r["rank"]) for r in rows] == [("t3", True, 1), ("n3", False, 2)]
    assert rows[0]["pair_id"] == pair_id("test-drone-3", "t3") != rows[1]["pair_id"]
    pa.Table.from_pylist([{**r, "teacher": "x", "review": "none"} for r in rows], schema=PAIRS_SCHEMA)


def test_a_pair_is_accepted_only_when_every_language_is() -> None:
    pairs = pair_rows([mined_item("test", "drone", 1)])
    good, bad = pairs[0]["pair_id"], pairs[1]["pair_id"]
    results = pa.Table.from_pylist(
        [
            {
                "pair_id": good,
                "language": "en",
                "reasoning": "Roads agree.",
                "detail": "",
                "cached": True,
                "asked": False,
            },
            {
                "pair_id": good,
                "language": "zh",
                "reasoning": "道路一致。",
                "detail": "",
                "cached": False,
                "asked": True,
            },
            {
                "pair_id": bad,
                "language": "en",
                "reasoning": "Rivers differ.",
                "detail": "",
                "cached": False,
                "asked": True,
            },
            {
                "pair_id": bad,
                "language": "zh",
                "reason": "unparseable",
                "detail": "x",
                "cached": False,
                "asked": True,
            },
        ],
        schema=RESULT_SCHEMA,
    )
    accepted, rejected = assemble(pairs, results, ["en", "zh"], "openai:m")
    assert accepted.schema == PAIRS_SCHEMA and rejected.schema == REJECTS_SCHEMA
    (row,) = accepted.to_pylist()
    assert row["similarity"] == pytest.approx(pairs[0]["similarity"])
    expected = {
        **pairs[0],
        "reasoning_en": "Roads agree.",
        "reasoning_zh": "道路一致。",
        "teacher": "openai:m",
    }
    assert {**row, "similarity": pairs[0]["similarity"]} == {**expected, "review": "none"}
    (reject,) = rejected.to_pylist()
    assert (reject["pair_id"], reject["language"], reject["reason"]) == (bad, "zh", "unparseable")
    english_only, _ = assemble(
        pairs, results.filter(pa.compute.equal(results["language"], "en")), ["en"], "t"
    )
    assert english_only.num_rows == 2 and english_only["reasoning_zh"].null_count == 2
    reviewed = accepted.set_column(accepted.schema.get_field_index("review"), "review", pa.array(["revised"]))
    kept, left = carry_reviews(english_only, rejected, reviewed)
    assert sorted(kept["review"].to_pylist()) == ["none", "revised"] and kept.num_rows == 2
    assert left.num_rows == 1  # the reject of another pair stays
