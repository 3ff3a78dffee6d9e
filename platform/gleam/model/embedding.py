"""One path from images to vectors, shared by evaluation, the index build and the served QueryEncoder.

Image bytes are decoded and put through the eval transform of their modality (`eval_batch`), the encoder
runs under one precision policy, and the rows come back L2-normalised in float32. Because all three
callers use `embed_images`, an evaluation figure, an index vector and a served query vector of the same
image are computed the same way: a change of transform or precision changes all of them, never one.

Precision policy (`resolve_precision`): "auto" is bf16 autocast on GPUs that support it, fp16 autocast on
older GPUs and fp32 on CPU; "fp32", "bf16" and "fp16" force one. The projection runs in float32 whatever
the autocast (see `GleamEncoder.forward`), and rows are normalised again here so a flat inner-product
index never depends on the encoder having done it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gleam.corpus.reader import PreparedCorpus
from gleam.corpus.schema import Modality

if TYPE_CHECKING:
    from gleam.model.encoder import GleamEncoder
    from gleam.model.spec import EncoderSpec
    from gleam.model.transforms import ImageInput

# torch, timm and the transforms are imported where images are embedded, so configs can name `Precision`
# without importing them
Precision = Literal["auto", "fp32", "bf16", "fp16"]


def resolve_precision(precision: str, device_type: str) -> str:
    """auto -> bf16 on GPUs with bf16, fp16 on older GPUs, fp32 on CPU; anything else is kept."""
    if precision != "auto":
        return precision
    if device_type != "cuda":
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


class EncoderActor:
    """Base of the Ray Data actors that embed with a registered encoder (tiles for the index, queries for
    the explanation set): the driver's settings first (the actor runs in another folder), torch's
    threads, the device, and the weights checked against the fingerprint the driver pinned."""

    def __init__(
        self, encoder_uri: str, fingerprint: str, settings: dict[str, str], precision: str, threads: int
    ) -> None:
        import torch

        from gleam import runtime_env
        from gleam.model import weights

        runtime_env.apply(settings)  # the driver's store and registry, whatever this actor's folder
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder, self.spec, _ = weights.load(
            encoder_uri, map_location=self.device, expect_fingerprint=fingerprint
        )
        self.precision = resolve_precision(precision, self.device.type)


def encoder_actor_kwargs(
    encoder_uri: str, fingerprint: str, precision: str, num_cpus: float
) -> dict[str, Any]:
    """`fn_constructor_kwargs` of an EncoderActor pool, with the driver's resolved settings."""
    from gleam import runtime_env

    return {
        "encoder_uri": encoder_uri,
        "fingerprint": fingerprint,
        "settings": runtime_env.resolved(),
        "precision": precision,
        "threads": max(1, int(num_cpus)),
    }


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, in contiguous float32 (a zero row stays zero)."""
    out = np.ascontiguousarray(vectors, dtype=np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def embed_images(
    encoder: GleamEncoder,
    spec: EncoderSpec,
    images: Sequence[ImageInput],
    modality: Modality | str,
    precision: str = "auto",
) -> np.ndarray:
    """Images (JPEG bytes) of one modality -> unit float32 vectors (N, D), on the encoder's device."""
    import torch

    from gleam.model.transforms import eval_batch

    device = next(encoder.parameters()).device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision(precision, device.type))
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        batch = eval_batch(images, modality, spec).to(device)
        vectors = encoder.encode(batch, modality).float().cpu().numpy()
    return unit_rows(vectors)


# --- a part of a prepared corpus -------------------------------------------------------------------------


@dataclass(frozen=True)
class Embedded:
    """Ids, positive labels (tile ids) and unit vectors of one side of a search, sorted by id."""

    ids: list[str]
    labels: list[str]
    vectors: np.ndarray  # (N, D) float32, L2-normalised


def embed_corpus(
    corpus: PreparedCorpus,
    part: str,
    where: pc.Expression,
    modality: Modality,
    encoder: GleamEncoder,
    spec: EncoderSpec,
    batch_size: int,
    precision: str = "auto",
) -> Embedded:
    """Stream the matching rows of `part` ("tiles" or "queries") through `embed_images`.

    Only ids, labels and vectors are kept, so a large split never has to fit in memory as JPEG bytes.
    """
    id_column = "tile_id" if part == "tiles" else "query_id"
    ids: list[str] = []
    labels: list[str] = []
    chunks: list[np.ndarray] = []
    columns = list(dict.fromkeys([id_column, "tile_id", "image"]))
    for batch in _batches(corpus, part, columns, where, batch_size):
        ids.extend(batch.column(id_column).to_pylist())
        labels.extend(batch.column("tile_id").to_pylist())
        chunks.append(embed_images(encoder, spec, batch.column("image").to_pylist(), modality, precision))
    if not ids:
        return Embedded([], [], np.zeros((0, encoder.embedding_dim), dtype=np.float32))
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    vectors = np.concatenate(chunks)[order]
    return Embedded([ids[i] for i in order], [labels[i] for i in order], vectors)


def _batches(
    corpus: PreparedCorpus, part: str, columns: list[str], where: pc.Expression, batch_size: int
) -> Iterator[pa.RecordBatch]:
    for batch in corpus.dataset(part).to_batches(columns=columns, filter=where, batch_size=batch_size):
        if batch.num_rows:
            yield batch
