"""Do hard-negative batches help here? The same training with batching.mode random / gps / similarity.

Each mode trains the same random-init encoder (same seed, steps, batch, workers) from scratch and is
scored on held-out places by the evaluation job (test split, R@1 and AP): on the synthetic world (places
have lat/lon: all three modes) and on University-1652-mini in its native layout (no coordinates: gps is
not applicable, and the run shows the error it gives). Everything lives in a temp dir; the table goes to
docs/benchmarks.md (with `--no-doc`, only printed).

    .venv/bin/python benchmarks/batch_composition.py
    .venv/bin/python benchmarks/batch_composition.py --steps 300 --u1652 /path/to/university1652-mini
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from report import append_section, markdown_table, scratch_platform
from worlds import prepare_world

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "jobs" / "configs"
MODES = ("random", "gps", "similarity")
SIZES = {m: [64, 64] for m in ("satellite", "drone", "streetmap", "ground")} | {"panorama": [128, 64]}
U1652 = REPO.parent / "shared" / "data" / "university1652-mini"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locations", type=int, default=300, help="places of the synthetic world")
    parser.add_argument("--modality", default="streetmap", help="the world's query modality to train")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16, help="pairs per worker per step")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mine-every", type=int, default=50, help="similarity: steps between minings")
    parser.add_argument("--u1652", default=str(U1652), help="University-1652(-mini) root; '' to skip")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with scratch_platform("gleam-batching-") as root:
        body = run(args, root)
    print(body)
    if not args.no_doc:
        append_section("Batch composition: random vs GPS vs similarity batches, held-out retrieval", body)


def run(args: argparse.Namespace, root: Path) -> str:
    from gleam.cluster import init_ray
    from gleam.corpus.world import WorldConfig, generate_world

    init_ray(num_cpus=max(2, args.workers))
    generate_world(
        WorldConfig(
            output=str(root / "raw"), locations=args.locations, tile_size=64, query_size=64, seed=args.seed
        )
    )
    world = prepare_world(
        root / "raw", root / "world", 64, "split.val_fraction=0.15", "split.test_fraction=0.15"
    )
    rows = [train_and_score(args, root, "world", world, args.modality, mode) for mode in MODES]
    sections = [
        f"Synthetic world (seed {args.seed}, {args.locations} places at 64 px, {args.modality} ->"
        " satellite) and University-1652-mini (drone -> satellite, native layout, prepared at 128 px)."
        " Each row: a random-init `test_convnext` (64-d, 64 px inputs) trained from scratch for"
        f" {args.steps} steps, {args.workers} Ray Train workers x {args.batch} pairs, lr 1e-3; gps and"
        " similarity with 8 places per neighbourhood out of 16 candidates; similarity first random, then"
        f" mined every {args.mine_every} steps. Scored by the evaluation job on the test split (R@1 / AP %,"
        " chance = 1 / gallery).",
    ]
    if args.u1652 and Path(args.u1652).is_dir():
        u1652 = prepare_u1652(Path(args.u1652), root)
        rows += [train_and_score(args, root, "University-1652-mini", u1652, "drone", m) for m in MODES]
    else:
        sections.append(f"University-1652-mini not found at {args.u1652!r}: not run.")
    header = ["data", "mode", "R@1 %", "AP %", "chance R@1 %", "train s", "note"]
    return "\n\n".join([*sections, markdown_table(header, rows)])


def prepare_u1652(source: Path, root: Path) -> str:
    from gleam.config import load_config
    from gleam.corpus.config import PrepareConfig
    from gleam.corpus.prepare import prepare

    overrides = [
        f"sources.0.uri={source}",
        f"output={root / 'u1652'}",
        "tracking.enabled=false",
        *(f"sizes.{m}=[128,128]" for m in ("satellite", "drone", "ground")),
    ]
    return prepare(load_config(PrepareConfig, CONFIGS / "prepare_university1652.yaml", overrides)).corpus_uri


def train_and_score(
    args: argparse.Namespace, root: Path, data: str, corpus: str, modality: str, mode: str
) -> list:
    from gleam.errors import GleamError
    from gleam.evaluation.config import EvaluateConfig
    from gleam.evaluation.evaluate import evaluate
    from gleam.training.config import TrainConfig
    from gleam.training.phases import run_training

    tag = f"{data.split('-')[0].lower()}-{mode}"
    batching: dict[str, object] = {"mode": mode, "neighbours": 8, "candidates": 16}
    if mode == "similarity":
        batching["mine_every_steps"] = args.mine_every
    config = TrainConfig.model_validate(
        {
            "name": tag,
            "corpus": corpus,
            "modalities": [modality],
            "encoder": {"backbone": "test_convnext", "embed_dim": 64, "image_sizes": SIZES},
            "steps": args.steps,
            "batch_size": args.batch,
            "seed": args.seed,
            "loader_threads": 1,
            "shuffle_buffer": 64,
            "storage_path": str(root / "train"),
            "scaling": {"workers": args.workers, "cpus_per_worker": 1},
            "checkpoint": {"every": args.steps},
            "validation": {"enabled": False},
            "optimizer": {"lr": 1e-3, "warmup_steps": 10},
            "batching": batching,
            "registry": {"name": "gleam-c-batching", "aliases": [tag]},
            "tracking": {"experiment": "batching"},
        }
    )
    started = time.perf_counter()
    try:
        run_training(config)
    except GleamError as exc:  # gps without coordinates: the error is the result
        print(f"{tag}: {exc}", file=sys.stderr)
        return [data, mode, "n/a", "n/a", "", "", f"not applicable: {str(exc).split(';')[0]}"]
    seconds = time.perf_counter() - started
    result = evaluate(
        EvaluateConfig(corpus=corpus, encoder=f"models:/gleam-c-batching@{tag}", split="test", grid_queries=0)
    )
    scores = result.metrics[modality]
    row = [
        data,
        mode,
        f"{scores['R@1']:.1f}",
        f"{scores['AP']:.1f}",
        f"{result.chance_r1:.2f}",
        f"{seconds:.0f}",
        "",
    ]
    print("row:", " | ".join(str(c) for c in row), flush=True)  # a run cut short still tells something
    return row


if __name__ == "__main__":
    main()
