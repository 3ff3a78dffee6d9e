"""What every job's config shares: the strict base model, tracking settings, env expansion, `--set`
overrides, loading from YAML and the config hash. Each job's own model lives with its job (e.g.
`gleam.corpus.config.PrepareConfig`), so this module imports no job package.

A config is validated completely before any work starts, and a mistake is reported with the dotted path
of the field (`sources.0.uri: Field required`), because a typo found after an hour of Ray work is a bug
in the platform, not in the user. Unknown keys are errors for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gleam import storage
from gleam.errors import ConfigError

ConfigT = TypeVar("ConfigT", bound=BaseModel)
# a default holds no `$` or `}`: the innermost reference matches first, so defaults nest
# (`${GLEAM_STORE:-${GLEAM_HOME:-.gleam}/store}`, the store the code assumes when GLEAM_STORE is unset)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}$]*))?\}")
_MAX_NESTING = 8
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrackingConfig(StrictModel):
    enabled: bool = True
    experiment: str | None = Field(None, description="MLflow experiment; default `gleam-<job>`")
    run_name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


# --- loading -------------------------------------------------------------------------------------------


def expand_env(value: Any) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` (defaults may nest) in every string of a parsed YAML document."""
    if isinstance(value, str):
        for _ in range(_MAX_NESTING):
            expanded = _ENV_REF.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)
            if expanded == value:
                break
            value = expanded
        return value
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    return value


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.0.c=value` override in place; the value is parsed as YAML (`k=5` is an int)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key.path=value")
    dotted, raw = assignment.split("=", 1)
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {assignment!r} names no field")
    value = yaml.safe_load(raw) if raw.strip() else ""
    node: Any = data
    for i, key in enumerate(keys):
        is_last = i == len(keys) - 1
        fresh: Any = value if is_last else ([] if keys[i + 1].isdigit() else {})
        if isinstance(node, list):
            index = _list_index(node, key, dotted)
            if index == len(node):
                node.append(fresh)
            elif is_last:
                node[index] = value
            node = node[index]
        elif isinstance(node, dict):
            if is_last:
                node[key] = value
            elif not isinstance(node.get(key), (dict, list)):
                node[key] = fresh
            node = node[key]
        else:
            raise ConfigError(f"override {dotted!r}: {key!r} is inside a value that is not a mapping")


def _list_index(node: list[Any], key: str, dotted: str) -> int:
    """An index into a list; one past the end appends (so `sources.1.uri=...` adds a source)."""
    if not key.isdigit():
        raise ConfigError(f"override {dotted!r}: {key!r} must be a list index")
    index = int(key)
    if index > len(node):
        raise ConfigError(f"override {dotted!r}: index {index} is out of range (list has {len(node)})")
    return index


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        got = err.get("input")
        got_text = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        lines.append(f"  {path}: {err['msg']}{got_text}")
    return "\n".join(lines)


def parse_config(model: type[ConfigT], data: dict[str, Any], source: str = "<dict>") -> ConfigT:
    try:
        return model.model_validate(expand_env(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(model: type[ConfigT], path: str | Path | None, overrides: list[str] | None = None) -> ConfigT:
    """Read a YAML file (local or store URI), apply `--set` overrides, validate."""
    data: dict[str, Any] = {}
    source = "<overrides>"
    if path is not None:
        source = str(path)
        try:
            text = storage.read_text(str(path))
        except storage.StorageError as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping at the top level")
        data = loaded
    for assignment in overrides or []:
        apply_override(data, assignment)
    return parse_config(model, data, source)


def config_hash(config: BaseModel, exclude: set[str] | None = None) -> str:
    """A stable fingerprint of what a config asks for (used to detect 'same job, already done')."""
    payload = config.model_dump(mode="json", exclude=exclude or set())
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
