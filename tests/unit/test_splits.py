"""Split assignment by a stable hash of the location."""

from __future__ import annotations

from collections import Counter

from gleam.corpus.config import SplitConfig
from gleam.corpus.splits import split_for_location


def test_stable_and_close_to_the_fractions() -> None:
    config = SplitConfig(val_fraction=0.1, test_fraction=0.2)
    first = [split_for_location(f"loc{i}", config) for i in range(5000)]
    assert first == [split_for_location(f"loc{i}", config) for i in range(5000)]
    counts = Counter(first)
    assert abs(counts["test"] / 5000 - 0.2) < 0.03
    assert abs(counts["val"] / 5000 - 0.1) < 0.03


def test_salt_reshuffles() -> None:
    a = [split_for_location(f"l{i}", SplitConfig(salt="a")) for i in range(200)]
    b = [split_for_location(f"l{i}", SplitConfig(salt="b")) for i in range(200)]
    assert a != b


def test_zero_fractions_put_everything_in_train() -> None:
    config = SplitConfig(val_fraction=0.0, test_fraction=0.0)
    assert {split_for_location(f"l{i}", config) for i in range(100)} == {"train"}
