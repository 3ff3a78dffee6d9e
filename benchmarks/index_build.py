"""Index build: Flat, HNSW and IVF-PQ built by the platform next to autofaiss, and tiles/s of the embedder.

For each size and dimension, clustered synthetic unit vectors (seeded, written in chunks to a float32
.npy file that both builders read) are indexed by `gleam.index` (`plan_index` + `train_and_add`, the
build job's own calls) and by autofaiss's `build_index` with the same index key, in the same run. Each
build runs in a child process (ours in this venv, autofaiss in `.venv-autofaiss`, see `make bench-venv`)
with a time limit, and writes its index file; this process then loads both files and measures them
alike: index bytes (the file), recall@10 against exact search on the same held-out queries (drawn from
the same clusters, in neither the set nor any training sample) and queries/s of one batch search, with
the search parameters each builder chose and, for autofaiss's index, with ours too. Our parameters and
the build's own recall come from `train_and_add` with the build job's recall check (floor 0.95 on 1000
vectors of the set held out of the index until `tune` is done); the table puts that recall next to the
fresh-query recall of the finished index at the same parameters, which must agree within 0.01.

Kinds: `flat` (key Flat), `ivf` (the key `plan_index` chooses when the raw vectors fit the budget:
IVF<nlist>,Flat), `hnsw` (HNSW32,Flat) and `ivfpq` (the key `plan_index` chooses when the raw
vectors exceed the memory budget; the budget is set to a quarter of the raw size, which gives
OPQ64,IVF<nlist>,PQ64). autofaiss gets the same key, except that an OPQ key is spelled with its output
dimension (OPQ64_<dim>: the same transform), the only spelling autofaiss's inner-product index factory
and its parameter tuner accept.

A build whose estimated time exceeds `--budget-min` is skipped and the table says why: the estimate
scales the same builder's last build (same dim first) by the work, training by training vectors x lists
x dim, adding by N x dim (x log N for HNSW, x nlist for IVF), and an OPQ key is first probed: one first
and one later OPQ training iteration on the set's own vectors (FAISS's OPQMatrix trains on at most 65536
vectors for 50 iterations, the same for both builders, whatever N). A build that still runs past twice
the budget is stopped.

Embedding: tiles/s of `embed_tiles` (the Ray Data actor pool) with 1 and 2 CPU actors on a small
prepared world corpus with a tiny random-init encoder, next to a single-process loop over the same tiles.

    .venv/bin/python benchmarks/index_build.py                      # 100k and 1M, dims 512 and 1024
    .venv/bin/python benchmarks/index_build.py --quick --no-doc     # a smoke run in about a minute
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from report import append_section, markdown_table
from worlds import prepare_world

REPO = Path(__file__).resolve().parents[1]
AUTOFAISS_PYTHON = REPO / ".venv-autofaiss" / "bin" / "python"
AUTOFAISS_DRIVER = Path(__file__).resolve().parent / "autofaiss_build.py"
K = 10
RECALL_FLOOR = 0.95  # the build job's default (IndexBuildConfig.recall.floor)
TUNE_QUERIES = 1000  # the build job's default recall sample
RAY_CPUS = 2  # the local Ray cluster of the embedding part
HNSW_KEY = "HNSW32,Flat"
KINDS = ("flat", "ivf", "hnsw", "ivfpq")
AGREEMENT = 0.01  # the build's held-out recall and the fresh-query recall must agree this closely


@dataclass(frozen=True)
class Synthetic:
    """Unit vectors around `clusters` random unit centres, varying along a shared `rank`-dim subspace.

    x = centre + spread * (W z) + noise * e, normalised; z ~ N(0, I/rank) in the subspace W (rank x dim,
    orthonormal rows), e ~ N(0, I/dim). The low-rank part gives the set a small intrinsic dimension, as
    learned embeddings have; the isotropic part keeps exact ties away. Rows come in random cluster order,
    so any prefix is a fair sample (autofaiss trains on the first rows of the file).
    """

    clusters: int = 2048
    rank: int = 64
    spread: float = 1.0
    noise: float = 0.3
    seed: int = 0
    chunk: int = 65_536

    def basis(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, dim])
        centres = rng.standard_normal((self.clusters, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        rank = min(self.rank, dim)
        subspace = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T.astype(np.float32)
        return centres, subspace

    def draw(self, rng: np.random.Generator, m: int, centres: np.ndarray, subspace: np.ndarray) -> np.ndarray:
        rank, dim = subspace.shape
        x = centres[rng.integers(len(centres), size=m)]
        x += (self.spread / math.sqrt(rank)) * (rng.standard_normal((m, rank), dtype=np.float32) @ subspace)
        x += (self.noise / math.sqrt(dim)) * rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def write(self, path: Path, n: int, dim: int) -> Path:
        """n x dim float32 rows to a .npy file, a chunk at a time (peak memory: a few chunks)."""
        centres, subspace = self.basis(dim)
        path.parent.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
        for i, start in enumerate(range(0, n, self.chunk)):
            rng = np.random.default_rng([self.seed, dim, i])
            out[start : start + self.chunk] = self.draw(rng, min(self.chunk, n - start), centres, subspace)
        out.flush()
        del out
        return path

    def queries(self, m: int, dim: int) -> np.ndarray:
        """Fresh vectors from the same clusters: in neither the set nor any training sample."""
        centres, subspace = self.basis(dim)
        return self.draw(np.random.default_rng([self.seed, dim, 2**32]), m, centres, subspace)


# --- one build per child process ------------------------------------------------------------------------


@dataclass
class Build:
    """What one builder produced for one configuration (None fields: not built, see `note`)."""

    builder: str  # "gleam" or "autofaiss"
    key: str
    train_seconds: float | None = None
    add_seconds: float | None = None
    total_seconds: float | None = None  # everything the builder does after it has the vectors
    index_bytes: int | None = None
    params: dict[str, int] = field(default_factory=dict)  # search parameters the builder chose
    recall: float | None = None  # on the fresh evaluation queries
    build_recall: float | None = None  # what the build job's own check reported (ours only)
    qps: float | None = None
    note: str = ""

    @property
    def build_seconds(self) -> float | None:
        if self.train_seconds is None or self.add_seconds is None:
            return None
        return self.train_seconds + self.add_seconds


def plan_for(kind: str, n: int, dim: int) -> Any:
    """The IndexPlan our build job would use for this kind."""
    from gleam.index.factory import FLOAT_BYTES, ID_BYTES, plan_index

    raw = n * (dim * FLOAT_BYTES + ID_BYTES)
    if kind == "flat":
        return plan_index(n, dim, raw, force_key="Flat")
    if kind == "ivf":
        return plan_index(n, dim, raw, exact_limit=0)  # raw vectors fit: the planner's inverted lists
    if kind == "hnsw":
        return plan_index(n, dim, raw, force_key=HNSW_KEY)
    if kind == "ivfpq":
        return plan_index(n, dim, raw // 4)  # raw vectors exceed the budget: the planner's PQ choice
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def autofaiss_key(key: str, dim: int) -> str:
    """Our key as autofaiss accepts it: OPQm -> OPQm_dim (FAISS reads both as an OPQ to `dim` dims)."""
    parts = key.split(",")
    if parts[0].startswith("OPQ") and "_" not in parts[0]:
        parts[0] = f"{parts[0]}_{dim}"
    return ",".join(parts)


def build_worker(spec_path: str) -> None:
    """Child process: train_and_add with the build job's recall check, then write the index and timings."""
    import faiss

    from gleam.index.build import RecallTarget, train_and_add
    from gleam.index.factory import IndexPlan

    spec = json.loads(Path(spec_path).read_text())
    faiss.omp_set_num_threads(spec["threads"])
    vectors = np.load(spec["vectors"], mmap_mode="r")
    target = RecallTarget(k=K, floor=RECALL_FLOOR, sample=TUNE_QUERIES, seed=1)  # the job's: seed + 1
    built = train_and_add(vectors, IndexPlan(**spec["plan"]), seed=0, use_gpu=False, recall=target)
    assert built.recall is not None
    started = time.perf_counter()
    faiss.write_index(built.index, spec["index_path"])
    result = {
        "train_seconds": built.train_seconds,
        "add_seconds": built.add_seconds,
        "check_seconds": built.check_seconds,
        "write_seconds": time.perf_counter() - started,
        "search_params": built.search_params,
        "recall": built.recall.recall,
        "recall_queries": built.recall.queries,
    }
    Path(spec["result"]).write_text(json.dumps(result))


