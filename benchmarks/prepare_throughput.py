"""Images/s of the Ray Data `prepare` pipeline vs a plain single-process loop, side by side.

Both do the same work per image (read bytes from the store, decode, validate, resize, encode JPEG via
`gleam.corpus.images.process_image`) on the same images in the same run. The Ray figures are given twice:
the decode stage alone (comparable to the loop) and end to end (listing, decode, resolve, routing to
Parquet, manifest). Ray's start-up is excluded: a cluster is started once before timing.

    .venv/bin/python benchmarks/prepare_throughput.py [--locations 420] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
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


def ray_pipeline(config: PrepareConfig) -> tuple[int, float, float]:
    start = time.perf_counter()
    manifest = prepare(config).manifest
    return manifest["counts"]["listed"], manifest["seconds"]["decode"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locations", type=int, default=420, help="world places (5 images each + tile)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--source-side", type=int, default=1024, help="short side of the raw images (px)")
    parser.add_argument("--no-save", action="store_true", help="print only; do not touch docs/")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gleam-bench-prepare-"))
    os.environ.setdefault("GLEAM_HOME", str(workdir / "home"))
    raw = str(workdir / "raw")
    generate_world(WorldConfig(output=raw, locations=args.locations, seed=3))
    enlarge_originals(Path(raw), args.source_side)
    init_ray(num_cpus=max(args.workers))

    def config(name: str, workers: int) -> PrepareConfig:
        return load_config(
            PrepareConfig,
            None,
            [
                f"name={name}",
                f"output={workdir / 'out'}",
                "sources.0.kind=world",
                f"sources.0.uri={raw}",
                f"concurrency={workers}",
                "tracking.enabled=false",
            ],
        )

    images, loop_seconds = plain_loop(config("loop", 1))
    loop_rate = images / loop_seconds
    rows = [["plain loop, one thread", 1, images, f"{loop_seconds:.1f}", f"{loop_rate:.1f}", "1.00"]]
    threads = max(args.workers)
    images, seconds = plain_loop(config("threads", 1), threads=threads)
    rate = images / seconds
    label = f"plain loop, {threads} threads (the cores' ceiling)"
    rows.append([label, threads, images, f"{seconds:.1f}", f"{rate:.1f}", f"{rate / loop_rate:.2f}"])
    for workers in args.workers:
        listed, decode_seconds, total_seconds = ray_pipeline(config(f"ray{workers}", workers))
        for label, seconds in (
            ("Ray Data decode stage", decode_seconds),
            ("Ray prepare end to end", total_seconds),
        ):
            rate = listed / seconds
            rows.append([label, workers, listed, f"{seconds:.1f}", f"{rate:.1f}", f"{rate / loop_rate:.2f}"])

    table = markdown_table(["pipeline", "workers", "images", "seconds", "images/s", "x loop"], rows)
    body = (
        f"Synthetic world, {args.locations} places, raw images enlarged to a {args.source_side} px short "
        "side (panoramas 2:1), prepared to the default sizes (384x384; panoramas 768x384), read from and "
        f"written to a local store. Ray's fixed start-up per Dataset execution (about 1-2 s) is inside the "
        f"Ray figures.\n\n{table}\n"
    )
    if args.no_save:
        print(body)
    else:
        append_section("prepare throughput: Ray Data vs a single-process loop", body)


if __name__ == "__main__":
    main()
