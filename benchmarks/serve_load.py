"""Serving under load: latency and requests/s of `POST /v1/localize`, batching on and off, vs one process.

Setup (not timed): a local Ray cluster (`--ray-cpus`), a synthetic world (`--locations` places, tiles
and `--modality` queries rendered at the encoder's input size) prepared into a corpus, an encoder with
random weights (`EncoderSpec.tiny(--backbone, size=--size, embed_dim=--embed-dim)`, saved as a folder)
and its index, built and published by the index build job (`gleam.index.job.build_index`) over every
tile. Everything is written under a temporary workdir (or `--workdir`), MLflow included.

Measured, in this order, in one run:

1. direct: one process (this one) does per request what the service does, with the service's functions,
   sequentially: `serve.requests.decode_checked` (the ingress's checks, decode, resize to a uint8 array at
   the encoder's input size), `embed_images` with `--threads` torch threads (1, as the QueryEncoder replica
   gets with its 0.25 CPU) and `OpenedIndex.search(vector, k)`, each step timed. Requests cycle through the
   world's real query JPEGs. Then the forward alone at batch 1 and 16 (ms per image): what batching can
   gain in the forward on this CPU.
2. Serve, batching off (`max_batch_size=1`) then on (serve/config.yaml's `max_batch_size=16`, no batch
   wait): the application is started from serve/config.yaml through `serve.run.start` with every
   deployment fixed at one replica (`num_replicas: 1, autoscaling_config: null`; the replica counts Serve
   reports are checked), the rest of the config as shipped. A few queries' served top-k is checked against
   the direct loop's, then each concurrency in `--concurrency` is loaded by **a separate load-generator
   process pinned to one CPU** (`os.sched_setaffinity`): that many threads, each with its own keep-alive
   HTTP session, post multipart `image` + `modality` + `k` bodies (pre-encoded, cycling through the same
   query JPEGs) back to back until `--requests` have been sent, after `--warmup` requests. It reports each
   answer's latency (`perf_counter` around the HTTP call), `timings_ms` and `Server-Timing`, and its own
   CPU time (so the table says what share of its core it took). Every non-200 answer or client exception
   is counted and shown.
3. direct again, to show how far the machine drifted over the run.

The report has the latency / throughput table, the goals (concurrency 1 vs direct; batching on vs off at
the highest concurrency), and a breakdown of where a request's time goes (the HTTP proxy's hop, the
ingress's body read and decode, the ingress -> encoder hop, batch wait, forward, search, JSON).

    .venv/bin/python benchmarks/serve_load.py                     # resnet18 at 128 px, 300 requests/point
    .venv/bin/python benchmarks/serve_load.py --quick --no-doc    # a smoke run in a few minutes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from report import append_section, markdown_table
from worlds import prepare_world

INDEX = "serve-bench"
EXPERIMENT = "serve-load"
BATCHING_ON = {"max_batch_size": 16, "batch_wait_timeout_s": 0.0}  # serve/config.yaml's
BATCHING_OFF = {"max_batch_size": 1, "batch_wait_timeout_s": 0.0}  # only the batch size changes
FIXED = {"num_replicas": 1, "autoscaling_config": None}
REQUEST_TIMEOUT_S = 120.0  # serve/config.yaml's http_options.request_timeout_s


@dataclass(frozen=True)
class World:
    corpus: str
    store: str
    encoder: str  # the saved encoder's folder
    fingerprint: str
    vectors: int
    index_key: str
    queries: list[bytes]  # the world's query JPEGs of the benchmark's modality
    seconds: float  # time to build all of it


@dataclass
class Point:
    """One measured configuration: a latency per request, and what each answer was."""

    mode: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)  # seconds, 200 answers only
    took_ms: list[float] = field(default_factory=list)  # the ingress's own `took_ms`, 200 answers only
    outcomes: Counter[str] = field(default_factory=Counter)  # "200", "503", "ReadTimeout", ...
    wall: float = 0.0
    load_avg: float = float("nan")  # the machine's 1-minute load average when the point ended
    timings: list[dict[str, float]] = field(default_factory=list)  # per 200 answer: timings_ms + json
    client_cpu_s: float = float("nan")  # CPU time the load generator process spent on this point

    @property
    def mean_batch(self) -> float | None:
        """The encoder batch each answered request was part of, averaged over requests."""
        sizes = [t["batch"] for t in self.timings if "batch" in t]
        return float(np.mean(sizes)) if sizes else None

    @property
    def encoder_busy(self) -> float | None:
        """The share of the point's wall time the encoder spent in forward passes (each request carries
        its batch's forward time and size, so a batch counts once)."""
        busy = sum(t["forward"] / t["batch"] for t in self.timings if "forward" in t and t.get("batch"))
        return busy / 1000 / self.wall if busy and self.wall > 0 else None

    def median(self, step: str) -> float:
        values = [t[step] for t in self.timings if step in t]
        return float(np.median(values)) if values else float("nan")

    @property
    def ok(self) -> int:
        return self.outcomes.get("200", 0)

    @property
    def rate(self) -> float:
        return self.ok / self.wall if self.wall > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")

    def errors(self) -> str:
        bad = {k: v for k, v in self.outcomes.items() if k != "200"}
        if not bad:
            return "0"
        return f"{sum(bad.values())} (" + ", ".join(f"{k} x{v}" for k, v in sorted(bad.items())) + ")"


