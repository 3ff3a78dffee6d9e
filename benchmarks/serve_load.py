"""Serving under load: latency and requests/s of `POST /v1/localize`, batching on and off, vs one process.

Setup (not timed): a local Ray cluster (`--ray-cpus`), a synthetic world (`--locations` places, tiles
and `--modality` queries rendered at the encoder's input size) prepared into a corpus, an encoder with
random weights (`EncoderSpec.tiny(--backbone, size=--size, embed_dim=--embed-dim)`, saved as a folder)
and its index, built and published by the index build job (`gleam.index.job.build_index`) over every
tile. Everything is written under a temporary workdir (or `--workdir`), MLflow included.

Measured, in this order, in one run:

1. direct: one process (this one) does per request what the service does, sequentially: `process_image`
   to the encoder's input size, `eval_batch`, the encoder's forward under `torch.inference_mode` with
   `--threads` torch threads (1, as the QueryEncoder replica gets with its 0.25 CPU), and
   `OpenedIndex.search(vector, k)`. Requests cycle through the world's real query JPEGs.
2. Serve, batching off (`max_batch_size=1`) then on (`max_batch_size=16, batch_wait_timeout_s=0.005`,
   the shipped config): the application is started from serve/config.yaml through `serve.run.start`
   with every deployment fixed at one replica (`num_replicas: 1, autoscaling_config: null`; the replica
   counts Serve reports are checked), the rest of the config as shipped. Each deployment is warmed up
   (`--warmup` requests at concurrency 8), then loaded at each concurrency in `--concurrency`: that many
   client threads, each with its own keep-alive HTTP session, post multipart `image` + `modality` + `k`
   bodies (pre-encoded, cycling through the same query JPEGs) back to back until `--requests` requests
   have been sent. Latency: `perf_counter` around each HTTP call (connect, upload, service, response);
   requests/s: successful requests over the wall time from the first send to the last answer. Every
   non-200 answer or client exception is counted and shown. Also per point: the ingress's own `took_ms`
   (median), the mean batch size the encoder actually ran (the point's requests over the `embed` batches
   counted by Serve's `serve_actual_batch_size` metric) and the machine's load average. The application
   is shut down between modes; before loading it, a few queries' served top-k is checked against the
   direct loop's.
3. direct again, to show how far the machine drifted over the run.

The load generator runs on the same machine as the service and competes with it for CPU.

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
BATCHING_ON = {"max_batch_size": 16, "batch_wait_timeout_s": 0.005}
BATCHING_OFF = {"max_batch_size": 1, "batch_wait_timeout_s": 0.005}  # only the batch size changes
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
    batches: float | None = None  # `embed` batches Serve's batcher ran for this point (None: unknown)

    @property
    def mean_batch(self) -> float | None:
        return self.ok / self.batches if self.batches else None

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
    """The service's per-request work, in this process: prepare, embed (batch of one), search."""

    def __init__(self, world: World, modality: str, k: int, threads: int) -> None:
        import torch

        from gleam.index.catalog import open_index
        from gleam.model import weights

        torch.set_num_threads(threads)
        self.encoder, self.spec, _ = weights.load(world.encoder, expect_fingerprint=world.fingerprint)
        self.index = open_index(world.store, INDEX, expect_fingerprint=world.fingerprint)
        self.modality, self.k = modality, k
        self.size = self.spec.size(modality)

    def localize(self, image: bytes) -> list[str]:
        import torch

        from gleam.corpus.config import ImageLimits
        from gleam.corpus.images import process_image
        from gleam.model.transforms import eval_batch

        prepared = process_image(image, self.size, ImageLimits())
        if not prepared.ok:
            raise ValueError(f"query rejected: {prepared.reason} {prepared.detail}")
        batch = eval_batch([prepared.image], self.modality, self.spec)
        with torch.inference_mode():
            vector = self.encoder(batch).float().numpy()
        _, tiles = self.index.search(vector, self.k)
        return [t for t in tiles[0] if t is not None]

    def run(self, queries: list[bytes], requests: int, warmup: int, label: str) -> Point:
        for n in range(warmup):
            self.localize(queries[n % len(queries)])
        point = Point(label, 1)
        started = time.perf_counter()
        for n in range(requests):
            t0 = time.perf_counter()
            self.localize(queries[n % len(queries)])
            point.latencies.append(time.perf_counter() - t0)
            point.outcomes["200"] += 1
        point.wall = time.perf_counter() - started
        point.load_avg = os.getloadavg()[0]
        return point


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


