"""Split assignment by location: a place is never in train and test at once.

A stable hash of (salt, location_id) decides, so adding or removing other places never moves a place
to another split, and re-runs agree with each other on every machine.
"""

from __future__ import annotations

import hashlib

from gleam.corpus.config import SplitConfig
from gleam.corpus.schema import Split


def split_for_location(location_id: str, config: SplitConfig) -> str:
    digest = hashlib.sha256(f"{config.salt}:{location_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < config.test_fraction:
        return Split.TEST.value
    if u < config.test_fraction + config.val_fraction:
        return Split.VAL.value
    return Split.TRAIN.value
