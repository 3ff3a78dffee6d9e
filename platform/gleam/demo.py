"""`make demo`: the platform end to end on the embedded defaults (local store, sqlite MLflow, local Ray).

world -> prepare (Ray Data) -> train phase 1 and phase 2 (Ray Train, registered in MLflow) -> evaluate
the phase-2 encoder on the test split, per modality, next to chance -> index every tile of the world
with it (Ray Data actor pool, FAISS, versioned publish) -> evaluate again through that index, next to
exact search over the same vectors, with the gap.

Each step is the same library call a production job makes, driven by the YAML files in jobs/configs, so
the demo doubles as a smoke test of the real code paths. Steps are idempotent: a second run reuses what
the first one finished (the index build publishes nothing when tiles and encoder are unchanged).
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from gleam import storage, tracking
from gleam.cluster import init_ray
from gleam.config import EvaluateConfig, PrepareConfig, WorldConfig, load_config


def run_demo(configs: Path, console: Console) -> None:
    from gleam.corpus.prepare import prepare
    from gleam.corpus.summary import manifest_table
    from gleam.corpus.world import generate_world

    started = time.perf_counter()
    init_ray()  # before the world: its renderer fans out over Ray tasks when a cluster is up
    world_cfg = load_config(WorldConfig, configs / "world_demo.yaml")
    console.rule("1. synthetic world")
    summary = generate_world(world_cfg)
    console.print(summary)

    console.rule("2. prepare (Ray Data)")
    prepare_cfg = load_config(PrepareConfig, configs / "prepare_demo.yaml")
    result = prepare(prepare_cfg)
    if result.skipped:
        console.print("corpus already complete for this config: reused")
    console.print(manifest_table(result.manifest))

    from gleam.evaluation.evaluate import evaluate
    from gleam.evaluation.report import metrics_table
    from gleam.training.config import TrainConfig
    from gleam.training.phases import run_training
    from gleam.training.report import result_table

    for number, name in ((3, "train_demo_phase1.yaml"), (4, "train_demo_phase2.yaml")):
        train_cfg = load_config(TrainConfig, configs / name)
        modalities = ", ".join(m.value for m in train_cfg.modalities)
        console.rule(f"{number}. {train_cfg.phase}: {modalities} (Ray Train)")
        trained = run_training(train_cfg)
        if trained.already_done:
            console.print("run already complete for this config: reused")
        console.print(result_table(trained))

    console.rule("5. evaluate the phase-2 encoder on the test split")
    evaluate_cfg = load_config(EvaluateConfig, configs / "evaluate_demo.yaml")
    evaluation = evaluate(evaluate_cfg)
    console.print(metrics_table(evaluation, evaluate_cfg.ks))

    from gleam.index.config import IndexBuildConfig
    from gleam.index.job import build_index
    from gleam.index.report import build_table

    console.rule("6. index every tile with the champion encoder (Ray Data + FAISS)")
    index_cfg = load_config(IndexBuildConfig, configs / "index_demo.yaml")
    built = build_index(index_cfg)
    console.print(build_table(built))

    console.rule("7. evaluate through the published index, next to exact search")
    through = [f"index={index_cfg.name}", f"store={index_cfg.store}"]
    through_cfg = load_config(EvaluateConfig, configs / "evaluate_demo.yaml", through)
    console.print(metrics_table(evaluate(through_cfg), through_cfg.ks))

    console.rule("done")
    console.print(f"store:   {storage.default_store()}")
    console.print(f"corpus:  {result.corpus_uri}")
    uri = tracking.tracking_uri()
    console.print(f"MLflow:  {uri}  (browse: mlflow ui --backend-store-uri {uri})")
    console.print(f"took {time.perf_counter() - started:.1f}s")