def load(url: str, bodies: list[tuple[bytes, str]], concurrency: int, total: int, label: str) -> Point:
    """`concurrency` threads post back to back until `total` requests have been sent."""
    import requests

    point = Point(label, concurrency)
    lock = threading.Lock()
    counter = iter(range(total))

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
                        url, data=body, headers={"Content-Type": kind}, timeout=REQUEST_TIMEOUT_S
                    )
                    outcome = str(response.status_code)
                    content = response.content
                except requests.RequestException as exc:
                    outcome, content = type(exc).__name__, b""
                elapsed = time.perf_counter() - t0
                took = json.loads(content).get("took_ms") if outcome == "200" else None
                with lock:
                    point.outcomes[outcome] += 1
                    if outcome == "200":
                        point.latencies.append(elapsed)
                        if took is not None:
                            point.took_ms.append(float(took))
        finally:
            session.close()

    threads = [threading.Thread(target=worker, name=f"client-{i}") for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    point.wall = time.perf_counter() - started
    return point


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


class BatchMeter:
    """How many `embed` batches the QueryEncoder replica ran: the count of Serve's own
    `serve_actual_batch_size` histogram, read from this node's Prometheus endpoint.

    Every request of a point is one `embed` call, so requests / batches is the mean batch size. (The
    histogram's sum is not used: Ray rebuilds it from bucket midpoints.) Replicas push their metrics
    every few seconds, so a reading waits until the count has stopped moving for `SETTLE_S`.
    """

    NAME = "ray_serve_actual_batch_size_count"
    SETTLE_S = 12.0  # longer than Ray's metrics report interval (10 s)

    def __init__(self) -> None:
        import ray

        try:
            port = ray._private.worker.global_worker.node.metrics_export_port
            self.url: str | None = f"http://127.0.0.1:{port}/metrics"
            self.read("QueryEncoder")
        except Exception as exc:  # batch sizes are optional: the table shows "-"
            print(f"batch metrics unavailable: {exc}", flush=True)
            self.url = None

    def read(self, replica: str) -> float:
        """The batch count of one QueryEncoder replica (its id appears in the series' labels)."""
        import urllib.request

        assert self.url is not None
        text = urllib.request.urlopen(self.url, timeout=10).read().decode()
        total = 0.0
        for line in text.splitlines():
            name, _, rest = line.partition("{")
            if name == self.NAME and 'function_name="embed"' in rest and f'"{replica}"' in rest:
                total += float(rest.rsplit(" ", 1)[1])
        return total

    def settled(self, replica: str, above: float, timeout_s: float = 60.0) -> float | None:
        """The count once it is past `above` and has not moved for SETTLE_S (None: not in time)."""
        if self.url is None:
            return None
        deadline = time.monotonic() + timeout_s
        last, since = self.read(replica), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = self.read(replica)
            if now != last:
                last, since = now, time.monotonic()
            elif now > above and time.monotonic() - since >= self.SETTLE_S:
                return now
        print(f"batch metrics of {replica} did not settle in {timeout_s:.0f} s (last {last:.0f})", flush=True)
        return None


def serve_mode(
    args: argparse.Namespace,
    world: World,
    direct: Direct,
    label: str,
    batching: dict[str, float],
    meter: BatchMeter,
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
        bodies = [multipart(image, args.modality, args.k) for image in world.queries]
        warm = load(url, bodies, min(8, args.warmup), args.warmup, label)
        info["warmup_errors"] = warm.errors()
        replica = encoder_replica()
        reading = meter.settled(replica, 0.0)
        points = []
        for concurrency in args.concurrency:
            point = load(url, bodies, concurrency, args.requests, label)
            point.load_avg = os.getloadavg()[0]
            after = meter.settled(replica, reading) if reading is not None else None
            point.batches = after - reading if after is not None and reading is not None else None
            reading = after
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
        + (f", {point.mean_batch:.2f} requests per batch" if point.mean_batch else "")
    )


def rows(points: list[Point], baseline: float) -> list[list[object]]:
    out: list[list[object]] = []
    for p in points:
        took = f"{np.percentile(p.took_ms, 50):.1f}" if p.took_ms else "-"
        batch = f"{p.mean_batch:.2f}" if p.mean_batch else "-"
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
                f"{p.load_avg:.1f}",
            ]
        )
    return out


