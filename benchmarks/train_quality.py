"""What two GLEAM-C phases learn: held-out retrieval per modality, on a synthetic world or a real dataset.

Without --real: the real platform path end to end on a synthetic world: world -> Ray Data prepare ->
Ray Train phase 1 -> phase 2 (from phase 1 in the registry) -> the evaluation job on the test split. A
tiny random-init encoder at 64 px keeps it to minutes on CPU; the same settings as
tests/integration/test_learning.py by default. Everything (store, MLflow, checkpoints) lives in a temp
dir.

    .venv/bin/python benchmarks/train_quality.py --locations 600 --steps 300

With --real DATASET_URI: the GPU recipe (jobs/configs/train_phase{1,2}.yaml) on a prepared corpus, or
on a raw dataset root with --source KIND (prepared first), then the evaluation, with the published
figures beside this run's (benchmarks/real_recipe.py). It uses the environment's store, MLflow and Ray
cluster (GLEAM_STORE, MLFLOW_TRACKING_URI, RAY_ADDRESS); --smoke runs the same path tiny on CPU in a
temp dir.

    python benchmarks/train_quality.py --real s3://bucket/gleam/prepared/university1652
    python benchmarks/train_quality.py --real s3://bucket/University-1652 --source university1652

Either way the table is appended to docs/benchmarks.md (skip with --no-doc).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from report import append_section, markdown_table

CONFIGS = Path(__file__).resolve().parents[1] / "jobs" / "configs"
SIZES = {m: [64, 64] for m in ("satellite", "drone", "streetmap", "ground")} | {"panorama": [128, 64]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locations", type=int, default=600)
    parser.add_argument("--seed", type=int, default=11, help="world seed")
    parser.add_argument("--steps", type=int, default=300, help="steps of each phase")
    parser.add_argument("--batch", type=int, default=16, help="pairs per worker per step")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--phase1", default="streetmap", help="phase 1 modality")
    parser.add_argument("--lr1", type=float, default=1e-3)
    parser.add_argument("--lr2", type=float, default=2e-4)
    parser.add_argument("--backbone", default="test_convnext")
    parser.add_argument("--no-doc", action="store_true")
    real = parser.add_argument_group("a real dataset (--real)")
    real.add_argument("--real", metavar="DATASET_URI", help="a prepared corpus, or a raw root with --source")
    real.add_argument(
        "--source", metavar="KIND", help="DATASET_URI is a raw dataset of this kind: prepare it"
    )
    real.add_argument("--phase1-config", default=str(CONFIGS / "train_phase1.yaml"))
    real.add_argument("--phase2-config", default=str(CONFIGS / "train_phase2.yaml"))
    real.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override: phase1./phase2./evaluate./prepare. prefixes for one config; none: both phases",
    )
    real.add_argument("--name", help="run-name prefix (default quality-<dataset>); the same name resumes")
    real.add_argument("--smoke", action="store_true", help="tiny CPU run of the same path, in a temp dir")
    args = parser.parse_args(argv)
    if args.real is None and (args.source or args.set or args.smoke or args.name):
        parser.error("--source, --set, --name and --smoke apply to --real only")
    return args


def main() -> None:
    args = parse_args()
    if args.real is not None:
        main_real(args)
        return
    with tempfile.TemporaryDirectory(prefix="gleam-quality-") as tmp:
        root = Path(tmp)
        _local_home(root)
        body = run(args, root)
    if args.no_doc:
        print(body)
    else:
        append_section("What two short GLEAM-C phases learn on the synthetic world", body)


def main_real(args: argparse.Namespace) -> None:
    """The recipe on a real dataset; with --smoke everything it writes lives in a temp dir."""
    from real_recipe import run_real

    from gleam.errors import GleamError

    try:
        if args.smoke:
            with tempfile.TemporaryDirectory(prefix="gleam-quality-real-") as tmp:
                _local_home(Path(tmp))
                os.environ.pop("GLEAM_STORE", None)  # the store follows GLEAM_HOME
                os.environ["GLEAM_TRAIN_STORAGE"] = str(Path(tmp) / "train")  # the recipe's default is ./
                body = run_real(args)
        else:
            body = run_real(args)
    except GleamError as exc:  # from a Ray task too: Ray's error is also an instance of the cause's class
        cause = getattr(exc, "cause", None) or exc
        print(f"error: {cause}", file=sys.stderr)  # one line and the error's exit code, as the CLI does
        raise SystemExit(getattr(cause, "exit_code", 1)) from None
    if args.no_doc:
        print(body)
    else:
        append_section("The GPU recipe on a real dataset: held-out retrieval vs published figures", body)


def _local_home(root: Path) -> None:
    """Store, checkpoints and MLflow under `root` (the synthetic and smoke runs leave nothing behind)."""
    os.environ["GLEAM_HOME"] = str(root / "home")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def run(args: argparse.Namespace, root: Path) -> str:
    from gleam.cluster import init_ray
    from gleam.config import load_config
    from gleam.corpus.config import PrepareConfig
    from gleam.corpus.prepare import prepare
    from gleam.corpus.world import WorldConfig, generate_world
    from gleam.evaluation.config import EvaluateConfig
    from gleam.evaluation.evaluate import evaluate
    from gleam.training.config import TrainConfig
    from gleam.training.phases import run_training

    init_ray(num_cpus=max(2, args.workers))
    started = time.perf_counter()
    generate_world(
        WorldConfig(
            output=str(root / "raw"), locations=args.locations, tile_size=64, query_size=64, seed=args.seed
        )
    )
    overrides = [
        "name=w",
        f"output={root / 'prepared'}",
        "sources.0.kind=world",
        f"sources.0.uri={root / 'raw'}",
        "tracking.enabled=false",
        "split.val_fraction=0.15",
        "split.test_fraction=0.15",
        *(f"sizes.{m}=[{w},{h}]" for m, (w, h) in SIZES.items()),
    ]
    corpus = prepare(load_config(PrepareConfig, None, overrides)).corpus_uri
    data_seconds = time.perf_counter() - started
    common = {
        "corpus": corpus,
        "batch_size": args.batch,
        "loader_threads": 1,
        "shuffle_buffer": 64,
        "steps": args.steps,
        "storage_path": str(root / "train"),
        "scaling": {"workers": args.workers, "cpus_per_worker": 1},
        "checkpoint": {"every": args.steps},
        "validation": {"enabled": False},
        "registry": {"name": "gleam-c-quality"},
        "tracking": {"experiment": "quality"},
    }
    timings = {}
    phase1 = TrainConfig.model_validate({
        **common, "name": "phase1", "phase": "phase1", "modalities": [args.phase1],
        "encoder": {"backbone": args.backbone, "embed_dim": 64, "image_sizes": SIZES},
        "optimizer": {"lr": args.lr1, "warmup_steps": 10},
    })  # fmt: skip
    t = time.perf_counter()
    run_training(phase1)
    timings["phase 1"] = time.perf_counter() - t
    phase2 = TrainConfig.model_validate(
        {
            **common,
            "name": "phase2",
            "phase": "phase2",
            "modalities": ["drone", "streetmap", "panorama", "ground"],
            "init": "models:/gleam-c-quality@phase1",
            "optimizer": {"lr": args.lr2, "warmup_steps": 10},
        }
    )
    t = time.perf_counter()
    run_training(phase2)
    timings["phase 2"] = time.perf_counter() - t
    result = evaluate(
        EvaluateConfig(corpus=corpus, encoder="models:/gleam-c-quality@phase2", split="test", grid_queries=0)
    )
    chance = result.chance_r1
    rows = [
        [m, result.query_counts[m], f"{v['R@1']:.1f}", f"{v['R@5']:.1f}", f"{v['AP']:.1f}", f"{chance:.2f}",
         f"{v['R@1'] / chance:.1f}x"]
        for m, v in sorted(result.metrics.items())
    ]  # fmt: skip
    table = markdown_table(
        ["modality", "queries", "R@1 %", "R@5 %", "AP %", "chance R@1 %", "R@1 / chance"], rows
    )
    return "\n\n".join(
        [
            f"World seed {args.seed}, {args.locations} places at 64 px (train/val/test 70/15/15 by place);"
            f" encoder {args.backbone} (random init, 64-d); {args.workers} Ray Train workers x {args.batch}"
            f" pairs; phase 1: {args.phase1}, {args.steps} steps, lr {args.lr1}; phase 2: drone, streetmap,"
            f" panorama, ground (uniform mixture) from phase 1, {args.steps} steps, lr {args.lr2}; test"
            f" gallery {result.gallery_size} tiles. World + prepare {data_seconds:.0f} s, phase 1"
            f" {timings['phase 1']:.0f} s, phase 2 {timings['phase 2']:.0f} s (wall, start-up included).",
            table,
        ]
    )


if __name__ == "__main__":
    main()