def run_child(command: list[str], timeout_s: float, env: dict[str, str]) -> tuple[str, float]:
    """('' or why it failed, wall seconds); the child's output goes to a log file next to its result."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, timeout=timeout_s, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return f"stopped after {timeout_s / 60:.0f} min (2x the budget)", time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return f"failed: {tail[0][:160]}", time.perf_counter() - started
    return "", time.perf_counter() - started


def child_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONDONTWRITEBYTECODE": "1"}


# --- measuring an index ---------------------------------------------------------------------------------


class Measure:
    """Recall and queries/s of any index over one vector set, with ground truth computed once."""

    def __init__(self, vectors: np.ndarray, queries: np.ndarray, min_seconds: float) -> None:
        from gleam.index.build import exact_neighbours

        self.vectors = vectors
        self.queries = queries
        self.min_seconds = min_seconds
        started = time.perf_counter()
        self.exact = exact_neighbours(vectors, queries, K)
        self.exact_seconds = time.perf_counter() - started

    def search(self, index: Any, params: dict[str, int] | str) -> tuple[float, float]:
        """recall@K on the held-out queries, and queries/s of batch searches (repeated to min_seconds)."""
        import faiss

        from gleam.index.build import recall_at_k, set_search_params

        if isinstance(params, str):
            if params:
                faiss.ParameterSpace().set_index_parameters(index, params)
        else:
            set_search_params(index, params)
        _, found = index.search(self.queries, K)
        recall = recall_at_k(found, self.exact, K)
        runs, started = 0, time.perf_counter()
        while runs == 0 or time.perf_counter() - started < self.min_seconds:
            index.search(self.queries, K)
            runs += 1
        return recall, runs * len(self.queries) / (time.perf_counter() - started)


def parse_params(text: str) -> dict[str, int]:
    """'nprobe=64,ht=2048' -> {'nprobe': 64, 'ht': 2048}"""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        out[name] = int(float(value))
    return out


# --- the run --------------------------------------------------------------------------------------------


@dataclass
class Config:
    n: int
    dim: int
    kind: str
    builds: list[Build] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.budget_s = args.budget_min * 60
        self.synthetic = Synthetic()
        self.history: dict[tuple[str, str], list[Spent]] = {}  # (builder, kind) -> builds run so far
        self.opq_probe: dict[tuple[int, int, int], float] = {}  # (dim, m, rows) -> est. OPQ training s
        self.vectors: np.ndarray = np.zeros((0, 0), dtype=np.float32)  # the set being indexed (memmap)
        self.autofaiss_error = "" if args.autofaiss else "not run (--no-autofaiss)"
        self.autofaiss_versions: dict[str, str] = {}
        self.results: list[Config] = []
        self.log: list[str] = []
        if args.autofaiss and not AUTOFAISS_PYTHON.exists():
            self.autofaiss_error = (
                f"not installed: `make bench-venv` creates {AUTOFAISS_PYTHON.parent.parent.name}"
            )

    def say(self, message: str) -> None:
        print(message, flush=True)

    def run(self) -> None:
        import faiss

        faiss.omp_set_num_threads(self.args.threads)
        for n, dim in self.args.sets:
            self.one_set(n, dim)

    def one_set(self, n: int, dim: int) -> None:
        folder = self.workdir / f"vectors-{n}-{dim}"
        started = time.perf_counter()
        path = self.synthetic.write(folder / "embeddings.npy", n, dim)
        generated = time.perf_counter() - started
        vectors = self.vectors = np.load(path, mmap_mode="r")
        queries = self.synthetic.queries(self.args.queries, dim)
        measure = Measure(vectors, queries, self.args.min_search_seconds)
        self.say(
            f"{n} x {dim}: generated in {generated:.1f} s, exact top-{K} of {len(queries)} queries in "
            f"{measure.exact_seconds:.1f} s"
        )
        self.log.append(
            f"{n} x {dim}: vectors generated in {generated:.1f} s ({path.stat().st_size / 2**20:.0f} MiB); "
            f"exact top-{K} of the {len(queries)} evaluation queries in {measure.exact_seconds:.1f} s"
        )
        for kind in self.args.kinds:
            config = Config(n, dim, kind)
            self.results.append(config)
            plan = plan_for(kind, n, dim)
            config.extra["plan"] = plan
            ours = self.ours(config, plan, path, measure)
            config.builds.append(ours)
            self.say(f"  {kind} gleam: {ours}")
            if ours.recall is not None and ours.build_recall is not None:
                self.say(f"  {kind} recall@{K}: {agreement_text(ours)}")
            if self.args.autofaiss:
                theirs = self.autofaiss(config, plan, folder, measure, ours)
                config.builds.extend(theirs)
                self.say(f"  {kind} autofaiss: {theirs}")
            gc.collect()
        del vectors, measure
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        shutil.rmtree(folder, ignore_errors=True)

    # --- budget ---

    def too_slow(self, builder: str, kind: str, n: int, dim: int, key: str, train_size: int) -> str:
        """Why this build is skipped ('' to run it): an estimate over the budget."""
        if "OPQ" in key:
            estimate = self.opq_estimate(key, dim, train_size)
            if estimate > self.budget_s:
                return (
                    f"skipped: OPQ training alone estimated {estimate / 60:.0f} min >"
                    f" {self.args.budget_min:g} min (probe below; FAISS's OPQ trains on at most 65536"
                    " vectors whatever N, for either builder)"
                )
        done = self.history.get((builder, kind), [])
        if not done:
            return ""
        last = max([d for d in done if d.dim == dim] or done, key=lambda d: (d.n, d.dim))
        fixed = self.opq_estimate(key, dim, train_size) if "OPQ" in key else 0.0
        train_work, last_train_work = train_work_of(key, n, dim, train_size), last.train_work(key)
        estimate = fixed + last.add * add_work_of(kind, key, n, dim) / last.add_work(kind, key)
        if last_train_work:
            estimate += max(last.train - last.fixed, 0.0) * train_work / last_train_work
        if estimate > self.budget_s:
            return (
                f"skipped: estimated {estimate / 60:.0f} min > {self.args.budget_min:g} min"
                f" (from {last.train + last.add:.0f} s at {last.n:,} x {last.dim})"
            )
        return ""

    def record(
        self, builder: str, config: Config, key: str, train_size: int, train: float, add: float
    ) -> None:
        fixed = self.opq_estimate(key, config.dim, train_size) if "OPQ" in key else 0.0
        spent = Spent(config.n, config.dim, train_size, train, add, fixed)
        self.history.setdefault((builder, config.kind), []).append(spent)

    def opq_estimate(self, key: str, dim: int, train_size: int) -> float:
        """Seconds FAISS's OPQ training takes on this set, from a probe (cached per dim, m and sample).

        The first OPQ iteration trains its PQ for `niter_pq_0` (40) k-means iterations, later ones for
        `niter_pq` (4): one 1-iteration run of each kind on the vectors OPQ would train on gives
        estimate = first + (niter - 1) x later, with no subtraction of noisy timings.
        """
        import faiss

        m = int(key.split(",")[0][3:].split("_")[0])
        template = faiss.OPQMatrix(dim, m)
        rows = min(train_size, template.max_train_points, len(self.vectors))
        if (dim, m, rows) not in self.opq_probe:
            sample = np.ascontiguousarray(self.vectors[:rows])
            seconds = []
            for pq_iterations in (template.niter_pq_0, template.niter_pq):
                opq = faiss.OPQMatrix(dim, m)
                opq.niter, opq.niter_pq_0 = 1, pq_iterations
                started = time.perf_counter()
                opq.train(sample)
                seconds.append(time.perf_counter() - started)
            first, later = seconds
            self.opq_probe[(dim, m, rows)] = first + (template.niter - 1) * later
            self.log.append(
                f"OPQ{m} at dim {dim}, probe on {rows} vectors of the set: first training iteration"
                f" {first:.1f} s, a later one {later:.1f} s; estimate for FAISS's {template.niter}:"
                f" {self.opq_probe[(dim, m, rows)] / 60:.1f} min"
            )
            self.say(self.log[-1])
        return self.opq_probe[(dim, m, rows)]

    # --- builders ---

    def ours(self, config: Config, plan: Any, path: Path, measure: Measure) -> Build:
        import faiss

        build = Build("gleam", plan.key)
        why = self.too_slow("gleam", config.kind, config.n, config.dim, plan.key, plan.train_size)
        if why:
            build.note = why
            return build
        folder = self.workdir / f"gleam-{config.kind}"  # not beside the .npy autofaiss lists
        folder.mkdir(exist_ok=True)
        spec = {
            "vectors": str(path),
            "plan": asdict(plan),
            "threads": self.args.threads,
            "index_path": str(folder / "index.faiss"),
            "result": str(folder / "result.json"),
        }
        (folder / "spec.json").write_text(json.dumps(spec))
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(folder / "spec.json")]
        error, wall = run_child(command, 2 * self.budget_s, child_env(self.args.threads))
        if error:
            build.note = error
            self.record("gleam", config, plan.key, plan.train_size, wall, 0.0)
            shutil.rmtree(folder, ignore_errors=True)
            return build
        result = json.loads((folder / "result.json").read_text())
        build.train_seconds, build.add_seconds = result["train_seconds"], result["add_seconds"]
        self.record("gleam", config, plan.key, plan.train_size, build.train_seconds, build.add_seconds)
        build.index_bytes = (folder / "index.faiss").stat().st_size
        index = faiss.read_index(spec["index_path"])
        build.params, build.build_recall = result["search_params"], result["recall"]
        build.total_seconds = build.build_seconds + result["write_seconds"] + result["check_seconds"]
        build.recall, build.qps = measure.search(index, build.params)
        config.extra["check_seconds"] = result["check_seconds"]
        del index
        shutil.rmtree(folder, ignore_errors=True)
        return build

    def autofaiss(
        self, config: Config, plan: Any, folder: Path, measure: Measure, ours: Build
    ) -> list[Build]:
        import faiss

        key = autofaiss_key(plan.key, config.dim)
        build = Build("autofaiss", key)
        if self.autofaiss_error:
            build.note = self.autofaiss_error
            return [build]
        why = self.too_slow("autofaiss", config.kind, config.n, config.dim, key, plan.train_size)
        if why:
            build.note = why
            return [build]
        out = self.workdir / f"autofaiss-{config.kind}"
        out.mkdir(exist_ok=True)
        command = [
            str(AUTOFAISS_PYTHON),
            str(AUTOFAISS_DRIVER),
            f"--embeddings={folder}",
            f"--key={key}",
            f"--index-path={out / 'knn.index'}",
            f"--result={out / 'result.json'}",
            f"--threads={self.args.threads}",
            f"--max-index-memory={self.args.autofaiss_max_index_memory}",
            f"--memory-available={self.args.autofaiss_memory}",
        ]
        error, wall = run_child(command, 2 * self.budget_s, child_env(self.args.threads))
        result = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
        error = error or result.get("error", "")
        self.autofaiss_versions = result.get("versions", self.autofaiss_versions)
        seconds = result.get("seconds", {})
        if error:
            self.record("autofaiss", config, key, plan.train_size, wall, 0.0)
        else:
            self.record("autofaiss", config, key, plan.train_size, seconds["train"], seconds["add"])
        if error or not (out / "knn.index").exists():
            build.note = f"autofaiss {error or 'wrote no index'}"
            shutil.rmtree(out, ignore_errors=True)
            return [build]
        build.train_seconds, build.add_seconds = seconds["train"], seconds["add"]
        build.total_seconds = seconds["pipeline"] or result["wall_seconds"]
        build.index_bytes = (out / "knn.index").stat().st_size
        index = faiss.read_index(str(out / "knn.index"))
        chosen = str(result.get("infos", {}).get("index_param", ""))
        build.params = parse_params(chosen)
        build.recall, build.qps = measure.search(index, chosen)
        rows = [build]
        if ours.params and ours.recall is not None:
            same = Build("autofaiss, our params", key, params=dict(ours.params))
            # autofaiss sets ht (polysemous filtering threshold) too; ours leaves it off
            params = {**ours.params, "ht": 0} if "ht" in build.params else ours.params
            same.recall, same.qps = measure.search(index, params)
            rows.append(same)
        del index
        shutil.rmtree(out, ignore_errors=True)
        return rows


@dataclass(frozen=True)
class Spent:
    """Seconds one finished (or stopped) build took, for estimating larger ones."""

    n: int
    dim: int
    train_size: int
    train: float
    add: float
    fixed: float  # of `train`: OPQ training as probed (the same whatever N)

    def train_work(self, key: str) -> float:
        return train_work_of(key, self.n, self.dim, self.train_size)

    def add_work(self, kind: str, key: str) -> float:
        return add_work_of(kind, key, self.n, self.dim)


def train_work_of(key: str, n: int, dim: int, train_size: int) -> float:
    """Relative k-means work: training vectors x lists x dim (0 without IVF: nothing to train)."""
    from gleam.index.factory import ivf_lists

    return float(train_size) * ivf_lists(n) * dim if "IVF" in key else 0.0


def add_work_of(kind: str, key: str, n: int, dim: int) -> float:
    """Relative add work: N x dim, x log N for HNSW (graph search), x nlist for IVF (assignment)."""
    from gleam.index.factory import ivf_lists

    scale = float(n) * dim
    if kind == "hnsw":
        return scale * math.log2(max(n, 2))
    if "IVF" in key:
        return scale * ivf_lists(n)
    return scale


# --- embedding throughput -------------------------------------------------------------------------------


def embed_throughput(args: argparse.Namespace, workdir: Path) -> tuple[str, list[list[object]]]:
    """tiles/s of the Ray Data actor pool (1 and 2 CPU actors) and of a one-process loop, same tiles."""
    import ray
    import torch

    from gleam.cluster import init_ray
    from gleam.corpus.reader import open_corpus
    from gleam.corpus.world import WorldConfig, generate_world
    from gleam.index.config import EmbedConfig
    from gleam.index.embed import embed_tiles
    from gleam.model import weights
    from gleam.model.embedding import embed_images
    from gleam.model.encoder import GleamEncoder
    from gleam.model.spec import EncoderSpec

    size, tiles = args.embed_size, args.embed_tiles
    os.environ.setdefault("GLEAM_HOME", str(workdir / "home"))
    raw, started = workdir / "world", time.perf_counter()
    generate_world(
        WorldConfig(
            output=str(raw), locations=2, distractors=tiles - 2, modalities=["streetmap"],
            tile_size=size, query_size=32, seed=4,
        )
    )  # fmt: skip
    init_ray(num_cpus=RAY_CPUS)
    corpus_uri = prepare_world(
        raw, workdir / "prepared", size, f"rows_per_shard={max(1, tiles // args.embed_shards)}"
    )
    corpus = open_corpus(corpus_uri)
    corpus_seconds = time.perf_counter() - started
    shards = len(corpus.files("tiles"))
    torch.manual_seed(0)
    spec = EncoderSpec.tiny("test_convnext", size=size, embed_dim=args.embed_dim)
    encoder_uri = str(workdir / "encoder")
    info = weights.save(GleamEncoder(spec), spec, encoder_uri)
    table = corpus.read("tiles", ["tile_id", "image"])
    tile_ids = table["tile_id"].to_pylist()

    rows: list[list[object]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    encoder, loaded_spec, _ = weights.load(encoder_uri)
    images = table["image"].to_pylist()
    embed_images(encoder, loaded_spec, images[: args.embed_batch], "satellite", "fp32")  # warm-up, not timed
    started = time.perf_counter()
    for start in range(0, len(images), args.embed_batch):
        embed_images(encoder, loaded_spec, images[start : start + args.embed_batch], "satellite", "fp32")
    loop_seconds = time.perf_counter() - started
    loop_rate = len(images) / loop_seconds
    label = "one-process loop over JPEG bytes in memory (embed_images), 1 torch thread"
    rows.append([label, "-", len(images), f"{loop_seconds:.1f}", f"{loop_rate:.0f}", "1.00", "", ""])
    del encoder, images
    torch.set_num_threads(threads)
    half = tile_ids[: len(tile_ids) // 2]
    warm = EmbedConfig(batch_size=args.embed_batch, actors=1, num_cpus=1, precision="fp32")
    embed_tiles(corpus, tile_ids[: args.embed_batch], encoder_uri, info.fingerprint, args.embed_dim, warm)
    for actors in args.embed_actors:
        # one CPU stays free for the Parquet read tasks: with every CPU held by an actor, they never run
        cpus = min(1.0, (RAY_CPUS - 1) / actors)
        config = EmbedConfig(batch_size=args.embed_batch, actors=actors, num_cpus=cpus, precision="fp32")
        timed = []
        for ids in (half, tile_ids):
            _, stats = embed_tiles(corpus, ids, encoder_uri, info.fingerprint, args.embed_dim, config)
            print(f"embed_tiles, {actors} actor(s): {stats}", flush=True)
            timed.append(stats.seconds)
        rate = len(tile_ids) / timed[1]
        extra = timed[1] - timed[0]
        marginal = (len(tile_ids) - len(half)) / extra if extra > 0 else None
        fixed = timed[1] - len(tile_ids) / marginal if marginal else None
        rows.append(
            [
                "Ray Data actor pool (embed_tiles)",
                f"{actors} x {cpus:g} CPU",
                len(tile_ids),
                f"{timed[1]:.1f}",
                f"{rate:.0f}",
                f"{rate / loop_rate:.2f}",
                fmt(marginal, 0),
                fmt(fixed),
            ]
        )
    ray.shutdown()
    text = (
        f"{len(tile_ids)} tiles of {size} px in {shards} Parquet files (a prepared synthetic world, built in"
        f" {corpus_seconds:.0f} s, not counted), encoder test_convnext (random init, {args.embed_dim}-d) at"
        f" {size} px, fp32, batches of {args.embed_batch}, one torch thread per actor, local Ray with"
        f" {RAY_CPUS} CPUs. The loop decodes JPEG bytes already in memory; `embed_tiles` reads them from"
        " the corpus files and pays Ray Data's start-up, actor start and model load per call (an untimed"
        " call warms Ray Data up first, an untimed batch the loop). Each pool size ran twice, on half and"
        " on all tiles: `past fixed costs` is the extra tiles over the extra seconds,"
        " `fixed s` what remains of the full run's time. Actors reserve at most (CPUs - 1) / actors CPUs:"
        " with one CPU per actor and as many actors as CPUs the Parquet read task never gets a CPU and"
        " `embed_tiles` waits forever (seen while writing this benchmark)."
    )
    return text, rows


# --- report ---------------------------------------------------------------------------------------------


def agreement_text(build: Build) -> str:
    """The build's own (held-out) recall next to the fresh-query recall at the same parameters."""
    assert build.recall is not None and build.build_recall is not None
    diff = build.build_recall - build.recall
    verdict = "agree" if abs(diff) <= AGREEMENT else "DISAGREE"
    return (
        f"build's check {build.build_recall:.3f} vs fresh queries {build.recall:.3f} at"
        f" {params_text(build.params)}: {diff:+.3f} ({verdict} within {AGREEMENT})"
    )


