"""How big each measurement is: the full GPU run, a quicker GPU run, and the CPU smoke run.

The full run is sized to finish in under 8 minutes on one H100/H200-class GPU (torch.compile of
convnext_base and the CPU half of the 1M x 512 FAISS build are its longest parts); the smoke run takes
every code path at sizes a 2-core CPU runs in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sizes:
    name: str
    backbone: str  # timm name, random init
    image: int  # square side (px) of queries and tiles
    pairs: int  # query/tile pairs per training step (2x images)
    warmup: int  # untimed steps per mode (the first one also compiles)
    steps: int  # timed steps per repeat
    repeats: int
    compile_backend: str  # torch.compile backend of the compiled platform row
    capacity_start: int  # pairs; doubled until a step runs out of memory
    capacity_cap: int  # pairs; the search stops here
    capacity_granularity: int  # pairs; bisection stops at this resolution
    capacity_seconds: float  # time cap of the search
    embed_tiles: int
    embed_batch: int
    embed_halves: bool  # warm-up call, then half and all tiles (rate past fixed costs); else one call
    faiss_n: int
    faiss_dim: int
    faiss_queries: int  # recall@10 queries
    serve_batches: tuple[int, ...]
    serve_calls: int  # timed calls per batch size


FULL = Sizes(
    name="full",
    backbone="convnext_base",
    image=384,
    pairs=64,
    warmup=5,
    steps=10,
    repeats=3,
    compile_backend="inductor",
    capacity_start=64,
    capacity_cap=2048,
    capacity_granularity=8,
    capacity_seconds=150.0,
    embed_tiles=1024,
    embed_batch=128,
    embed_halves=True,
    faiss_n=1_000_000,
    faiss_dim=512,
    faiss_queries=200,
    serve_batches=(1, 8, 32),
    serve_calls=20,
)
QUICK = replace(
    FULL,
    name="quick",
    warmup=3,
    steps=5,
    repeats=2,
    capacity_seconds=60.0,
    capacity_granularity=16,
    embed_tiles=512,
    faiss_n=200_000,
    serve_calls=10,
)
SMOKE = Sizes(
    name="smoke",
    backbone="test_convnext",
    image=64,
    pairs=4,
    warmup=2,
    steps=2,
    repeats=1,
    compile_backend="eager",  # dynamo's capture only: seconds, no C++ toolchain (inductor is the GPU run's)
    capacity_start=2,
    capacity_cap=8,
    capacity_granularity=1,
    capacity_seconds=30.0,
    embed_tiles=24,
    embed_batch=8,
    embed_halves=False,
    faiss_n=10_000,
    faiss_dim=32,
    faiss_queries=50,
    serve_batches=(1, 8, 32),
    serve_calls=2,
)
