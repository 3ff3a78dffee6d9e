"""Why the demo trains the way it does: its own configs, with phase-2 variants side by side in one run.

World, prepare and phase 1 come from jobs/configs/*demo*.yaml unchanged and run once; each variant is
the demo's phase 2 with some fields replaced (`--variant NAME='{"json": "fields"}'`), trained from the
same phase-1 encoder. Each is scored on held-out places twice: against the test split's tiles (what
`make demo` step 5 reports, and the e2e test's floors) and against every tile of the world (what a
served query searches). Everything lives in a temp dir; the table goes to docs/benchmarks.md.

    .venv/bin/python benchmarks/demo_recipe.py
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from report import append_section, markdown_table

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "jobs" / "configs"
MODALITIES = ("drone", "ground", "panorama", "streetmap")
DEFAULT_VARIANTS = {
    "demo (streetmap 0.4, lr 2e-4)": {},
    "balanced, lr 2e-4": {"mixture": None},
    "balanced, lr 1e-4": {"mixture": None, "optimizer": {"lr": 1e-4, "warmup_steps": 10}},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=JSON fields of phase 2")
    parser.add_argument("--no-doc", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    variants = dict(DEFAULT_VARIANTS)
    if args.variant:
        variants = {v.split("=", 1)[0]: json.loads(v.split("=", 1)[1]) for v in args.variant}
    with tempfile.TemporaryDirectory(prefix="gleam-demo-recipe-") as tmp:
        os.environ["GLEAM_HOME"] = tmp  # the configs' store follows it
        os.environ.pop("GLEAM_STORE", None)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        body = run(variants, Path(tmp))
    print(body)
    if not args.no_doc:
        append_section("The demo's training recipe: phase-2 variants from one phase 1", body)


def run(variants: dict[str, dict], root: Path) -> str:
    from gleam.cluster import init_ray
    from gleam.config import load_config
    from gleam.corpus.config import PrepareConfig
    from gleam.corpus.prepare import prepare
    from gleam.corpus.reader import open_corpus
    from gleam.corpus.world import WorldConfig, generate_world
    from gleam.training.config import TrainConfig
    from gleam.training.phases import run_training

    init_ray()
    generate_world(load_config(WorldConfig, CONFIGS / "world_demo.yaml"))
    corpus = open_corpus(prepare(load_config(PrepareConfig, CONFIGS / "prepare_demo.yaml")).corpus_uri)
    phase1 = run_training(load_config(TrainConfig, CONFIGS / "train_demo_phase1.yaml"))
    rows = [_row("phase 1 alone", phase1.encoder_uri, corpus)]
    base = load_config(TrainConfig, CONFIGS / "train_demo_phase2.yaml").model_dump(mode="json")
    for number, (name, fields) in enumerate(variants.items()):
        config = {**base, **fields, "name": f"variant-{number}", "init": phase1.encoder_uri}
        config["registry"] = {**base["registry"], "champion": False, "aliases": [f"variant-{number}"]}
        trained = run_training(TrainConfig.model_validate(config))
        rows.append(_row(name, trained.encoder_uri, corpus))
    header = ["phase 2", *(f"{m} test" for m in MODALITIES), "mean test", "streetmap all tiles"]
    tiles = corpus.manifest["counts"]["tiles"]
    return (
        "The demo's world, prepare and phase 1 (jobs/configs/*demo*.yaml); each row is phase 2 from that"
        " phase-1 encoder with the named change, 200 steps. Held-out (test split) R@1 as a multiple of"
        f" chance, against the test split's tiles (as `make demo` step 5) and against all {tiles} tiles"
        " (what serving searches).\n\n" + markdown_table(header, rows)
    )


def _row(name: str, encoder_uri: str, corpus) -> list[object]:
    test, everything = _ratios(encoder_uri, corpus)
    cells = [f"{test[m]:.1f}x" for m in MODALITIES]
    mean = sum(test.values()) / len(test)
    return [name, *cells, f"{mean:.1f}x", f"{everything['streetmap']:.1f}x"]


def _ratios(encoder_uri: str, corpus) -> tuple[dict[str, float], dict[str, float]]:
    """R@1 / chance per modality: test queries against test tiles, and against every tile."""
    import numpy as np
    import pyarrow.compute as pc

    from gleam.corpus.schema import Modality
    from gleam.model import weights
    from gleam.model.embedding import embed_corpus

    encoder, spec, _ = weights.load(encoder_uri)
    encoder.eval()
    tiles = embed_corpus(corpus, "tiles", pc.scalar(True), Modality.SATELLITE, encoder, spec, 64)
    split = dict(zip(*corpus.read("tiles", ["tile_id", "split"]).to_pydict().values(), strict=True))
    in_test = np.array([split[t] == "test" for t in tiles.ids])
    position = {t: i for i, t in enumerate(tiles.ids)}
    test, everything = {}, {}
    for modality in MODALITIES:
        where = (pc.field("split") == "test") & (pc.field("modality") == modality)
        queries = embed_corpus(corpus, "queries", where, Modality(modality), encoder, spec, 64)
        own = np.array([position[t] for t in queries.labels])
        scores = queries.vectors @ tiles.vectors.T
        everything[modality] = float(np.mean(scores.argmax(1) == own)) * len(tiles.ids)
        scores[:, ~in_test] = -np.inf
        test[modality] = float(np.mean(scores.argmax(1) == own)) * int(in_test.sum())
    return test, everything


if __name__ == "__main__":
    main()