def report(
    args: argparse.Namespace,
    world: World,
    direct: list[Point],
    served: dict[str, tuple[list[Point], dict[str, Any]]],
    seconds: float,
    load_avg: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    pooled = Point("direct", 1, [x for p in direct for x in p.latencies])
    pooled.outcomes["200"] = sum(p.ok for p in direct)
    pooled.wall = sum(p.wall for p in direct)
    baseline = pooled.rate
    points = [*direct, *(p for mode in served.values() for p in mode[0])]
    header = ["mode", "concurrency", "requests", "p50 ms", "p95 ms", "p99 ms", "ingress p50 ms", "req/s",
              "errors", "x direct", "mean batch", "load avg"]  # fmt: skip
    off = next((p for p in served.get("batching off", ([], {}))[0] if p.concurrency == 1), None)
    overhead = ""
    if off is not None and off.latencies:
        delta = off.percentile(50) - pooled.percentile(50)
        overhead = (
            f"Overhead of the service at concurrency 1, batching off: p50 {off.percentile(50):.1f} ms vs"
            f" direct p50 {pooled.percentile(50):.1f} ms (both direct runs pooled) = **+{delta:.1f} ms"
            f" per request, x{off.percentile(50) / pooled.percentile(50):.2f}**."
        )
    notes = []
    for mode, (_, info) in served.items():
        replicas = "; ".join(f"{k}: {v}" for k, v in info["replicas"].items())
        notes.append(
            f"- {mode}: application RUNNING {info['start_s']:.0f} s after `start`; replicas ({replicas});"
            f" top-{args.k} tiles identical to the direct loop's for {info['same_top_k']} queries;"
            f" warm-up ({args.warmup} requests) errors: {info['warmup_errors']}"
        )
    ray_cpus = args.ray_cpus
    text = (
        f"`POST /v1/localize` (multipart: one {args.modality} JPEG of {args.size} px, `modality`,"
        f" `k={args.k}`) against the Serve application started from serve/config.yaml, next to the same"
        f" work in one process. Encoder: `{args.backbone}` with **random weights** (`EncoderSpec.tiny`,"
        f" {args.size} px input, {args.embed_dim}-d projection), fp32 on CPU; index: {world.vectors:,}"
        f" tiles of a synthetic world ({args.locations} places), `{world.index_key}` built by the index"
        f" build job. Local Ray with {ray_cpus} CPUs; every deployment fixed at **1 replica** (autoscaling"
        " off), CPU shares as shipped (QueryEncoder 0.25 CPU, so 1 torch thread; Ingress, SatelliteIndex,"
        f" Explainer 0.1 each). The direct loop runs in the benchmark process with {args.threads} torch"
        " thread(s): `process_image`, `eval_batch`, forward under `inference_mode`, `OpenedIndex.search`,"
        " sequentially; it ran before and after the Serve runs (drift check; `x direct` divides by both"
        " runs pooled). **The load generator runs on the same machine as the service** (threads with"
        " keep-alive sessions, pre-encoded bodies) and competes with it for the CPUs, and the machine was"
        f" shared with other work (load average {load_avg[0][0]:.1f} at the start, {load_avg[1][0]:.1f} at"
        " the end). Latencies are client-side (`perf_counter` around each HTTP call) over the 200 answers;"
        " `ingress p50 ms` is the ingress's own `took_ms` (from the request reaching the FastAPI route to"
        " the answer; the rest is the proxy, HTTP and the client); req/s: 200 answers over the wall time of"
        f" the point. Batching on: `max_batch_size={BATCHING_ON['max_batch_size']},"
        f" batch_wait_timeout_s={BATCHING_ON['batch_wait_timeout_s']}` (as shipped); off: `max_batch_size=1`."
        f" {args.requests} requests per point after {args.warmup} warm-up requests per deployment."
        " `mean batch`: the point's requests over the `embed` batches the encoder ran for them (the count of"
        " Serve's own `serve_actual_batch_size` histogram, read from Ray's metrics endpoint); `load avg`:"
        " the machine's 1-minute load average as the point ended. Setup (world, corpus, encoder, index)"
        f" took {world.seconds:.0f} s, not counted; the whole run {seconds / 60:.1f} min."
    )
    parts = [text, markdown_table(header, rows(points, baseline))]
    if overhead:
        parts.append(overhead)
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
    args = parser.parse_args()
    if args.quick:
        args.locations, args.size, args.requests, args.warmup = 40, 64, 48, 8
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]

    started = time.perf_counter()
    load_start = os.getloadavg()
    with workspace(args.workdir) as workdir:
        environment(workdir)
        import ray

        from gleam.cluster import init_ray

        init_ray(num_cpus=args.ray_cpus)
        try:
            world = build_world(args, workdir)
            direct = Direct(world, args.modality, args.k, args.threads)
            before = direct.run(world.queries, args.requests, args.warmup, "direct (before)")
            print(describe(before), flush=True)
            meter = BatchMeter()
            served = {}
            for label, batching in (("batching off", BATCHING_OFF), ("batching on", BATCHING_ON)):
                served[label] = serve_mode(args, world, direct, label, batching, meter)
            after = direct.run(world.queries, args.requests, args.warmup, "direct (after)")
            print(describe(after), flush=True)
        finally:
            ray.shutdown()
    body = report(
        args, world, [before, after], served, time.perf_counter() - started, (load_start, os.getloadavg())
    )
    if args.no_doc:
        print(body)
    else:
        append_section("Serving under load: /v1/localize, batching on and off, vs one process", body)


if __name__ == "__main__":
    main()
