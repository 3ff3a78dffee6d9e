"""Where the shared real-data fixtures live; tests skip with a reason when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """`$GLEAM_SHARED_DATA` or `<repo>/../shared/data` (read in place, never copied)."""
    path = Path(os.environ.get("GLEAM_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared real-data samples not found at {path} (set GLEAM_SHARED_DATA)")
    return path


def shared_dataset(name: str) -> Path:
    path = shared_data_dir() / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name} not found at {path}")
    return path
