"""Images -> normalised tensors per modality: a fixed eval transform, and Sample4Geo-style augmentation.

Evaluation: decode (JPEG/PNG bytes, a PIL image or an HxWx3 uint8 array) -> RGB -> resize to the spec's
(width, height) for the modality -> float tensor normalised with the spec's mean/std. The same code
serves training validation, indexing and serving, so a query is always preprocessed like its gallery.

Training adds, per pair (query, satellite tile), in this order: resize, a geometric transform that
keeps the pair's geometry true, then photometric noise drawn independently for each image (colour
jitter, blur or sharpen, coarse dropout). Every random draw comes from a `numpy.random.Generator`
passed in, so a data loader seeded per step reproduces its batches exactly after a resume.

Geometric conventions (the synthetic world's, VIGOR's and CVACT's; see docs/world.md):

- Satellite tiles (and street maps) are north-up: north at the top, east to the right.
- Panoramas are equirectangular with north at the centre column and azimuth increasing clockwise:
  column c of a W-wide panorama looks at azimuth (c + 0.5) / W * 360 - 180 degrees, so east is at
  3W/4, west at W/4 and south at both edges.
- Flip: mirroring the tile left-right (about its north-south axis: east <-> west, azimuth a -> -a)
  is exactly mirroring the panorama left-right (column c -> W - 1 - c).
- Quarter turns: `np.rot90(tile, k)` turns the tile k*90 degrees counter-clockwise, so what was at
  azimuth k*90 (east for k=1) now points up; the panorama must then have azimuth k*90 at its centre,
  i.e. it is rolled left by k*W/4 columns: `np.roll(pano, -k * W // 4, axis=1)` (Sample4Geo's
  `torch.rot90(sat, k, dims=(1, 2))` with `torch.roll(pano, -k * W // 4, dims=2)`).
- The flip is applied before the turn, to both images.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from pydantic import Field

from gleam.config import StrictModel
from gleam.corpus.schema import Modality
from gleam.model.spec import EncoderSpec, as_modality

ImageInput = bytes | bytearray | memoryview | Image.Image | np.ndarray
Size = tuple[int, int]  # (width, height)
NORTH_UP = (Modality.SATELLITE, Modality.STREETMAP)


# --- decoding and the eval transform ---------------------------------------------------------------------


def decode(image: ImageInput, size: Size | None = None) -> Image.Image:
    """An RGB PIL image; with `size`, JPEGs are decoded at a reduced scale when that is still >= size."""
    if isinstance(image, np.ndarray):
        return Image.fromarray(_as_rgb_array(image))
    if isinstance(image, Image.Image):
        pil = image
    else:
        pil = Image.open(io.BytesIO(bytes(image)))
        if size is not None and pil.format == "JPEG":
            turned = pil.getexif().get(0x0112, 1) >= 5  # EXIF orientations 5-8 swap width and height
            # DCT scaling: a 4x smaller decode is ~4x faster and still at least the size we resize to
            pil.draft("RGB", (size[1], size[0]) if turned else tuple(size))
        pil = ImageOps.exif_transpose(pil)  # phone photos carry their orientation in EXIF
    if pil.mode == "RGB":
        return pil
    if pil.mode in ("RGBA", "LA", "PA") or (pil.mode == "P" and "transparency" in pil.info):
        rgba = pil.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return pil.convert("RGB")


def load_resized(image: ImageInput, size: Size) -> np.ndarray:
    """Decode and resize to (width, height): an (H, W, 3) uint8 array."""
    if isinstance(image, np.ndarray) and image.shape[:2] == (size[1], size[0]):
        # ready input (the served query, prepared by the ingress): what the PIL round trip would give
        return np.array(_as_rgb_array(image), dtype=np.uint8)
    pil = decode(image, size)
    if pil.size != tuple(size):
        pil = pil.resize(tuple(size), Image.BILINEAR)
    return np.array(pil, dtype=np.uint8)  # writable: augmentation may work in place


def to_batch(
    arrays: Sequence[np.ndarray],
    mean: Sequence[float],
    std: Sequence[float],
    channels_last: bool = False,
) -> torch.Tensor:
    """(H, W, 3) uint8 arrays of one size -> a normalised float32 batch (B, 3, H, W), in one pass."""
    if not len(arrays):
        raise ValueError("empty batch")
    stacked = torch.from_numpy(np.stack(arrays))  # (B, H, W, 3)
    return normalize_uint8(stacked.permute(0, 3, 1, 2), mean, std, channels_last)


def normalize_uint8(
    batch: torch.Tensor, mean: Sequence[float], std: Sequence[float], channels_last: bool = False
) -> torch.Tensor:
    """A uint8 batch (B, 3, H, W) -> float32 (x / 255 - mean) / std, converted and scaled in one pass."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = batch.to(dtype=torch.float32, memory_format=fmt)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)]).view(1, 3, 1, 1)
    return out.mul_(scale).sub_(shift)


