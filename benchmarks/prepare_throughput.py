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
from gleam.config import PrepareConfig, WorldConfig, load_config
from gleam.corpus.images import process_image
from gleam.corpus.listing import build_listing
from gleam.corpus.prepare import prepare
from gleam.corpus.world import generate_world

SIZES = [
    "sizes.satellite=[256,256]",
    "sizes.drone=[256,256]",
    "sizes.streetmap=[256,256]",
    "sizes.ground=[256,256]",
    "sizes.panorama=[512,256]",
]


def single_process_loop(config: PrepareConfig) -> tuple[int, float]:
    listing, _ = build_listing(config)
    rows = [r for r in listing.to_pylist() if r["reason"] is None]
    sizes = {m.value: size for m, size in config.sizes.items()}
    start = time.perf_counter()
    for row in rows:
        process_image(storage.read_bytes(row["source_uri"]), sizes[row["modality"]], config.limits)
    return len(rows), time.perf_counter() - start


def ray_pipeline(config: PrepareConfig) -> tuple[int, float, float]:
    start = time.perf_counter()
    manifest = prepare(config).manifest
    return manifest["counts"]["listed"], manifest["seconds"]["decode"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locations", type=int, default=420, help="world places (5 images each + tile)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-save", action="store_true", help="print only; do not touch docs/")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gleam-bench-prepare-"))
    os.environ.setdefault("GLEAM_HOME", str(workdir / "home"))
    raw = str(workdir / "raw")
    generate_world(WorldConfig(output=raw, locations=args.locations, seed=3))
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
                *SIZES,
            ],
        )

    images, loop_seconds = single_process_loop(config("loop", 1))
    loop_rate = images / loop_seconds
    rows = [
        [
            "single-process loop (decode/resize/encode)",
            1,
            images,
            f"{loop_seconds:.1f}",
            f"{loop_rate:.1f}",
            "1.00",
        ]
    ]
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
        f"Synthetic world, {args.locations} places (satellite 256x256, panorama 512x256, other views "
        f"256x256), read from a local store.\n\n{table}\n"
    )
    if args.no_save:
        print(body)
    else:
        append_section("prepare throughput: Ray Data vs a single-process loop", body)


if __name__ == "__main__":
    main()
