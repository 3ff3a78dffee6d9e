"""(c2) The IVF build of N x D vectors (1M x 512 in the full run): faiss-cpu vs faiss-gpu, same vectors.

The index is the one the platform's planner picks when the raw vectors fit the memory budget
(`plan_index`: IVF<nlist>,Flat, nlist ~ 4 sqrt(N)), trained on its seeded sample. Rows:
- the platform's `train_and_add` on CPU (use_gpu=False), every core;
- the platform's `train_and_add` with use_gpu=True: k-means on the GPU, the index stays a CPU index
  (what `gleam index build` does on a GPU node);
- the same key built wholly on the GPU (`faiss.index_cpu_to_gpu`, train and add there, copied back).
Each row's recall@10 against exact search on fresh queries (same nprobe) shows the builds agree. The
GPU rows are skipped, with the reason, where this faiss has no GPU support (the faiss-cpu wheel).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from index_build import Synthetic

from gpu.sizes import Sizes

K = 10


def gpu_support() -> tuple[bool, str]:
    """(usable, why not): faiss built with GPU support and seeing at least one GPU."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        return False, "this faiss has no GPU support (faiss-cpu wheel: no StandardGpuResources)"
    if faiss.get_num_gpus() == 0:
        return False, "faiss has GPU support but sees no GPU (faiss.get_num_gpus() == 0)"
    return True, ""


def recall(index: Any, queries: np.ndarray, exact: np.ndarray, nprobe: int | None) -> float:
    import faiss

    if nprobe:
        faiss.ParameterSpace().set_index_parameters(index, f"nprobe={nprobe}")
    _, found = index.search(queries, K)
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)]))


def full_gpu_build(vectors: np.ndarray, key: str, sample: np.ndarray) -> tuple[Any, float, float]:
    """Train and add on the GPU, then copy back to a CPU index: (index, train s, add s incl. copy)."""
    import faiss

    resources = faiss.StandardGpuResources()
    index = faiss.index_cpu_to_gpu(
        resources, 0, faiss.index_factory(vectors.shape[1], key, faiss.METRIC_INNER_PRODUCT)
    )
    started = time.perf_counter()
    index.train(vectors[sample])
    trained = time.perf_counter()
    index.add(vectors)
    cpu_index = faiss.index_gpu_to_cpu(index)
    added = time.perf_counter()
    return cpu_index, trained - started, added - trained


def measure_faiss(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    import faiss

    from gleam.index.build import train_and_add
    from gleam.index.factory import FLOAT_BYTES, ID_BYTES, plan_index

    n, dim = sizes.faiss_n, sizes.faiss_dim
    threads = os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    synthetic = Synthetic()
    vectors = np.load(synthetic.write(workdir / "vectors.npy", n, dim))
    queries = synthetic.queries(sizes.faiss_queries, dim)
    exact_index = faiss.IndexFlatIP(dim)
    exact_index.add(vectors)
    _, exact = exact_index.search(queries, K)
    del exact_index
    vectors_s = time.perf_counter() - started
    plan = plan_index(n, dim, n * (dim * FLOAT_BYTES + ID_BYTES), exact_limit=0)
    rows: list[dict[str, Any]] = []

    def platform_row(label: str, use_gpu: bool) -> None:
        built = train_and_add(vectors, plan, seed=0, use_gpu=use_gpu)
        rows.append(
            {
                "build": label,
                "train_s": built.train_seconds,
                "add_s": built.add_seconds,
                "total_s": built.train_seconds + built.add_seconds,
                "used_gpu": built.used_gpu,
                "recall_at_10": recall(built.index, queries, exact, plan.nprobe),
            }
        )
        print(f"  {label}: {rows[-1]['total_s']:.1f} s", flush=True)

    platform_row(f"platform train_and_add, CPU ({threads} threads)", use_gpu=False)
    usable, why = gpu_support()
    if usable:
        platform_row("platform train_and_add, use_gpu=True (k-means on GPU, CPU index)", use_gpu=True)
        sample = np.sort(np.random.default_rng(0).choice(n, size=min(plan.train_size, n), replace=False))
        index, train_s, add_s = full_gpu_build(vectors, plan.key, sample)
        rows.append(
            {
                "build": "whole build on GPU (index_cpu_to_gpu), copied back",
                "train_s": train_s,
                "add_s": add_s,
                "total_s": train_s + add_s,
                "used_gpu": True,
                "recall_at_10": recall(index, queries, exact, plan.nprobe),
            }
        )
        print(f"  whole build on GPU: {rows[-1]['total_s']:.1f} s", flush=True)
    cpu_total = rows[0]["total_s"]
    for row in rows:
        row["x_cpu"] = cpu_total / row["total_s"] if row["total_s"] > 0 else None
    (workdir / "vectors.npy").unlink(missing_ok=True)
    return {
        "n": n,
        "dim": dim,
        "key": plan.key,
        "train_size": plan.train_size,
        "nprobe": plan.nprobe,
        "vectors_seconds": vectors_s,
        "rows": rows,
        "gpu_skipped": "" if usable else why,
        "faiss": faiss.__version__,
    }
