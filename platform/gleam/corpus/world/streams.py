"""The random streams of a world, named once: one generator per (world, place, view, photo).

A key is a tuple of integers for `np.random.default_rng`; every view of every photo has its own, so a
world renders to the same bytes in any order and any process. The first photo of a place's set uses the
key of the first worlds (without a photo number), so those worlds keep their bytes.
"""

from __future__ import annotations

import numpy as np

from gleam.corpus.schema import Modality

MODALITY_CODES = {m: i for i, m in enumerate(Modality)}
CAPTURE = 100  # light and sky shared by the panorama and the ground photo of one street-level capture
OFFSET = 0x0FF5  # where a photo's camera stands
OUTLIERS = 0x0DD  # which sets hold an odd photo out, which photo and which other place
GRID = 0x6D1D  # grid tiles, apart from the places' streams

Key = tuple[int, ...]


def view_key(seed: int, place: int, stream: int, slot: int = 0) -> Key:
    """The stream of one view of photo `slot` of a place's set (slot 0: the first worlds' key)."""
    return (seed, place, stream) if slot == 0 else (seed, place, stream, slot)


def generator(key: Key) -> np.random.Generator:
    return np.random.default_rng(list(key))