class EvalTransform:
    """The deterministic transform of one modality: image -> (3, H, W); a list of images -> (B, 3, H, W)."""

    def __init__(self, spec: EncoderSpec, modality: Modality | str) -> None:
        self.modality = as_modality(modality)
        self.size = spec.size(self.modality)
        self.mean, self.std = spec.normalization()
        self.channels_last = spec.channels_last

    def __call__(self, image: ImageInput) -> torch.Tensor:
        return self.batch([image])[0]

    def batch(self, images: Sequence[ImageInput]) -> torch.Tensor:
        arrays = [load_resized(image, self.size) for image in images]
        return to_batch(arrays, self.mean, self.std, self.channels_last)


def eval_batch(images: Sequence[ImageInput], modality: Modality | str, spec: EncoderSpec) -> torch.Tensor:
    """JPEG bytes (or images) of one modality -> the encoder's input batch (B, 3, H, W) float32."""
    return EvalTransform(spec, modality).batch(images)


# --- geometry: kept true between a query and its tile ----------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """A transform of a pair: mirror east-west first, then turn the tile `quarter_turns` x 90 deg CCW."""

    flip: bool = False
    quarter_turns: int = 0  # np.rot90's k, in 0..3

    def satellite(self, tile: np.ndarray) -> np.ndarray:
        """Apply to a north-up image (satellite tile or street map), (H, W, C)."""
        out = tile[:, ::-1] if self.flip else tile
        return np.ascontiguousarray(np.rot90(out, self.quarter_turns % 4))

    def panorama(self, pano: np.ndarray) -> np.ndarray:
        """Apply to a north-centred equirectangular panorama, (H, W, C); W must be a multiple of 4."""
        width = pano.shape[1]
        if self.quarter_turns % 4 and width % 4:
            raise ValueError(f"panorama width {width} is not a multiple of 4: a quarter turn is not a roll")
        out = pano[:, ::-1] if self.flip else pano
        return np.ascontiguousarray(np.roll(out, -(self.quarter_turns % 4) * width // 4, axis=1))


def sample_geometry(rng: np.random.Generator, flip_p: float = 0.5, rotate_p: float = 0.75) -> Geometry:
    """Flip with probability flip_p; turn by 1-3 quarters with probability rotate_p (0.75: uniform k)."""
    flip = bool(rng.random() < flip_p)
    turns = int(rng.integers(1, 4)) if rng.random() < rotate_p else 0
    return Geometry(flip, turns)


def paired_geometric_augment(
    query: np.ndarray,
    sat: np.ndarray,
    rng: np.random.Generator,
    modality: Modality | str = Modality.PANORAMA,
    flip_p: float = 0.5,
    rotate_p: float = 0.75,
) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Transform a (query, tile) pair so that its geometry stays true; returns both and the geometry.

    - panorama: flip + roll of the panorama, flip + quarter turn of the tile (see the module doc);
    - streetmap (north-up like the tile): the same flip and turn on both;
    - drone, ground (heading unknown to the model): the tile alone gets a random quarter turn, no
      flip (a mirrored city is not the city the photo shows).
    """
    modality = as_modality(modality)
    if modality is Modality.PANORAMA:
        geometry = sample_geometry(rng, flip_p, rotate_p)
        return geometry.panorama(query), geometry.satellite(sat), geometry
    if modality in NORTH_UP:
        geometry = sample_geometry(rng, flip_p, rotate_p)
        return geometry.satellite(query), geometry.satellite(sat), geometry
    geometry = sample_geometry(rng, 0.0, rotate_p)
    return query, geometry.satellite(sat), geometry


# --- photometric noise -----------------------------------------------------------------------------------


class AugmentConfig(StrictModel):
    """Training augmentation (defaults after Sample4Geo: jitter 0.15, blur/sharpen 0.3, dropout 0.3)."""

    flip_p: float = Field(0.5, ge=0, le=1, description="paired east-west mirror")
    rotate_p: float = Field(0.75, ge=0, le=1, description="paired quarter turn (0.75: k uniform in 0..3)")
    colour_jitter_p: float = Field(0.5, ge=0, le=1)
    colour_jitter: float = Field(0.15, ge=0, le=0.5, description="brightness/contrast/saturation/hue")
    blur_sharpen_p: float = Field(0.3, ge=0, le=1, description="gaussian blur or sharpen, one of them")
    dropout_p: float = Field(0.3, ge=0, le=1, description="10-25 black boxes of 10-20% of the side")


def photometric(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) uint8 tensor with colour jitter, blur/sharpen and coarse dropout."""
    import torchvision.transforms.v2.functional as TF

    out = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if rng.random() < config.colour_jitter_p and config.colour_jitter > 0:
        s = config.colour_jitter
        ops = [
            lambda t: TF.adjust_brightness(t, float(rng.uniform(1 - s, 1 + s))),
            lambda t: TF.adjust_contrast(t, float(rng.uniform(1 - s, 1 + s))),
            lambda t: TF.adjust_saturation(t, float(rng.uniform(1 - s, 1 + s))),
            lambda t: TF.adjust_hue(t, float(rng.uniform(-s, s))),
        ]
        for index in rng.permutation(len(ops)):
            out = ops[index](out)
    if rng.random() < config.blur_sharpen_p:
        if rng.random() < 0.5:
            sigma = float(rng.uniform(0.3, 1.5))
            kernel = 2 * int(np.ceil(2 * sigma)) + 1
            out = TF.gaussian_blur(out, [kernel, kernel], [sigma, sigma])
        else:
            out = TF.adjust_sharpness(out, float(rng.uniform(1.5, 3.0)))
    if rng.random() < config.dropout_p:
        out = out.clone()  # never write into the caller's array
        _coarse_dropout(out, rng)
    return out


def _coarse_dropout(image: torch.Tensor, rng: np.random.Generator) -> None:
    """Black out 10-25 boxes with sides of 10-20% of the image, in place."""
    _, height, width = image.shape
    for _ in range(int(rng.integers(10, 26))):
        h = int(rng.uniform(0.1, 0.2) * height)
        w = int(rng.uniform(0.1, 0.2) * width)
        y = int(rng.integers(0, max(1, height - h + 1)))
        x = int(rng.integers(0, max(1, width - w + 1)))
        image[:, y : y + h, x : x + w] = 0


# --- the training transform ------------------------------------------------------------------------------


class TrainTransform:
    """Pairs of (query, satellite tile) -> augmented, normalised batches for one query modality."""

    def __init__(self, spec: EncoderSpec, config: AugmentConfig | None = None) -> None:
        self.spec = spec
        self.config = config or AugmentConfig()
        self.mean, self.std = spec.normalization()

    def pair(
        self, query: ImageInput, sat: ImageInput, modality: Modality | str, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, Geometry]:
        """One pair -> (query, tile) as (3, H, W) uint8 tensors at the spec's sizes, and the geometry."""
        modality = as_modality(modality)
        q = load_resized(query, self.spec.size(modality))
        s = load_resized(sat, self.spec.size(Modality.SATELLITE))
        q, s, geometry = paired_geometric_augment(
            q, s, rng, modality, self.config.flip_p, self.config.rotate_p
        )
        return photometric(q, rng, self.config), photometric(s, rng, self.config), geometry

    def batch(
        self,
        queries: Sequence[ImageInput],
        sats: Sequence[ImageInput],
        modality: Modality | str,
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Lists of image bytes -> (queries (B, 3, Hq, Wq), tiles (B, 3, Hs, Ws)), float32, normalised."""
        if len(queries) != len(sats):
            raise ValueError(f"{len(queries)} queries but {len(sats)} tiles")
        pairs = [self.pair(q, s, modality, rng) for q, s in zip(queries, sats, strict=True)]
        return self.normalize([p[0] for p in pairs]), self.normalize([p[1] for p in pairs])

    def normalize(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """(3, H, W) uint8 tensors -> a normalised float32 batch."""
        return normalize_uint8(torch.stack(list(images)), self.mean, self.std, self.spec.channels_last)


def _as_rgb_array(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 3:
        return array
    if array.ndim == 3 and array.shape[2] == 4:
        return array[:, :, :3]
    raise ValueError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
