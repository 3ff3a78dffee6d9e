"""What every GLEAM-X answer is made of, in a leaf module so its producers need not import each other.

`evidence.py` (the encoder's answer), `mllm.py` (the model) and `explainer.py` (which composes them) all
need the answer type and the query-image normalisation; keeping both here, importing nothing from the
three, is what lets each of them depend only downwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from gleam.model.transforms import ImageInput


@dataclass
class Explanation:
    """One answer. `reasoning_source`: "mllm" (the model's words) or "evidence" (the encoder's numbers)."""

    match: bool | None
    confidence: float | None
    reasoning: str | None
    reasoning_source: Literal["mllm", "evidence"]
    parsed: bool
    raw: str | None
    language: str
    evidence: dict[str, Any]
    model: dict[str, Any] | None
    seconds: float
    error: str | None = None  # why an MLLM answer was not (fully) parsed
    notes: list[str] = field(default_factory=list)  # what was read, rescaled, fallen back on, or unknown

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image (bytes, PIL image, array) or a list/tuple of them -> a non-empty list."""
    out = list(images) if isinstance(images, (list, tuple)) else [images]
    if not out:
        raise ValueError("at least one query image is needed")
    return out
