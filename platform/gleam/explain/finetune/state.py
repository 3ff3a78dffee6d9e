"""Optimiser and scheduler state as safetensors + JSON: a checkpoint in shared storage is never unpickled.

`gleam.training.state_io` does this for GLEAM-C, but `gleam.explain` sits below `gleam.training` in the
layers (training -> evaluation -> index -> explain), so it cannot import it. What is stored here is
narrower: a torch optimiser's `state_dict` (per-parameter tensors and numbers, JSON-able param groups)
and a JSON-able scheduler `state_dict`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

_SEP = "/"


def save_trainer_state(folder: str | Path, name: str, optimizer: Any, scheduler: Any, step: int) -> None:
    """Write <name>.safetensors (the optimiser's tensors) and <name>.json (everything else)."""
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    numbers: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}{_SEP}{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                numbers.setdefault(str(index), {})[key] = value
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    skeleton = {
        "step": int(step),
        "param_groups": state["param_groups"],
        "numbers": numbers,
        "scheduler": scheduler.state_dict(),
    }
    (folder / f"{name}.json").write_text(json.dumps(skeleton))


def load_trainer_state(folder: str | Path, name: str, optimizer: Any, scheduler: Any) -> int:
    """Restore what save_trainer_state wrote into `optimizer` and `scheduler`; returns the step."""
    from safetensors.torch import load_file

    folder = Path(folder)
    skeleton = json.loads((folder / f"{name}.json").read_text())
    tensors = load_file(str(folder / f"{name}.safetensors"))
    per_param: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        index, field = key.split(_SEP, 1)
        per_param.setdefault(int(index), {})[field] = tensor
    for index, values in skeleton["numbers"].items():
        per_param.setdefault(int(index), {}).update(values)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in skeleton["param_groups"]]
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    scheduler.load_state_dict(skeleton["scheduler"])
    return int(skeleton["step"])
