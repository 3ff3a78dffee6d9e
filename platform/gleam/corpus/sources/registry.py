"""Source kinds register here, so a kind lives in one file: `corpus/sources/<kind>.py` holds its config
model and its adapter and registers both; no list of kinds is kept anywhere else.

`PrepareConfig.sources` validates each entry against the kinds registered at that moment, with pydantic's
discriminated union on `kind` (so errors keep their paths: `sources.0.cvact.uri: Field required`). Every
module of this package is imported before the first lookup, so a built-in kind is always known without
a caller importing it; a kind defined elsewhere (a plugin, a test) is known once its module is imported.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar, Union, get_args

from pydantic import Field, PlainValidator, SerializeAsAny, TypeAdapter

from gleam.config import NAME_PATTERN, StrictModel
from gleam.corpus.sources.base import Listed

_NOT_KINDS = frozenset({"base", "registry"})  # modules of this package that define no kind


class SourceBase(StrictModel):
    """What every source has. A kind subclasses it with `kind: Literal["<kind>"]` and a `default_name`."""

    kind: str
    uri: str = Field(description="store URI of the raw corpus root (or of the manifest file)")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="prefix of ids; default per kind")

    default_name: ClassVar[str]  # the id prefix when `name` is not set

    @property
    def source_name(self) -> str:
        return self.name or self.default_name


SourceT = TypeVar("SourceT", bound=SourceBase)
Adapter = Callable[[SourceT], Iterable[Listed]]


@dataclass(frozen=True)
class SourceKind:
    """One registered kind: its config model and the adapter that lists a source of it."""

    name: str
    model: type[SourceBase]
    adapter: Callable[[Any], Iterable[Listed]]


_KINDS: dict[str, SourceKind] = {}


def register(model: type[SourceT]) -> Callable[[Adapter[SourceT]], Adapter[SourceT]]:
    """Decorate a kind's adapter (`@register(VIGORSource) def list_records(source) ...`) to register both."""
    kind = _kind_of(model)
    if not isinstance(getattr(model, "default_name", None), str):
        raise TypeError(f"source model {model.__name__} must set default_name: ClassVar[str]")

    def decorate(adapter: Adapter[SourceT]) -> Adapter[SourceT]:
        known = _KINDS.get(kind)
        if known is not None and _qualified(known.model) != _qualified(model):
            raise ValueError(f"source kind {kind!r} is already registered by {_qualified(known.model)}")
        _KINDS[kind] = SourceKind(kind, model, adapter)
        return adapter

    return decorate


def kinds() -> dict[str, SourceKind]:
    """Every registered kind by name (sorted), the built-in ones included."""
    _import_builtin_kinds()
    return dict(sorted(_KINDS.items()))


def adapter_for(kind: str) -> Callable[[Any], Iterable[Listed]]:
    known = kinds()
    if kind not in known:
        raise ValueError(f"no adapter for source kind {kind!r}; known: {', '.join(known)}")
    return known[kind].adapter


def validate_source(value: Any) -> SourceBase:
    """A source config of whichever registered kind its `kind` names (a model instance passes as is)."""
    return _union_of(tuple(k.model for k in kinds().values())).validate_python(value)


# A field of this type holds one source of any registered kind; it serialises with the kind's own fields.
SourceConfig = SerializeAsAny[Annotated[SourceBase, PlainValidator(validate_source)]]


@lru_cache(maxsize=4)
def _union_of(models: tuple[type[SourceBase], ...]) -> TypeAdapter[SourceBase]:
    return TypeAdapter(Annotated[Union[models], Field(discriminator="kind")])  # noqa: UP007 (a tuple)


@cache
def _import_builtin_kinds() -> None:
    """Import every module of this package once: each registers the kind it defines."""
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.name not in _NOT_KINDS and not module.name.startswith("_"):
            import_module(f"{__package__}.{module.name}")


def _kind_of(model: type[SourceBase]) -> str:
    field = model.model_fields.get("kind")
    values = get_args(field.annotation) if field is not None else ()
    if len(values) != 1 or not isinstance(values[0], str):
        raise TypeError(f"source model {model.__name__} must declare kind: Literal['<kind>']")
    return values[0]


def _qualified(model: type) -> str:
    return f"{model.__module__}.{model.__qualname__}"
