"""A fine-tune's optimiser and scheduler state, stored with `gleam.state_io` (safetensors + JSON, the same
format as GLEAM-C's trainer state): a checkpoint in shared storage is never unpickled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gleam.state_io import load_optimizer, load_state, save_state


def save_trainer_state(folder: str | Path, name: str, optimizer: Any, scheduler: Any, step: int) -> None:
    """Write <name>.safetensors (the optimiser's tensors) and <name>.json (everything else)."""
    state = {"step": int(step), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    save_state(state, folder, name)


def load_trainer_state(folder: str | Path, name: str, optimizer: Any, scheduler: Any) -> int:
    """Restore what save_trainer_state wrote into `optimizer` and `scheduler`; returns the step."""
    state = load_state(folder, name)
    load_optimizer(optimizer, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])
