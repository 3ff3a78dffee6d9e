"""GLEAM-C model: the shared encoder (`encoder`), its spec (`spec`), weights and registry (`weights`),
per-modality transforms (`transforms`) and the contrastive loss (`loss`).

Submodules are imported on demand, so `import gleam.model` costs nothing and never imports timm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["EncoderSpec", "GleamEncoder"]

if TYPE_CHECKING:
    from gleam.model.encoder import GleamEncoder
    from gleam.model.spec import EncoderSpec


def __getattr__(name: str) -> Any:
    if name == "EncoderSpec":
        from gleam.model.spec import EncoderSpec

        return EncoderSpec
    if name == "GleamEncoder":
        from gleam.model.encoder import GleamEncoder

        return GleamEncoder
    raise AttributeError(f"module 'gleam.model' has no attribute {name!r}")
