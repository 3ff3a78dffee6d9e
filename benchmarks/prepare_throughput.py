"""Images/s of the Ray Data `prepare` pipeline vs a plain single-process loop, side by side, with the
time of each stage and an ablation of the pipeline's knobs in the same run.

Both do the same work per image (read bytes from the store, decode, validate, resize, encode JPEG via
`gleam.corpus.images.process_image`) on the same images in the same run. The Ray rows are whole
`prepare` calls (listing, the one Dataset execution that decodes and writes routed work files, the
resolution on the driver, publishing, manifest), split into those stages from the manifest's `seconds`.
Each Ray group starts its own local cluster (not timed): the group's first prepare is `cold` (fresh
worker processes, Ray Data not yet imported in this process: what a `gleam prepare` command pays), the
later ones `warm`. Ablation rows switch one knob back to how prepare ran before (small batches, a
compressed image column, no worker warm-up) or leave Ray's worker niceness at its default of 15.

    .venv/bin/python benchmarks/prepare_throughput.py [--locations 300] [--workers 2] [--raw DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from report import append_section, markdown_table

from gleam import storage
from gleam.cluster import init_ray
from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.corpus.images import process_image
from gleam.corpus.listing import build_listing
from gleam.corpus.prepare import prepare
from gleam.corpus.world import WorldConfig, generate_world

STAGES = ("listing", "decode", "resolve", "write")
CPU_KINDS = ("driver", "workers", "ray system", "other")
RAY_DEFAULT_NICENESS = 15  # raylet's worker_niceness: Ray workers yield the CPU to everything else


@dataclass(frozen=True)
class Row:
    label: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    """Rows run in order on one fresh local cluster; the first is cold."""

    niceness: int
    rows: tuple[Row, ...] = field(default_factory=tuple)


def enlarge_originals(raw: Path, side: int) -> int:
    """Re-save every world image with its short side at `side` px: real corpora arrive larger than the
    prepared size (University-1652 drone 512 px, VIGOR panoramas 2048x1024), and resizing them is the
    work being measured. Without this the loop only re-encodes images already at the target size."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    files = [p for p in raw.rglob("*") if p.suffix in {".jpg", ".png"}]

    def enlarge(path: Path) -> None:
        with Image.open(path) as image:
            scale = side / min(image.size)
            big = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)))
        big.save(path, format="PNG" if path.suffix == ".png" else "JPEG", quality=92)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(enlarge, files))
    return len(files)


def raw_world(raw: Path, locations: int, side: int) -> None:
    """Generate the raw world once; a `--raw` folder from an earlier run with the same settings is reused
    (the marker names them), which keeps repeated runs short."""
    marker = raw / f".bench-{locations}-{side}"
    if marker.exists():
        return
    generate_world(WorldConfig(output=str(raw), locations=locations, seed=3))
    enlarge_originals(raw, side)
    marker.write_text("complete\n")


def plain_loop(config: PrepareConfig, threads: int = 1) -> tuple[int, float]:
    """The same per-image work without Ray; threads > 1 shows what the cores give at best (PIL
    releases the GIL while decoding, resizing and encoding)."""
    from concurrent.futures import ThreadPoolExecutor

    listing, _ = build_listing(config)
    rows = [r for r in listing.to_pylist() if r["reason"] is None]
    sizes = {m.value: size for m, size in config.sizes.items()}

    def work(row: dict) -> None:
        process_image(storage.read_bytes(row["source_uri"]), sizes[row["modality"]], config.limits)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, rows))
    return len(rows), time.perf_counter() - start


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """{pid: (kind, CPU seconds so far)} from Linux /proc: this driver, the worker processes and the
    services (raylet, GCS, agents) of the Ray cluster it started (its descendants), and every other
    process visible on the machine (other users' Ray workers included)."""
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, float, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        procs[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, command)
    ours = {os.getpid()}
    for _ in range(8):  # driver -> raylet -> workers, a few levels
        ours |= {pid for pid, (ppid, _, _) in procs.items() if ppid in ours}
    return {pid: (_kind(pid, command, pid in ours), cpu) for pid, (_, cpu, command) in procs.items()}