def agreement_header() -> list[str]:
    return [
        "vectors", "dim", "kind", "index key", "search params", f"build's check recall@{K}",
        f"fresh recall@{K}", "check - fresh", f"within {AGREEMENT}",
    ]  # fmt: skip


def agreement_rows(results: list[Config]) -> list[list[object]]:
    rows = []
    for config in results:
        for build in config.builds:
            if build.builder != "gleam" or build.recall is None or build.build_recall is None:
                continue
            diff = build.build_recall - build.recall
            rows.append(
                [
                    f"{config.n:,}",
                    config.dim,
                    config.kind,
                    f"`{build.key}`",
                    params_text(build.params),
                    f"{build.build_recall:.3f}",
                    f"{build.recall:.3f}",
                    f"{diff:+.3f}",
                    "yes" if abs(diff) <= AGREEMENT else "**no**",
                ]
            )
    return rows


def fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def mib(size: int | None) -> str:
    return "" if size is None else f"{size / 2**20:.1f}"


def params_text(params: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def index_rows(results: list[Config]) -> list[list[object]]:
    rows = []
    for config in results:
        ours = next((b for b in config.builds if b.builder == "gleam"), None)
        theirs = next((b for b in config.builds if b.builder == "autofaiss"), None)
        for build in config.builds:
            ratio = ""
            if build is ours and ours.build_seconds and theirs and theirs.build_seconds:
                ratio = f"{ours.build_seconds / theirs.build_seconds:.2f}"
            rows.append(
                [
                    f"{config.n:,}",
                    config.dim,
                    config.kind,
                    build.builder,
                    f"`{build.key}`",
                    fmt(build.build_seconds),
                    ratio,
                    fmt(build.total_seconds),
                    mib(build.index_bytes),
                    params_text(build.params) if build.recall is not None else "",
                    fmt(build.recall, 3),
                    fmt(build.qps, 0),
                    build.note,
                ]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="100000,1000000", help="vector counts, comma-separated")
    parser.add_argument("--dims", default="512,1024", help="dimensions, comma-separated")
    parser.add_argument("--sets", default=None, help="NxDIM pairs instead of sizes x dims, e.g. 100000x1024")
    parser.add_argument("--kinds", default=",".join(KINDS), help="flat,ivf,hnsw,ivfpq")
    parser.add_argument("--no-autofaiss", dest="autofaiss", action="store_false")
    parser.add_argument("--no-embed", dest="embed", action="store_false", help="skip the embedding part")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="FAISS OpenMP threads")
    parser.add_argument("--queries", type=int, default=1000, help="held-out evaluation queries")
    parser.add_argument("--min-search-seconds", type=float, default=1.0, help="repeat searches this long")
    parser.add_argument("--budget-min", type=float, default=15.0, help="skip builds estimated longer")
    parser.add_argument("--autofaiss-memory", default="16G", help="autofaiss current_memory_available")
    parser.add_argument("--autofaiss-max-index-memory", default="8G", help="autofaiss max_index_memory_usage")
    parser.add_argument("--embed-tiles", type=int, default=4000)
    parser.add_argument("--embed-size", type=int, default=128, help="tile and encoder input side (px)")
    parser.add_argument("--embed-dim", type=int, default=64)
    parser.add_argument("--embed-batch", type=int, default=64)
    parser.add_argument("--embed-actors", default="1,2")
    parser.add_argument("--embed-shards", type=int, default=8, help="Parquet files the tiles are split into")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--workdir", default=None, help="where vectors and indexes go (default: a temp dir)")
    parser.add_argument("--no-doc", action="store_true", help="print only; do not touch docs/")
    args = parser.parse_args()
    if args.worker:
        build_worker(args.worker)
        return
    if args.quick:
        args.sizes, args.dims, args.queries, args.embed_tiles = "5000", "64", 200, 400
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.dims = [int(s) for s in args.dims.split(",")]
    if args.sets:
        args.sets = [tuple(int(x) for x in pair.split("x")) for pair in args.sets.split(",")]
    else:
        args.sets = [(n, dim) for n in args.sizes for dim in args.dims]
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    args.embed_actors = [int(a) for a in args.embed_actors.split(",")]
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; expected some of {KINDS}")
    if args.autofaiss and not AUTOFAISS_PYTHON.exists():
        print(f"autofaiss: {AUTOFAISS_PYTHON} not found; run `make bench-venv` (reported in the table)")

    with workspace(args.workdir) as workdir:
        bench = Bench(args, workdir)
        started = time.perf_counter()
        bench.run()
        index_seconds = time.perf_counter() - started
        embed = embed_throughput(args, workdir) if args.embed else None
    body = report(args, bench, index_seconds, embed)
    if args.no_doc:
        print(body)
    else:
        append_section("Index build: platform vs autofaiss, and embedding throughput", body)


