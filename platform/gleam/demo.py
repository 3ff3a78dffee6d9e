"""`make demo`: the platform end to end on the embedded defaults (local store, sqlite MLflow, local Ray).

world -> prepare (Ray Data) -> train phase 1 and phase 2 (Ray Train, registered in MLflow) -> evaluate
the phase-2 encoder on the test split, per modality, next to chance -> index every tile of the world
with it (Ray Data actor pool, FAISS, versioned publish) -> evaluate again through that index, next to
exact search over the same vectors, with the gap -> serve encoder, index and explainer with Ray Serve,
send a real test photo over HTTP and print where it was taken and why.

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

    console.rule("8. serve it (Ray Serve) and ask where a test photo was taken, and why")
    _serve_and_ask(index_cfg.encoder, index_cfg.name, index_cfg.store, evaluate_cfg.corpus, console)

    console.rule("done")
    console.print(f"store:   {storage.default_store()}")
    console.print(f"corpus:  {result.corpus_uri}")
    uri = tracking.tracking_uri()
    console.print(f"MLflow:  {uri}  (browse: mlflow ui --backend-store-uri {uri})")
    console.print(f"took {time.perf_counter() - started:.1f}s")


def _serve_and_ask(encoder: str, index: str, store: str, corpus_uri: str, console: Console) -> None:
    """Start the Serve application from serve/config.yaml, send one test photo, print the answer."""
    import base64
    import json
    import socket
    import urllib.request

    import pyarrow.compute as pc
    from ray import serve
    from rich.table import Table

    from gleam.corpus.reader import open_corpus
    from serve.run import load_config, start

    with socket.socket() as probe:
        port = 8000 if probe.connect_ex(("127.0.0.1", 8000)) != 0 else 0
    if port == 0:
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
    url = start(load_config(args={"encoder": encoder, "index": index, "store": store}, port=port))
    try:
        queries = open_corpus(corpus_uri).read(
            "queries", ["query_id", "modality", "tile_id", "image"], pc.field("split") == "test"
        )
        query = queries.filter(pc.field("modality") == "drone").slice(0, 1).to_pylist()[0]
        payload = {
            "images": [base64.b64encode(query["image"]).decode()],
            "modality": query["modality"],
            "k": 5,
            "explain": True,
        }
        request = urllib.request.Request(
            f"{url}/v1/localize",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        console.print(
            f"POST {url}/v1/localize: {query['modality']} photo {query['query_id']} "
            f"(taken at tile {query['tile_id']}); index {answer['index']['version']}, {answer['took_ms']} ms"
        )
        table = Table("rank", "tile", "score", "lat", "lon", "")
        for rank, candidate in enumerate(answer["candidates"], 1):
            mark = "<- where it was taken" if candidate["tile_id"] == query["tile_id"] else ""
            table.add_row(
                str(rank),
                candidate["tile_id"],
                f"{candidate['score']:.3f}",
                f"{candidate['lat']:.5f}" if candidate["lat"] is not None else "-",
                f"{candidate['lon']:.5f}" if candidate["lon"] is not None else "-",
                mark,
            )
        console.print(table)
        explanation = answer.get("explanation") or {}
        verdict = {True: "same place", False: "not the same place", None: "no verdict"}[
            explanation.get("match")
        ]
        console.print(
            f"why (top candidate, from {explanation.get('reasoning_source')}): {verdict}, "
            f"confidence {explanation.get('confidence')}"
        )
        console.print(explanation.get("reasoning") or explanation.get("raw"), highlight=False)
    finally:
        serve.shutdown()
    console.print(
        "keep it running with [bold]gleam serve[/] (or .venv/bin/gleam serve), then open "
        "http://127.0.0.1:8000/ to upload photos, or POST to /v1/localize (API docs at /docs)"
    )
