"""What a GLEAM-C encoder is, as data: backbone, pretrained source, head, input sizes, normalisation.

The spec travels with the weights (`encoder.json`), so anything needed to rebuild the network or to
preprocess its inputs must live here, and nothing else. Importing this module does not import timm;
the timm defaults (mean/std) are looked up lazily, only when a caller asks for them.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator

from gleam.config import StrictModel
from gleam.corpus.schema import Modality

HF_CACHE = "hf-cache"
HUB = "hub"  # fetched by the train driver into the store (gleam.model.hub_weights), never by a worker
PRETRAINED_KEYWORDS = frozenset({HF_CACHE, HUB})  # `pretrained` values that are not paths
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Sample4Geo's sizes: 384 px square for overhead and perspective views, panoramas twice as wide.
DEFAULT_IMAGE_SIZES: dict[Modality, tuple[int, int]] = {
    Modality.SATELLITE: (384, 384),
    Modality.DRONE: (384, 384),
    Modality.STREETMAP: (384, 384),
    Modality.PANORAMA: (768, 384),
    Modality.GROUND: (384, 384),
}

Triple = tuple[float, float, float]


class EncoderSpec(StrictModel):
    """A GLEAM-C encoder. Sizes are (width, height) per modality, as in the prepared corpus."""

    backbone: str = Field("convnext_base.fb_in22k_ft_in1k_384", min_length=1, description="timm model name")
    pretrained: str | None = Field(
        None,
        description="None (random init), a weights file or folder (safetensors or a timm/HF checkpoint; "
        "a local path, or an s3:// file), 'hf-cache' (the timm weights from the local Hugging Face cache, "
        "never the network) or 'hub' (the timm weights from the Hugging Face Hub, fetched once per train "
        "job by the driver into the store)",
    )
    embed_dim: int | None = Field(None, ge=1, description="None: the backbone's features; else a projection")
    image_sizes: dict[Modality, tuple[int, int]] = Field(
        default_factory=lambda: dict(DEFAULT_IMAGE_SIZES), description="(width, height) per modality"
    )
    mean: Triple | None = Field(None, description="default: the timm pretrained config, else ImageNet")
    std: Triple | None = Field(None, description="default: the timm pretrained config, else ImageNet")
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)
    grad_checkpointing: bool = False
    channels_last: bool = False

    @field_validator("pretrained")
    @classmethod
    def _pretrained(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(f"pretrained must be null, a path, {HF_CACHE!r} or {HUB!r}")
        return value

    @field_validator("image_sizes")
    @classmethod
    def _sizes(cls, value: dict[Modality, tuple[int, int]]) -> dict[Modality, tuple[int, int]]:
        merged = {**DEFAULT_IMAGE_SIZES, **value}
        for modality, (w, h) in merged.items():
            if w < 16 or h < 16:
                raise ValueError(f"size of {modality.value} must be at least 16x16, got {w}x{h}")
        w, h = merged[Modality.SATELLITE]
        if w != h:  # a quarter turn of the tile must keep its shape (rotation augmentation)
            raise ValueError(f"satellite size must be square, got {w}x{h}")
        if merged[Modality.PANORAMA][0] % 4:  # a quarter turn is a roll by exactly width / 4
            raise ValueError(f"panorama width must be a multiple of 4, got {merged[Modality.PANORAMA][0]}")
        return merged

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: Triple | None) -> Triple | None:
        if value is not None and min(value) <= 0:
            raise ValueError("std must be positive")
        return value

    def size(self, modality: Modality | str) -> tuple[int, int]:
        """(width, height) of the input for one modality."""
        return self.image_sizes[as_modality(modality)]

    def normalization(self) -> tuple[Triple, Triple]:
        """(mean, std): the spec's own, else the backbone's pretrained config, else ImageNet."""
        default_mean, default_std = timm_normalization(self.backbone)
        return self.mean or default_mean, self.std or default_std

    def resolved(self) -> EncoderSpec:
        """A copy with mean/std written out, so a saved encoder never depends on timm's registry."""
        mean, std = self.normalization()
        return self.model_copy(update={"mean": mean, "std": std})

    @classmethod
    def tiny(cls, backbone: str = "test_convnext", size: int = 64, **overrides: object) -> EncoderSpec:
        """A small random-weight spec for tests and demos: `size` px squares, panoramas 2*size wide."""
        sizes = {m: (size, size) for m in Modality}
        sizes[Modality.PANORAMA] = (2 * size, size)
        return cls.model_validate({"backbone": backbone, "image_sizes": sizes, **overrides})


def as_modality(value: Modality | str) -> Modality:
    return value if isinstance(value, Modality) else Modality.parse(value)


@lru_cache(maxsize=64)
def timm_normalization(backbone: str) -> tuple[Triple, Triple]:
    """Mean/std of a timm model's pretrained config (ImageNet when timm does not know the name)."""
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(backbone)
    except Exception:  # an unknown name is reported when the model is built, not here
        cfg = None
    if cfg is None or cfg.mean is None or cfg.std is None:
        return IMAGENET_MEAN, IMAGENET_STD
    mean, std = (tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std))
    if len(mean) != 3 or len(std) != 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return mean, std  # type: ignore[return-value]
