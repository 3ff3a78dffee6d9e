"""Nested training state (optimiser, scheduler, counters) as safetensors + JSON: never pickle.

`torch.save` would be the easy way, but a checkpoint in shared storage that is loaded with pickle runs
whatever code was put there. Tensors go to one safetensors file under generated keys; everything else
(numbers, strings, lists, dicts with str or int keys) goes to a JSON skeleton that points at them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

_TENSOR = "__tensor__"
_INT_KEYS = "__int_keys__"


def split_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON skeleton, tensors by key) of a nested structure of dicts, lists, tensors and scalars."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = node.detach().to("cpu").contiguous().clone()
            return {_TENSOR: key}
        if isinstance(node, dict):
            int_keys = [k for k in node if isinstance(k, int)]
            if any(not isinstance(k, (str, int)) for k in node):
                raise TypeError(f"state dict keys must be str or int, got {list(node)[:5]}")
            out = {str(k): walk(v) for k, v in node.items()}
            if int_keys:
                out[_INT_KEYS] = [str(k) for k in int_keys]
            return out
        if isinstance(node, (list, tuple)):
            return [walk(v) for v in node]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store {type(node).__name__} in a checkpoint without pickle")

    return walk(state), tensors


def join_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of split_state."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {_TENSOR}:
            return tensors[skeleton[_TENSOR]]
        int_keys = set(skeleton.get(_INT_KEYS, []))
        return {
            (int(k) if k in int_keys else k): join_state(v, tensors)
            for k, v in skeleton.items()
            if k != _INT_KEYS
        }
    if isinstance(skeleton, list):
        return [join_state(v, tensors) for v in skeleton]
    return skeleton


def save_state(state: Any, folder: str | Path, name: str) -> None:
    """Write <name>.json and <name>.safetensors under a local folder."""
    from safetensors.torch import save_file

    skeleton, tensors = split_state(state)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton))


def load_state(folder: str | Path, name: str, device: str | torch.device = "cpu") -> Any:
    from safetensors.torch import load_file

    folder = Path(folder)
    tensors = load_file(str(folder / f"{name}.safetensors"), device=str(device))
    return join_state(json.loads((folder / f"{name}.json").read_text()), tensors)


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an optimiser `state_dict` that went through JSON: its tuples (Adam's `betas`) came back as
    lists, so they are turned back before loading, and the restored groups equal the saved ones."""
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in state["param_groups"]]
    optimizer.load_state_dict({**state, "param_groups": groups})
