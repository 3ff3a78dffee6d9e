"""(c1) Index embedding: tiles/s of the platform's Ray Data actor pool (`gleam.index.embed.embed_tiles`)
on the device, next to what bounds it: JPEG decode + eval transform in one thread, and the encoder's
forward alone on ready tensors.

The tiles are a synthetic world prepared as a corpus (`benchmarks/worlds.py`, as index_build.py does),
rendered at 32 px (rendering at full size costs 0.4 s a tile) and written by prepare at the suite's
size: smoother than photos, so their JPEGs decode faster than real imagery's. The encoder is a
random-init one saved with `gleam.model.weights.save`; the pool is the index build's own (one actor per
GPU, precision "auto": bf16 where the GPU has it). As in index_build.py, an untimed call warms Ray Data
up, then the pool runs on half and on all tiles: the extra tiles over the extra seconds are the rate
past the fixed costs (Ray Data start-up, actor start, model load). The smoke run makes one call.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from worlds import prepare_world

from gleam.model.spec import EncoderSpec
from gpu.device import release, sync
from gpu.sizes import Sizes


def save_encoder(spec: EncoderSpec, folder: Path) -> tuple[str, str, int]:
    """A random-init encoder written as the platform saves one; (uri, fingerprint, dimension)."""
    from gleam.model import weights
    from gleam.model.encoder import GleamEncoder

    torch.manual_seed(0)
    info = weights.save(GleamEncoder(spec, load_pretrained=False), spec, str(folder))
    return info.uri, info.fingerprint, info.embedding_dim


def forward_rate(spec: EncoderSpec, uri: str, device: torch.device, batch: int, batches: int) -> float:
    """Tiles/s of the loaded encoder on ready random tensors, under the pool's precision policy."""
    import contextlib

    from gleam.model import weights
    from gleam.model.embedding import resolve_precision

    encoder, loaded, _ = weights.load(uri, map_location=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision("auto", device.type))
    side = loaded.size("satellite")[0]
    images = torch.randn(batch, 3, side, side, device=device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        encoder.encode(images, "satellite")  # warm-up: cuDNN picks its algorithms
        sync(device)
        started = time.perf_counter()
        for _ in range(batches):
            encoder.encode(images, "satellite")
        sync(device)
    seconds = time.perf_counter() - started
    del encoder, images
    release(device)
    return batch * batches / seconds


def decode_rate(spec: EncoderSpec, images: list[bytes], batch: int) -> float:
    """Tiles/s of `eval_batch` (decode, resize, normalise) in this one thread: the actor's CPU part."""
    from gleam.model.transforms import eval_batch

    eval_batch(images[:batch], "satellite", spec)
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        eval_batch(images[start : start + batch], "satellite", spec)
    return len(images) / (time.perf_counter() - started)


def measure_embedding(sizes: Sizes, device: torch.device, workdir: Path) -> dict[str, Any]:
    import ray

    from gleam.cluster import init_ray
    from gleam.corpus.reader import open_corpus
    from gleam.corpus.world import WorldConfig, generate_world
    from gleam.index.config import EmbedConfig
    from gleam.index.embed import embed_tiles

    os.environ.setdefault("GLEAM_HOME", str(workdir / "home"))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    size, tiles = sizes.image, sizes.embed_tiles
    started = time.perf_counter()
    generate_world(
        WorldConfig(
            output=str(workdir / "world"), locations=2, distractors=tiles - 2, modalities=["streetmap"],
            tile_size=32, query_size=32, seed=4,
        )
    )  # fmt: skip
    cpus = os.cpu_count() or 2
    ray_cpus = max(2, min(cpus, 16))
    init_ray(num_cpus=ray_cpus)  # Ray finds the GPUs itself; one actor per GPU
    try:
        corpus = open_corpus(
            prepare_world(
                workdir / "world", workdir / "prepared", size, f"rows_per_shard={max(1, tiles // 8)}"
            )
        )
        corpus_s = time.perf_counter() - started
        spec = EncoderSpec.tiny(backbone=sizes.backbone, size=size)
        uri, fingerprint, dim = save_encoder(spec, workdir / "encoder")
        table = corpus.read("tiles", ["tile_id", "image"])
        tile_ids = table["tile_id"].to_pylist()
        # every CPU but one for the actor (its torch threads); the Parquet read tasks need the last
        actor_cpus = float(max(1, min(ray_cpus - 1, 8)))
        config = EmbedConfig(batch_size=sizes.embed_batch, num_cpus=actor_cpus, precision="auto")
        runs = [tile_ids[: len(tile_ids) // 2], tile_ids] if sizes.embed_halves else [tile_ids]
        if sizes.embed_halves:
            embed_tiles(corpus, tile_ids[: sizes.embed_batch], uri, fingerprint, dim, config)  # warm-up
        timed = []
        stats = None
        for ids in runs:
            _, stats = embed_tiles(corpus, ids, uri, fingerprint, dim, config)
            timed.append(stats.seconds)
        assert stats is not None
    finally:
        ray.shutdown()
    extra = timed[-1] - timed[0]
    marginal = (len(tile_ids) - len(tile_ids) // 2) / extra if extra > 0 else None  # None: one run
    images = table["image"].to_pylist()
    return {
        "tiles": len(tile_ids),
        "tile_px": size,
        "batch": sizes.embed_batch,
        "backbone": sizes.backbone,
        "corpus_seconds": corpus_s,
        "pool": {
            "actors": stats.actors,
            "gpus_per_actor": stats.num_gpus,
            "cpus_per_actor": actor_cpus,
            "precision": stats.precision,
            "seconds": timed[-1],
            "tiles_per_s": len(tile_ids) / timed[-1],
            "tiles_per_s_past_fixed_costs": marginal,
            "fixed_seconds": timed[-1] - len(tile_ids) / marginal if marginal else None,
        },
        "decode_tiles_per_s_one_thread": decode_rate(spec, images, sizes.embed_batch),
        "forward_tiles_per_s": forward_rate(spec, uri, device, sizes.embed_batch, max(2, tiles // 256)),
    }