def cpu_used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per kind between two snapshots; a process that ended in between is not counted."""
    used = dict.fromkeys(CPU_KINDS, 0.0)
    for pid, (kind, cpu) in after.items():
        used[kind] += cpu - before.get(pid, (kind, 0.0))[1]
    return used


def _kind(pid: int, command: str, ours: bool) -> str:
    if pid == os.getpid():
        return "driver"
    if not ours:
        return "other"
    return "workers" if command.startswith("ray::") and "Agent" not in command else "ray system"


def start_cluster(cpus: int, niceness: int) -> float:
    """A fresh local cluster whose workers run at `niceness` (read by the raylet from the environment)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    os.environ["RAY_worker_niceness"] = str(niceness)  # noqa: SIM112  # Ray's own spelling
    start = time.perf_counter()
    init_ray(num_cpus=cpus)
    return time.perf_counter() - start


def groups(workers: int, ablation: bool) -> list[Group]:
    default = Row("Ray prepare")
    if not ablation:
        return [Group(0, (default, default))]
    return [
        Group(RAY_DEFAULT_NICENESS, (default, default)),
        Group(
            0,
            (
                default,
                default,
                Row("Ray prepare, 32 images per batch (as before)", ("batch_size=32",)),
                Row("Ray prepare, image column zstd (as before)", ("image_codec=zstd",)),
            ),
        ),
        Group(0, (Row("Ray prepare, no worker warm-up", ("warm_workers=false",)),)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locations", type=int, default=300, help="world places (5 images each + tile)")
    parser.add_argument("--workers", type=int, default=2, help="decode tasks in parallel (= CPUs given Ray)")
    parser.add_argument("--source-side", type=int, default=1024, help="short side of the raw images (px)")
    parser.add_argument("--raw", type=Path, help="folder for the raw world, reused when already there")
    parser.add_argument("--no-ablation", action="store_true", help="only the default pipeline, cold and warm")
    parser.add_argument("--no-save", action="store_true", help="print only; do not touch docs/")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gleam-bench-prepare-"))
    os.environ.setdefault("GLEAM_HOME", str(workdir / "home"))
    raw = args.raw or workdir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    raw_world(raw, args.locations, args.source_side)
    runs = {"n": 0}

    def config(*overrides: str) -> PrepareConfig:
        runs["n"] += 1
        return load_config(
            PrepareConfig,
            None,
            [
                f"name=run{runs['n']}",
                f"output={workdir / 'out'}",
                "sources.0.kind=world",
                f"sources.0.uri={raw}",
                f"concurrency={args.workers}",
                "tracking.enabled=false",
                *overrides,
            ],
        )

    cpu_header = [f"CPU s {kind}" for kind in CPU_KINDS]
    load_before = os.getloadavg()[0]
    header = ["pipeline", "workers", "niceness", "images", "seconds", "images/s", "x loop", *STAGES, "rest"]
    header += [*cpu_header, "floor s", "floor x loop"]
    loops: list[tuple[str, int, int, float, dict[str, float]]] = []  # label, threads, images, s, CPU

    def timed_loop(label: str, threads: int) -> None:
        before = cpu_seconds()
        images, seconds = plain_loop(config(), threads=threads)
        loops.append((label, threads, images, seconds, cpu_used(before, cpu_seconds())))
        print(label, f"{seconds:.1f} s", flush=True)

    timed_loop("plain loop, one thread (before)", 1)
    timed_loop(f"plain loop, {args.workers} threads (the cores' ceiling)", args.workers)
    ray_rows: list[tuple[str, int, int, float, dict[str, float], dict[str, float]]] = []
    startups = []
    for group in groups(args.workers, not args.no_ablation):
        startups.append(start_cluster(args.workers, group.niceness))
        for n, row in enumerate(group.rows):
            start, cpu_before = time.perf_counter(), cpu_seconds()
            manifest = prepare(config(*row.overrides)).manifest
            seconds, cpu_after = time.perf_counter() - start, cpu_seconds()
            used = cpu_used(cpu_before, cpu_after)
            label = f"{row.label}, {'warm' if n else 'cold'}"
            listed, stage = manifest["counts"]["listed"], manifest["seconds"]
            ray_rows.append((label, group.niceness, listed, seconds, stage, used))
            print(label, f"{seconds:.1f} s", stage, used, flush=True)
    timed_loop("plain loop, one thread (after)", 1)

    singles = [seconds for label, threads, _, seconds, _ in loops if threads == 1]
    loop_seconds = sum(singles) / len(singles)  # the one-thread loop before and after, pooled
    blank = [""] * (len(STAGES) + 1)
    rows = []
    for label, threads, images, seconds, used in loops:
        cpu = [f"{used[k]:.1f}" for k in CPU_KINDS]
        cells = [label, threads, 0, images, f"{seconds:.1f}", f"{images / seconds:.1f}"]
        rows.append([*cells, f"{loop_seconds / seconds:.2f}", *blank, *cpu, "", ""])
    for label, niceness, listed, seconds, stage, used in ray_rows:
        floor = (used["driver"] + used["workers"] + used["ray system"]) / args.workers
        cpu = [*(f"{used[k]:.1f}" for k in CPU_KINDS), f"{floor:.1f}", f"{loop_seconds / floor:.2f}"]
        other = seconds - sum(stage[s] for s in STAGES)
        cells = [label, args.workers, niceness, listed, f"{seconds:.1f}", f"{listed / seconds:.1f}"]
        stages = [f"{stage[s]:.2f}" for s in STAGES]
        rows.append([*cells, f"{loop_seconds / seconds:.2f}", *stages, f"{other:.2f}", *cpu])

    table = markdown_table(header, rows)
    body = (
        f"Synthetic world, {args.locations} places, raw images enlarged to a {args.source_side} px short "
        "side (panoramas 2:1), prepared to the default sizes (384x384; panoramas 768x384), read from and "
        f"written to a local store; local Ray with {args.workers} CPUs, concurrency {args.workers}. Ray rows "
        "are whole `prepare` calls, end to end; each group of rows runs on its own fresh cluster (started "
        f"in {', '.join(f'{s:.1f}' for s in startups)} s, not counted): `cold` is the group's first "
        "prepare (fresh worker processes, Ray Data's first execution in the process), `warm` the next. "
        "Stage columns are the manifest's seconds: listing; decode = the one Dataset execution (read, "
        "decode, resize, encode, route, write work files); resolve (driver); write = publish (moves, "
        "rewrites of blocks the resolution touched, empty parts); rest = the rest of the call (config "
        "hash, clean-up, tracking, manifest). CPU s: CPU seconds used during the call by this driver "
        "process, the worker processes and the own services (raylet, GCS, agents) of its Ray cluster, and "
        "every other process visible on the machine (from /proc, processes that ended during the call "
        "not counted; the call could use at most "
        f"{args.workers} x its seconds; the loops' rows count the loop as the driver); x loop: against the "
        "one-thread loop's seconds, its runs before and after pooled (the machine drifts); floor s: the "
        "call's own CPU (driver, workers, services) spread "
        "perfectly over the cores, the wall time it could not beat, and floor x loop the ratio that gives. "
        "niceness: of the "
        f"decode workers (Ray's default is 15; the loops run at 0). Load average (1 min) {load_before:.1f} "
        f"at the start, {os.getloadavg()[0]:.1f} at the end.\n\n{table}\n"
    )
    if args.no_save:
        print(body)
    else:
        append_section("prepare throughput: Ray Data vs a single-process loop, stages and ablation", body)


if __name__ == "__main__":
    main()