# --- setup ----------------------------------------------------------------------------------------------


def environment(workdir: Path) -> None:
    """MLflow and the .gleam home go under the workdir; set before Ray starts so replicas inherit them."""
    os.environ.update(
        {
            "GLEAM_HOME": str(workdir / "home"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    for name in ("GLEAM_STORE", "GLEAM_ENCODER", "GLEAM_INDEX", "GLEAM_API_TOKEN"):
        os.environ.pop(name, None)


def build_world(args: argparse.Namespace, workdir: Path) -> World:
    """World -> prepared corpus -> random-init encoder -> published index, with library calls only."""
    import torch

    from gleam.config import load_config
    from gleam.corpus.reader import open_corpus
    from gleam.corpus.world import WorldConfig, generate_world
    from gleam.index.config import IndexBuildConfig
    from gleam.index.job import build_index
    from gleam.model import weights
    from gleam.model.encoder import GleamEncoder
    from gleam.model.spec import EncoderSpec

    started = time.perf_counter()
    size = args.size
    raw = workdir / "world"
    generate_world(
        WorldConfig(
            output=str(raw), locations=args.locations, modalities=[args.modality], tile_size=size,
            query_size=size, seed=11,
        )
    )  # fmt: skip
    corpus = prepare_world(
        raw,
        workdir / "prepared",
        size,
        "batch_size=32",
        "split.val_fraction=0.15",
        "split.test_fraction=0.15",
    )
    print(f"corpus ready: {corpus} ({time.perf_counter() - started:.0f} s)", flush=True)

    torch.manual_seed(0)
    spec = EncoderSpec.tiny(args.backbone, size=size, embed_dim=args.embed_dim)
    encoder = str(workdir / "encoder")
    info = weights.save(GleamEncoder(spec, load_pretrained=False), spec, encoder)

    store = str(workdir / "store")
    index_overrides = [
        f"name={INDEX}",
        f"corpus={corpus}",
        f"encoder={encoder}",
        f"store={store}",
        f"tracking.experiment={EXPERIMENT}",
        "embed.batch_size=16",
        "embed.num_cpus=0.5",
    ]
    built = build_index(load_config(IndexBuildConfig, None, index_overrides))
    print(f"index ready: {built.status} {built.version} ({time.perf_counter() - started:.0f} s)", flush=True)

    table = open_corpus(corpus).read("queries", ["query_id", "modality", "image"]).sort_by("query_id")
    queries = [r["image"] for r in table.to_pylist() if r["modality"] == args.modality]
    if not queries:
        raise SystemExit(f"the world has no {args.modality} queries")
    return World(
        corpus=corpus,
        store=store,
        encoder=encoder,
        fingerprint=info.fingerprint,
        vectors=vector_count(store),
        index_key=str(built.meta.get("index_key", "?")),
        queries=queries,
        seconds=time.perf_counter() - started,
    )


def vector_count(store: str) -> int:
    from gleam.index.catalog import open_index

    return len(open_index(store, INDEX))


# --- direct: the same work in one process ---------------------------------------------------------------


class Direct:
    """The service's per-request work, in this process: prepare, embed (batch of one), search.

    The same functions as the service: the ingress's `decode_checked` (checks, decode, orient, resize to a
    uint8 array), `embed_images` (the encoder's transform, forward and normalisation) and
    `OpenedIndex.search`; each step is timed, for the breakdown.
    """

    def __init__(self, world: World, modality: str, k: int, threads: int) -> None:
        import torch

        from gleam.index.catalog import open_index
        from gleam.model import weights

        torch.set_num_threads(threads)
        self.encoder, self.spec, _ = weights.load(world.encoder, expect_fingerprint=world.fingerprint)
        self.index = open_index(world.store, INDEX, expect_fingerprint=world.fingerprint)
        self.modality, self.k = modality, k
        self.size = self.spec.size(modality)
        self.steps: list[dict[str, float]] = []

    def localize(self, image: bytes) -> list[str]:
        from gleam.corpus.config import ImageLimits
        from gleam.model.embedding import embed_images
        from serve.requests import decode_checked

        t0 = time.perf_counter()
        pixels = decode_checked(image, self.size, ImageLimits())
        if not isinstance(pixels, np.ndarray):
            raise ValueError(f"query rejected: {pixels.reason} {pixels.detail}")
        t1 = time.perf_counter()
        vector = embed_images(self.encoder, self.spec, [pixels], self.modality)
        t2 = time.perf_counter()
        _, tiles = self.index.search(vector, self.k)
        t3 = time.perf_counter()
        self.steps.append(
            {"prepare": (t1 - t0) * 1000, "forward": (t2 - t1) * 1000, "search": (t3 - t2) * 1000}
        )
        return [t for t in tiles[0] if t is not None]

    def run(self, queries: list[bytes], requests: int, warmup: int, label: str) -> Point:
        for n in range(warmup):
            self.localize(queries[n % len(queries)])
        point = Point(label, 1)
        self.steps = []
        started = time.perf_counter()
        for n in range(requests):
            t0 = time.perf_counter()
            self.localize(queries[n % len(queries)])
            point.latencies.append(time.perf_counter() - t0)
            point.outcomes["200"] += 1
        point.wall = time.perf_counter() - started
        point.load_avg = os.getloadavg()[0]
        point.timings = self.steps
        return point

    def forward_per_image(self, queries: list[bytes], batch: int, repeats: int = 5) -> float:
        """Median ms per image of `embed_images` over ready arrays at batch size `batch` (this process's
        torch threads): what batching can gain in the forward alone."""
        from gleam.corpus.config import ImageLimits
        from gleam.model.embedding import embed_images
        from serve.requests import decode_checked

        arrays = [decode_checked(queries[n % len(queries)], self.size, ImageLimits()) for n in range(batch)]
        embed_images(self.encoder, self.spec, arrays, self.modality)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            embed_images(self.encoder, self.spec, arrays, self.modality)
            times.append((time.perf_counter() - t0) * 1000 / batch)
        return float(np.median(times))


# --- Serve ----------------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deployment_names() -> list[str]:
    from serve.run import load_config

    return [d["name"] for d in load_config()["applications"][0]["deployments"]]


def serve_config(world: World, batching: dict[str, float], k: int) -> dict[str, Any]:
    from serve.run import load_config

    args = {
        "encoder": world.encoder,
        "index": INDEX,
        "store": world.store,
        "default_k": k,
        "batching": batching,
    }
    return load_config(
        args=args, port=free_port(), deployments={name: dict(FIXED) for name in deployment_names()}
    )


def replica_counts() -> dict[str, str]:
    """What Serve says is running: {deployment: "1 RUNNING"}; also checks that autoscaling is off."""
    from ray import serve
    from ray.serve.context import _get_global_client

    app = serve.status().applications["gleam"]
    counts = {
        name: ", ".join(f"{n} {state}" for state, n in d.replica_states.items())
        for name, d in app.deployments.items()
    }
    details = _get_global_client().get_serve_details()
    for name, deployment in details["applications"]["gleam"]["deployments"].items():
        config = deployment["deployment_config"]
        if config.get("autoscaling_config") or config.get("num_replicas") != 1:
            raise RuntimeError(f"{name} is not fixed at one replica: {config}")
    return counts


def encoder_replica() -> str:
    """The id of the one QueryEncoder replica."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    replicas = details["applications"]["gleam"]["deployments"]["QueryEncoder"]["replicas"]
    return str(replicas[0]["replica_id"])


def multipart(image: bytes, modality: str, k: int) -> tuple[bytes, str]:
    """A pre-encoded multipart body (image file + modality + k) and its content type."""
    boundary = uuid.uuid4().hex
    while boundary.encode() in image:
        boundary = uuid.uuid4().hex
    crlf = b"\r\n"
    head = f"--{boundary}\r\n".encode()
    parts = [
        head
        + b'Content-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
        + b"Content-Type: image/jpeg\r\n\r\n"
        + image
        + crlf,
        head + b'Content-Disposition: form-data; name="modality"\r\n\r\n' + modality.encode() + crlf,
        head + b'Content-Disposition: form-data; name="k"\r\n\r\n' + str(k).encode() + crlf,
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def client_cpu() -> int:
    """The one CPU the load generator process is pinned to: the machine's last."""
    return max(os.sched_getaffinity(0))


def load(url: str, bodies_file: Path, concurrency: int, total: int, label: str) -> Point:
    """A separate load-generator process, pinned to one CPU (`client_cpu`), posts `total` requests from
    `concurrency` threads back to back; it reports each answer and its own CPU time."""
    import subprocess
    import sys

    spec = bodies_file.with_name(f"client-{uuid.uuid4().hex[:8]}.json")
    result = spec.with_suffix(".result.json")
    spec.write_text(
        json.dumps(
            {
                "url": url,
                "bodies": str(bodies_file),
                "concurrency": concurrency,
                "total": total,
                "cpu": client_cpu(),
                "out": str(result),
            }
        )
    )
    subprocess.run([sys.executable, __file__, "--client", str(spec)], check=True)
    answer = json.loads(result.read_text())
    point = Point(label, concurrency)
    point.latencies = answer["latencies"]
    point.took_ms = answer["took_ms"]
    point.timings = answer["timings"]
    point.outcomes = Counter(answer["outcomes"])
    point.wall = answer["wall"]
    point.client_cpu_s = answer["cpu_s"]
    return point


def server_timing(header: str) -> dict[str, float]:
    """`Server-Timing: parse;dur=1.2, json;dur=0.1` -> {"parse": 1.2, "json": 0.1}."""
    out = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";dur=")
        with contextlib.suppress(ValueError):
            out[name] = float(rest)
    return out


def client_main(spec_file: str) -> None:
    """The load generator's own process: pinned to one CPU, threads with keep-alive sessions."""
    import pickle
    import resource

    import requests

    spec = json.loads(Path(spec_file).read_text())
    os.sched_setaffinity(0, {spec["cpu"]})
    bodies = pickle.loads(Path(spec["bodies"]).read_bytes())
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    took: list[float] = []
    timings: list[dict[str, float]] = []
    lock = threading.Lock()
    counter = iter(range(spec["total"]))

    def worker() -> None:
        session = requests.Session()
        try:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                body, kind = bodies[n % len(bodies)]
                t0 = time.perf_counter()
                try:
                    response = session.post(
                        spec["url"], data=body, headers={"Content-Type": kind}, timeout=REQUEST_TIMEOUT_S
                    )
                    outcome, content = str(response.status_code), response.content
                    header = response.headers.get("Server-Timing", "")
                except requests.RequestException as exc:
                    outcome, content, header = type(exc).__name__, b"", ""
                elapsed = time.perf_counter() - t0
                answer = json.loads(content) if outcome == "200" else {}
                with lock:
                    outcomes[outcome] += 1
                    if outcome == "200":
                        latencies.append(elapsed)
                        if answer.get("took_ms") is not None:
                            took.append(float(answer["took_ms"]))
                        timings.append({**answer.get("timings_ms", {}), **server_timing(header)})
        finally:
            session.close()

    threads = [threading.Thread(target=worker, name=f"client-{i}") for i in range(spec["concurrency"])]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    result = {"latencies": latencies, "took_ms": took, "timings": timings, "outcomes": dict(outcomes)}
    Path(spec["out"]).write_text(json.dumps({**result, "wall": wall, "cpu_s": cpu}))


def check_answers(url: str, world: World, direct: Direct, modality: str, k: int, count: int) -> str:
    """The service's top-k tiles for a few queries next to the direct loop's: the same work, same answer?"""
    import requests

    same = 0
    checked = world.queries[:count]
    for image in checked:
        body, kind = multipart(image, modality, k)
        response = requests.post(url, data=body, headers={"Content-Type": kind}, timeout=REQUEST_TIMEOUT_S)
        response.raise_for_status()
        served = [c["tile_id"] for c in response.json()["candidates"]]
        same += served == direct.localize(image)
    return f"{same}/{len(checked)}"


def serve_mode(
    args: argparse.Namespace,
    world: World,
    direct: Direct,
    label: str,
    batching: dict[str, float],
    bodies_file: Path,
) -> tuple[list[Point], dict[str, Any]]:
    from ray import serve

    from serve.run import start

    started = time.perf_counter()
    base = start(serve_config(world, batching, args.k))
    url = f"{base}/v1/localize"
    info: dict[str, Any] = {"start_s": time.perf_counter() - started, "replicas": replica_counts()}
    print(
        f"{label}: running at {base} after {info['start_s']:.0f} s; replicas {info['replicas']}", flush=True
    )
    try:
        info["same_top_k"] = check_answers(url, world, direct, args.modality, args.k, args.check)
        warm = load(url, bodies_file, min(8, args.warmup), args.warmup, label)
        info["warmup_errors"] = warm.errors()
        points = []
        for concurrency in args.concurrency:
            point = load(url, bodies_file, concurrency, args.requests, label)
            point.load_avg = os.getloadavg()[0]
            print(f"  {describe(point)}", flush=True)
            points.append(point)
    finally:
        serve.shutdown()
    return points, info


# --- report ---------------------------------------------------------------------------------------------


def describe(point: Point) -> str:
    return (
        f"{point.mode} c={point.concurrency}: p50 {point.percentile(50):.1f} ms,"
        f" p95 {point.percentile(95):.1f}, p99 {point.percentile(99):.1f}, {point.rate:.1f} req/s,"
        f" errors {point.errors()}, load {point.load_avg:.1f}"
        + (f", mean batch {point.mean_batch:.2f}" if point.mean_batch else "")
        + (
            f", client CPU {client_share(point):.0%} of its core"
            if point.client_cpu_s == point.client_cpu_s
            else ""
        )
    )


def client_share(point: Point) -> float:
    return point.client_cpu_s / point.wall if point.wall > 0 else float("nan")


def rows(points: list[Point], baseline: float) -> list[list[object]]:
    out: list[list[object]] = []
    for p in points:
        took = f"{np.percentile(p.took_ms, 50):.1f}" if p.took_ms else "-"
        batch = f"{p.mean_batch:.2f}" if p.mean_batch else "-"
        share = f"{client_share(p):.0%}" if p.client_cpu_s == p.client_cpu_s else "-"
        busy = f"{p.encoder_busy:.0%}" if p.encoder_busy is not None else "-"
        out.append(
            [
                p.mode,
                p.concurrency,
                p.ok + sum(v for k, v in p.outcomes.items() if k != "200"),
                f"{p.percentile(50):.1f}",
                f"{p.percentile(95):.1f}",
                f"{p.percentile(99):.1f}",
                took,
                f"{p.rate:.1f}",
                p.errors(),
                f"{p.rate / baseline:.2f}" if baseline > 0 else "",
                batch,
                busy,
                share,
                f"{p.load_avg:.1f}",
            ]
        )
    return out


# (label, how a Serve point's step is computed from its medians, the direct loop's step or None)
STEPS: list[tuple[str, str]] = [
    ("client latency (p50)", "the whole request, measured by the load generator"),
    (
        "HTTP + proxy + client",
        "client latency - ingress total: the HTTP proxy's hop to the ingress, both ways",
    ),
    ("ingress: read body + multipart", "`parse`"),
    ("ingress: decode + preprocess", "`prepare`: checks, decode, resize to a uint8 array"),
    ("ingress <-> encoder hop", "`encoder_call` - `encoder`: the handle call's overhead, both ways"),
    ("encoder: batch wait", "`queue`: from reaching the replica to its batch starting"),
    ("encoder: forward", "`forward`: transform + forward of the batch"),
    ("encoder: search", "`search`: FAISS top-k (+ labels) of the batch"),
    ("encoder: rest", "`encoder` - queue - forward - search: the batcher's hand-back"),
    ("ingress: answer", "total - parse - prepare - encoder_call: labels, body"),
    ("JSON encode", "`json` (Server-Timing)"),
]


def breakdown(point: Point) -> list[float]:
    """Medians of each step of `STEPS` over a Serve point's answers."""
    m = point.median
    client = point.percentile(50)
    total = m("total")
    return [
        client,
        client - total,
        m("parse"),
        m("prepare"),
        m("encoder_call") - m("encoder"),
        m("queue"),
        m("forward"),
        m("search"),
        m("encoder") - m("queue") - m("forward") - m("search"),
        total - m("parse") - m("prepare") - m("encoder_call"),
        m("json"),
    ]


def breakdown_table(direct: Point, serve_points: list[Point]) -> str:
    d = direct.median
    direct_col = [direct.percentile(50), None, None, d("prepare"), None, None, d("forward"), d("search"),
                  None, None, None]  # fmt: skip
    columns = [breakdown(p) for p in serve_points]
    table = []
    for n, (label, how) in enumerate(STEPS):
        cells = [f"{c[n]:.2f}" for c in columns]
        direct_cell = "-" if direct_col[n] is None else f"{direct_col[n]:.2f}"
        table.append([label, direct_cell, *cells, how])
    header = ["step (median ms)", "direct", *(f"{p.mode}, c={p.concurrency}" for p in serve_points), "what"]
    return markdown_table(header, table)


def report(
    args: argparse.Namespace,
    world: World,
    direct: list[Point],
    served: dict[str, tuple[list[Point], dict[str, Any]]],
    forward: dict[int, float],
    seconds: float,
    load_avg: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    pooled = Point("direct", 1, [x for p in direct for x in p.latencies])
    pooled.outcomes["200"] = sum(p.ok for p in direct)
    pooled.wall = sum(p.wall for p in direct)
    pooled.timings = [t for p in direct for t in p.timings]
    baseline = pooled.rate
    points = [*direct, *(p for mode in served.values() for p in mode[0])]
    header = ["mode", "concurrency", "requests", "p50 ms", "p95 ms", "p99 ms", "ingress p50 ms", "req/s",
              "errors", "x direct", "mean batch", "encoder busy", "client CPU", "load avg"]  # fmt: skip

    def point(mode: str, concurrency: int) -> Point | None:
        return next((p for p in served.get(mode, ([], {}))[0] if p.concurrency == concurrency), None)

    goals = []
    for mode in ("batching off", "batching on"):
        one = point(mode, 1)
        if one is not None and one.latencies:
            ratio = one.percentile(50) / pooled.percentile(50)
            goals.append(
                f"- concurrency 1, {mode}: p50 {one.percentile(50):.1f} ms vs direct p50"
                f" {pooled.percentile(50):.1f} ms (both direct runs pooled) = **+"
                f"{one.percentile(50) - pooled.percentile(50):.1f} ms, x{ratio:.2f}** (goal <= x1.5:"
                f" {'met' if ratio <= 1.5 else 'not met'})"
            )
    top = max(args.concurrency)
    off, on = point("batching off", top), point("batching on", top)
    if off is not None and on is not None and off.rate > 0:
        ratio = on.rate / off.rate
        goals.append(
            f"- concurrency {top}: batching on {on.rate:.1f} req/s (p99 {on.percentile(99):.0f} ms) vs off"
            f" {off.rate:.1f} req/s (p99 {off.percentile(99):.0f} ms) = **x{ratio:.2f}** (goal >= x1.8:"
            f" {'met' if ratio >= 1.8 else 'not met'})"
        )
    for one in (point("batching off", 1), point("batching on", 1)):
        if one is not None and one.timings:
            steps = breakdown(one)
            hops = steps[1] + steps[2] + steps[4]  # HTTP + proxy, the body read, ingress <-> encoder
            goals.append(
                f"- floor at concurrency 1, {one.mode}: the three Ray round trips of a request (HTTP +"
                f" proxy {steps[1]:.1f} ms, the ingress's body read {steps[2]:.1f} ms, ingress <-> encoder"
                f" {steps[4]:.1f} ms) take {hops:.1f} ms, against the {0.5 * pooled.percentile(50):.1f} ms"
                " that x1.5 of the direct call leaves for everything that is not the work itself"
            )
    if off is not None and on is not None and forward and off.encoder_busy is not None:
        goals.append(
            f"- floor at concurrency {top}: with batching off the encoder's forward kept its core"
            f" {off.encoder_busy:.0%} busy (batching on: {on.encoder_busy or 0:.0%}, mean batch"
            f" {on.mean_batch or 0:.1f}), so requests/s is the forward's: batching can add at most what a"
            f" batch-{max(forward)} forward saves per image, x{forward[1] / forward[max(forward)]:.2f} here"
        )
    errors = sum(sum(v for k, v in p.outcomes.items() if k != "200") for p in points)
    goals.append(f"- errors over every point: {errors}")
    if forward:
        one_ms = forward[1]
        goals.append(
            "- the forward alone, in this process with "
            f"{args.threads} torch thread(s), ms per image: "
            + ", ".join(f"batch {b}: {ms:.2f}" for b, ms in sorted(forward.items()))
            + f" (batch {max(forward)} is x{one_ms / forward[max(forward)]:.2f} batch 1's throughput):"
            " the most batching can add when the encoder's core is the bottleneck"
        )
    notes = []
    for mode, (_, info) in served.items():
        replicas = "; ".join(f"{k}: {v}" for k, v in info["replicas"].items())
        notes.append(
            f"- {mode}: application RUNNING {info['start_s']:.0f} s after `start`; replicas ({replicas});"
            f" top-{args.k} tiles identical to the direct loop's for {info['same_top_k']} queries;"
            f" warm-up ({args.warmup} requests) errors: {info['warmup_errors']}"
        )
    ones = [p for p in (point("batching off", 1), point("batching on", 1)) if p is not None]
    loaded = [p for p in (point("batching off", top), point("batching on", top)) if p is not None and top > 1]
    text = (
        f"`POST /v1/localize` (multipart: one {args.modality} JPEG of {args.size} px, `modality`,"
        f" `k={args.k}`) against the Serve application started from serve/config.yaml, next to the same"
        f" work in one process. Encoder: `{args.backbone}` with **random weights** (`EncoderSpec.tiny`,"
        f" {args.size} px input, {args.embed_dim}-d projection), fp32 on CPU; index: {world.vectors:,}"
        f" tiles of a synthetic world ({args.locations} places), `{world.index_key}` built by the index"
        f" build job. Local Ray with {args.ray_cpus} CPUs; every deployment fixed at **1 replica**"
        " (autoscaling off), CPU shares as shipped (QueryEncoder 0.25 CPU, so 1 torch thread; Ingress,"
        " SatelliteIndex, Explainer 0.1 each), `colocated_search: true` as shipped (the encoder replica"
        " searches its batches itself: one hop past the ingress). The direct loop runs in the benchmark"
        f" process with {args.threads} torch thread(s) and does the service's work with the service's"
        " functions, sequentially: `decode_checked` (the ingress's checks, decode and resize to a uint8"
        " array), `embed_images` (transform, forward under `inference_mode`, normalisation),"
        " `OpenedIndex.search`; it ran before and after the Serve runs (drift check; `x direct` divides by"
        " both runs pooled). **The load generator is a separate process pinned to one CPU** (CPU"
        f" {client_cpu()} of 0-{(os.cpu_count() or 1) - 1}, `os.sched_setaffinity`; threads with"
        " keep-alive sessions posting pre-encoded bodies); `client CPU` is the CPU time it used over the"
        " point's wall time, i.e. the share of that core it took from the service. The machine was"
        f" shared with other work (load average {load_avg[0][0]:.1f} at the start, {load_avg[1][0]:.1f}"
        " at the end). Latencies are client-side (`perf_counter` around each HTTP call) over the 200"
        " answers; `ingress p50 ms` is the ingress's own `took_ms`; req/s: 200 answers over the wall time"
        f" of the point. Batching on: `max_batch_size={BATCHING_ON['max_batch_size']},"
        f" batch_wait_timeout_s={BATCHING_ON['batch_wait_timeout_s']}` (as shipped); off:"
        f" `max_batch_size=1`. {args.requests} requests per point after {args.warmup} warm-up requests"
        " per deployment. `mean batch`: the size of the encoder batch each request was answered in"
        " (`timings_ms.batch`), averaged over requests; `encoder busy`: the share of the point's wall time"
        " the encoder spent in forward passes (1 torch thread: the share of one core). Setup (world,"
        " corpus, encoder, index) took"
        f" {world.seconds:.0f} s, not counted; the whole run {seconds / 60:.1f} min."
    )
    parts = [text, markdown_table(header, rows(points, baseline)), "\n".join(goals)]
    if ones:
        parts.append(
            "Where the time of one request goes, at concurrency 1 and under load: the median of each"
            " step over the point's answers, from the `timings_ms` every answer carries and its"
            " `Server-Timing` header (medians of the parts need not add up to the median of the whole;"
            " `forward` is the whole batch's)."
        )
        parts.append(breakdown_table(pooled, ones + loaded))
    parts.append("\n".join(notes))
    return "\n\n".join(parts) + "\n"


# --- main -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def workspace(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path).resolve()
        return
    folder = Path(tempfile.mkdtemp(prefix="gleam-bench-serve-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18", help="timm backbone (random weights)")
    parser.add_argument("--size", type=int, default=128, help="encoder input side = tile and query size (px)")
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--locations", type=int, default=200, help="places of the world = tiles in the index")
    parser.add_argument("--modality", default="drone", choices=["drone", "streetmap", "ground", "panorama"])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--concurrency", default="1,8,32", help="client threads per point, comma-separated")
    parser.add_argument("--requests", type=int, default=300, help="measured requests per point")
    parser.add_argument(
        "--warmup", type=int, default=20, help="unmeasured requests per deployment / direct run"
    )
    parser.add_argument("--check", type=int, default=5, help="queries whose served top-k is compared")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the direct loop")
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--workdir", default=None, help="where the world, index and MLflow go (default: temp)"
    )
    parser.add_argument("--no-doc", action="store_true", help="print only; do not touch docs/")
    parser.add_argument("--client", default=None, help=argparse.SUPPRESS)  # the load generator's process
    args = parser.parse_args()
    if args.client:
        client_main(args.client)
        return
    if args.quick:
        args.locations, args.size, args.requests, args.warmup = 40, 64, 48, 8
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]

    started = time.perf_counter()
    load_start = os.getloadavg()
    with workspace(args.workdir) as workdir:
        environment(workdir)
        import pickle

        import ray

        from gleam.cluster import init_ray

        init_ray(num_cpus=args.ray_cpus)
        try:
            world = build_world(args, workdir)
            bodies_file = workdir / "bodies.pickle"
            bodies_file.write_bytes(
                pickle.dumps([multipart(q, args.modality, args.k) for q in world.queries])
            )
            direct = Direct(world, args.modality, args.k, args.threads)
            before = direct.run(world.queries, args.requests, args.warmup, "direct (before)")
            print(describe(before), flush=True)
            forward = {
                b: direct.forward_per_image(world.queries, b) for b in (1, BATCHING_ON["max_batch_size"])
            }
            print(f"forward ms per image: {forward}", flush=True)
            served = {}
            for label, batching in (("batching off", BATCHING_OFF), ("batching on", BATCHING_ON)):
                served[label] = serve_mode(args, world, direct, label, batching, bodies_file)
            after = direct.run(world.queries, args.requests, args.warmup, "direct (after)")
            print(describe(after), flush=True)
        finally:
            ray.shutdown()
    body = report(
        args,
        world,
        [before, after],
        served,
        forward,
        time.perf_counter() - started,
        (load_start, os.getloadavg()),
    )
    print(body)
    if not args.no_doc:
        append_section(
            "Serving under load: /v1/localize, batching on and off, vs one process, step by step", body
        )


if __name__ == "__main__":
    main()