@contextlib.contextmanager
def workspace(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    folder = Path(tempfile.mkdtemp(prefix="gleam-bench-index-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(
    args: argparse.Namespace, bench: Bench, seconds: float, embed: tuple[str, list[list[object]]] | None
) -> str:
    import faiss

    synthetic = bench.synthetic
    versions = bench.autofaiss_versions
    autofaiss = (
        f"autofaiss {versions.get('autofaiss', '?')} (faiss-cpu {versions.get('faiss', '?')}) in its own venv"
        if versions
        else f"autofaiss: {bench.autofaiss_error or 'no build completed'}"
    )
    header = [
        "vectors", "dim", "kind", "builder", "index key", "train+add s", "x autofaiss", "whole build s",
        "index MiB", "search params", f"recall@{K}", "queries/s", "note",
    ]  # fmt: skip
    parts = [
        f"Synthetic unit vectors: {synthetic.clusters} random unit centres + a shared {synthetic.rank}-dim"
        f" subspace (spread {synthetic.spread}) + isotropic noise {synthetic.noise}, normalised, seed"
        f" {synthetic.seed}, float32 .npy read by both builders. FAISS {faiss.__version__} here, {autofaiss};"
        f" {args.threads} OpenMP thread(s) for every build and search, inner product. recall@{K}: share of"
        f" the exact top-{K} found, on {args.queries} fresh queries from the same clusters (in no set, no"
        f" training sample); queries/s: one batch of those {args.queries} queries, repeated for at least"
        f" {args.min_search_seconds:g} s, in this process. Our search params: the build job's recall check"
        f" (`tune` to floor {RECALL_FLOOR} on {TUNE_QUERIES} vectors of the set held out of the index until"
        " it is done; the widest setting when the floor is out of reach); autofaiss's: what it chose (its"
        " own target: 10 ms/query)."
        " train+add s: ours `train_and_add` (train incl. reading the sample; add in 65536-vector batches),"
        " autofaiss's `Timeit` stages for reading training vectors, training and adding; x autofaiss: ours /"
        " autofaiss (below 1: ours faster). whole build s: ours train+add+recall check (exact ground truth"
        " and `tune`)+write, autofaiss the whole `build_index` call (train, add, its parameter search,"
        " its metrics, write). index MiB: the written file.",
        f"Budget {args.budget_min:g} min per build (see the script's docstring for the estimate);"
        f" index part took {seconds / 60:.0f} min in all.",
        markdown_table(header, index_rows(bench.results)),
        f"The build's own recall check against fresh queries, per kind: `build's check` is the recall@{K}"
        f" `train_and_add` reported ({TUNE_QUERIES} vectors of the set, at most a tenth of it, held out of"
        f" the index until `tune` was done, exact top-{K} over the rest), `fresh` the finished index's"
        f" recall@{K} at the same parameters on the {args.queries} evaluation queries; they must agree"
        f" within {AGREEMENT}.",
        markdown_table(agreement_header(), agreement_rows(bench.results)),
    ]
    if bench.log:
        parts.append("\n".join(f"- {line}" for line in bench.log))
    if embed is not None:
        text, rows = embed
        header = ["embedder", "actors", "tiles", "seconds", "tiles/s", "x loop", "tiles/s past fixed costs",
                  "fixed s"]  # fmt: skip
        parts += ["Embedding throughput: " + text, markdown_table(header, rows)]
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
