"""`make demo`: the platform end to end on the embedded defaults (local store, sqlite MLflow, local Ray).

Each step is the same library call a production job makes, driven by the YAML files in jobs/configs, so
the demo doubles as a smoke test of the real code paths. Steps are idempotent: a second run reuses what
the first one finished.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from gleam import storage, tracking
from gleam.cluster import init_ray
from gleam.config import PrepareConfig, WorldConfig, load_config


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

    console.rule("done")
    console.print(f"store:   {storage.default_store()}")
    console.print(f"corpus:  {result.corpus_uri}")
    uri = tracking.tracking_uri()
    console.print(f"MLflow:  {uri}  (browse: mlflow ui --backend-store-uri {uri})")
    console.print(f"took {time.perf_counter() - started:.1f}s")
