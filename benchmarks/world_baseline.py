"""How far colour statistics get on the synthetic world, and how fast the world is generated.

Generates a world in one process (timed), then matches every query to every satellite tile by a 3-D
RGB colour histogram (8x8x8 bins) under two similarities, histogram intersection and chi-square, and
reports R@1 and R@5 per query modality next to chance, scored by the platform's retrieval metrics
(ties count against the query, as in evaluation). A corpus that such a baseline solved would
teach a model nothing about geometry; the figures must stay far below 100 %.

    .venv/bin/python benchmarks/world_baseline.py --locations 200

The table is appended to docs/benchmarks.md (skip with --no-doc).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from report import append_section, markdown_table

from gleam.corpus import world
from gleam.corpus.schema import Modality
from gleam.corpus.world import WorldConfig
from gleam.corpus.world.baseline import METRICS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locations", type=int, default=200)
    parser.add_argument("--distractors", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--query-size", type=int, default=256)
    parser.add_argument("--output", default=None, help="store URI; default: a fresh temporary folder")
    parser.add_argument("--timing-sample", type=int, default=10, help="places timed per renderer")
    parser.add_argument("--no-doc", action="store_true", help="print only; do not touch docs/benchmarks.md")
    return parser.parse_args()


def renderer_seconds(config: WorldConfig, sample: int) -> dict[str, float]:
    """Mean seconds per place of the shared map crop + satellite tile, and of each query view on top."""
    city = world.build_city(config)
    sites = world.sample_sites(config, city)[:sample]
    city.keep_clear(np.array([(s.x, s.y) for s in sites]))

    def mean_time(modalities: list[Modality]) -> float:
        start = time.perf_counter()
        for site in sites:
            world.render_site(config, city, site, modalities)
        return (time.perf_counter() - start) / len(sites)

    base = mean_time([])
    out = {"map crop + satellite": base}
    out.update({m.value: max(mean_time([m]) - base, 0.0) for m in config.modalities})
    return out


def main() -> None:
    args = parse_args()
    output = args.output or tempfile.mkdtemp(prefix="gleam-world-")
    config = WorldConfig(
        output=output,
        locations=args.locations,
        distractors=args.distractors,
        seed=args.seed,
        tile_size=args.tile_size,
        query_size=args.query_size,
        overwrite=True,
    )
    summary = world.generate_world(config)
    places = config.locations + config.distractors
    images = sum(summary.counts.values())
    if summary.reused:
        timing = f"- generation: reused the complete world at `{output}` (not timed)"
    else:
        timing = (
            f"- generation, one process, JPEG/PNG writes included: {summary.seconds:.1f} s for {places}"
            f" places and {images} images = **{summary.seconds / places:.3f} s per place**"
        )
    sample = min(args.timing_sample, places)
    parts = renderer_seconds(config, sample)
    timing_table = markdown_table(
        [f"stage (mean of {sample} places, no encoding)", "s per place"],
        [[name, f"{seconds:.3f}"] for name, seconds in parts.items()],
    )

    results = {metric: world.histogram_baseline(output, metric=metric) for metric in METRICS}
    rows = []
    for i, res in enumerate(results["intersection"]):
        chi2 = results["chi2"][i]
        rows.append(
            [
                res.modality,
                res.queries,
                res.gallery,
                f"{100 / res.gallery:.1f}",
                f"{100 * res.recall[1]:.1f}",
                f"{100 * res.recall[5]:.1f}",
                f"{100 * chi2.recall[1]:.1f}",
                f"{100 * chi2.recall[5]:.1f}",
            ]
        )
    table = markdown_table(
        ["query modality", "queries", "gallery tiles", "chance R@1 %", "R@1 % (intersection)",
         "R@5 % (intersection)", "R@1 % (chi-square)", "R@5 % (chi-square)"],
        rows,
    )  # fmt: skip
    best = {
        m: max(METRICS, key=lambda k, m=m: next(r.recall[1] for r in results[k] if r.modality == m))
        for m in (r.modality for r in results["intersection"])
    }
    body = "\n\n".join(
        [
            f"World: seed {config.seed}, {config.locations} places + {config.distractors} distractor tiles,"
            f" tiles {config.tile_size} px over {config.tile_metres:.0f} m, queries {config.query_size} px"
            f" (panoramas {2 * config.query_size}x{config.query_size}), renderer {world.RENDERER_VERSION}.",
            timing,
            timing_table,
            "Colour-histogram baseline: each query against every satellite tile, 8x8x8 RGB histograms;"
            " two similarities, the better of the two per modality is "
            + ", ".join(f"{m}: {k}" for m, k in best.items())
            + ".",
            table,
        ]
    )
    if args.no_doc:
        print(body)
    else:
        append_section("Synthetic world: generation time and colour-histogram baseline", body)


if __name__ == "__main__":
    main()
