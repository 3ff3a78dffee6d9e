"""An answer in metres, measured: distance errors, the radius's coverage, refinement, overlap, set fusion.

The encoder learns in one synthetic city and is measured in another, so every place it is measured on is
new to it (the world draws one satellite sun per seed: the default evaluation seed 49 has the training
seed 11's sun to within a degree, so the measurement is of new places, not of new lighting):

- `train` (--seed): one tile per place, queries at the place (--train-offset 0: a random-init encoder
  learns the centred task in a few hundred steps, the decentred one barely: 300 steps on queries up to
  48 m off left the loss at chance); one short GLEAM-C phase on --modality over all its places
  (random-init `test_convnext`, 64 px).
- the evaluation city (--eval-seed), three worlds of the same places and cameras, each prepared as a
  corpus split val/test by place (no train split: nothing is trained on it):
  - `sites`: one tile centred on each place, queries at random known offsets up to --offset metres
    (AuxGeo/CVSat's decentrality);
  - `grid`: an overlapping raster-style gallery (tiles every --stride metres), each query's positive the
    grid tile nearest its camera (its split follows that tile);
  - `sets`: --set-size photos of --modality per place, a share --set-outliers of the sets holding one
    photo of another place (listed in the set, with its tile).

Each evaluation world gets a published index over all its tiles, built by the index job
(`gleam.index.job.build_index`: it calibrates the confidence and fits the location radius on the val
split's queries). On the test split the script reports, per gallery and modality, the distance error of
the top-1 tile centre, the fused estimate and the heatmap-refined estimate
(`gleam.index.location.estimate_location`) against each query's camera, and how often the radius given
held the camera (its coverage; the target is the index's `coverage`). For the sets it fuses each set's
photos with "mean" and "agreement" (`gleam.evaluation.sets`, `gleam.retrieval.fusion`) and reports R@1
and the median error of the top-1 and of the estimate, on sets with an unrelated photo and on clean
ones. Everything lives in a temp dir; the tables go to docs/benchmarks.md (with `--no-doc`, only
printed).

    .venv/bin/python benchmarks/location_quality.py --steps 1200   # docs/evaluation.md's figures (~9 min)
    .venv/bin/python benchmarks/location_quality.py --smoke --no-doc   # the same path, tiny (~4-5 min)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from report import append_section, markdown_table, scratch_platform
from worlds import prepare_world

SIZES = {m: [64, 64] for m in ("satellite", "drone", "streetmap", "ground")} | {"panorama": [128, 64]}
REGISTRY = "gleam-c-location"
ALIAS = "location"
WITHIN_M = (25, 50, 100, 500)
SMOKE = {"train_locations": 40, "locations": 60, "steps": 4, "set_size": 3}
EVAL_WORLDS = ("sites", "grid", "sets")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-locations", type=int, default=600, help="places of the training city")
    parser.add_argument("--locations", type=int, default=200, help="places of the evaluation city")
    parser.add_argument("--seed", type=int, default=11, help="the training city's world seed")
    parser.add_argument("--eval-seed", type=int, default=49, help="the evaluation city's world seed")
    parser.add_argument("--modality", default="streetmap", help="the query modality trained")
    parser.add_argument(
        "--modalities", default="streetmap,drone", help="query modalities rendered and scored (comma list)"
    )
    parser.add_argument(
        "--offset", type=float, default=8.0, help="evaluation city's query_offset_m: cameras up to this far"
    )
    parser.add_argument(
        "--train-offset", type=float, default=0.0, help="training city's query_offset_m (0: at the place)"
    )
    parser.add_argument("--stride", type=float, default=None, help="grid_stride_m (default tile_metres / 2)")
    parser.add_argument("--set-size", type=int, default=4, help="photos per set (sets world)")
    parser.add_argument("--set-outliers", type=float, default=0.5, help="share of sets with an odd photo")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16, help="pairs per worker per step")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val", type=float, default=0.5, help="evaluation city: val share (fits the radius)")
    parser.add_argument("--smoke", action="store_true", help=f"tiny run of the same path: {SMOKE}")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    args.modalities = list(dict.fromkeys([args.modality, *args.modalities.split(",")]))
    return args


def main() -> None:
    args = parse_args()
    with scratch_platform("gleam-location-") as root:
        body = run(args, root)
    print(body)
    if not args.no_doc:
        append_section(
            "Location in metres: distance errors, radius coverage, refinement, overlap, set fusion", body
        )


# --- the run ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, root: Path) -> str:
    from gleam.cluster import init_ray

    init_ray(num_cpus=max(2, args.workers))
    args.tile_metres = world_config(args, root, "sites").tile_metres
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    training = make_world(args, root, "train", "split.val_fraction=0", "split.test_fraction=0")
    splits = (f"split.val_fraction={args.val}", f"split.test_fraction={1 - args.val - 1e-9}")
    corpora = {name: make_world(args, root, name, *splits) for name in EVAL_WORLDS}
    seconds["worlds + prepare"] = time.perf_counter() - t
    t = time.perf_counter()
    encoder = train(args, root, training)
    seconds["training"] = time.perf_counter() - t
    t = time.perf_counter()
    metas = {name: build(args, root, name, corpus, encoder) for name, corpus in corpora.items()}
    seconds["index builds"] = time.perf_counter() - t
    t = time.perf_counter()
    results = {name: measure(root, name, corpora[name], encoder) for name in ("sites", "grid")}
    chance = {
        name: {m: chance_median(root, name, corpora[name], m) for m in args.modalities} for name in results
    }
    sets = score_sets(root, corpora["sets"], encoder, args.modality, args.tile_metres)
    seconds["test measurement"] = time.perf_counter() - t
    return report(args, metas, results, chance, sets, seconds)


def world_config(args: argparse.Namespace, root: Path, name: str) -> Any:
    """The WorldConfig of one world: `train` in the training city, the others in the evaluation city."""
    from gleam.corpus.world import WorldConfig

    options: dict[str, Any] = {
        "query_offset_m": args.offset,
        "seed": args.eval_seed,
        "locations": args.locations,
        "modalities": args.modalities,
    }
    if name == "train":
        options |= {
            "seed": args.seed,
            "locations": args.train_locations,
            "modalities": [args.modality],
            "query_offset_m": args.train_offset,
        }
    if name == "grid":
        options |= {"gallery": "grid", "grid_stride_m": args.stride}
    if name == "sets":
        options |= {
            "set_size": args.set_size,
            "set_outliers": args.set_outliers,
            "modalities": [args.modality],
        }
    return WorldConfig(output=str(root / "raw" / name), tile_size=64, query_size=64, **options)


def make_world(args: argparse.Namespace, root: Path, name: str, *splits: str) -> str:
    """Generate and prepare one world (`splits`: split overrides); returns the corpus URI."""
    from gleam.corpus.world import generate_world

    generate_world(world_config(args, root, name))
    return prepare_world(root / "raw" / name, root / "prepared" / name, 64, *splits)


def train(args: argparse.Namespace, root: Path, corpus: str) -> str:
    """One short GLEAM-C phase on the sites world's train split; returns the registry URI."""
    from gleam.training.config import TrainConfig
    from gleam.training.phases import run_training

    config = TrainConfig.model_validate({
        "name": ALIAS, "corpus": corpus, "phase": "phase1", "modalities": [args.modality],
        "encoder": {"backbone": "test_convnext", "embed_dim": 64, "image_sizes": SIZES},
        "steps": args.steps, "batch_size": args.batch, "seed": args.seed, "loader_threads": 1,
        "shuffle_buffer": 64, "storage_path": str(root / "train"),
        "scaling": {"workers": args.workers, "cpus_per_worker": 1},
        "checkpoint": {"every": args.steps}, "validation": {"enabled": False},
        "optimizer": {"lr": args.lr, "warmup_steps": 10},
        "registry": {"name": REGISTRY, "aliases": [ALIAS]}, "tracking": {"experiment": "location"},
    })  # fmt: skip
    run_training(config)
    return f"models:/{REGISTRY}@{ALIAS}"


def build(args: argparse.Namespace, root: Path, name: str, corpus: str, encoder: str) -> dict[str, Any]:
    """The index job on every tile of the world (the val split calibrates and fits the radius)."""
    from gleam.index.config import IndexBuildConfig
    from gleam.index.job import build_index

    config = IndexBuildConfig.model_validate(
        {
            "name": name,
            "corpus": corpus,
            "encoder": encoder,
            "store": str(root / "store"),
            "embed": {"actors": 1, "num_cpus": 1},
            "tracking": {"enabled": False},
            "seed": args.seed,
        }
    )
    return build_index(config).meta


# --- measuring locations on the test split ---------------------------------------------------------------


def measure(root: Path, name: str, corpus: str, encoder: str) -> Any:
    """The evaluation job through the world's index on its test split, refinement on: an EvaluationResult
    whose `distances` hold each modality's top1 / fused / refined errors and radius coverage."""
    from gleam.evaluation.config import EvaluateConfig
    from gleam.evaluation.evaluate import evaluate

    config = EvaluateConfig(
        corpus=corpus,
        encoder=encoder,
        split="test",
        index=name,
        store=str(root / "store"),
        refine=True,
        grid_queries=0,
    )
    return evaluate(config)


def chance_median(root: Path, name: str, corpus_uri: str, modality: str) -> float:
    """Median distance from a test query's camera to a tile of the index drawn at random: the error of a
    guess, for scale."""
    import pyarrow.compute as pc

    from gleam.corpus.reader import open_corpus
    from gleam.geo import distance_m
    from gleam.index.catalog import open_index

    opened = open_index(str(root / "store"), name)
    where = (pc.field("split") == "test") & (pc.field("modality") == modality)
    rows = open_corpus(corpus_uri).read("queries", ["lat", "lon"], where)
    lat, lon = (rows[c].to_numpy(zero_copy_only=False).astype(np.float64) for c in ("lat", "lon"))
    draw = np.random.default_rng(0).integers(len(opened.tile_ids), size=len(lat))
    return float(np.nanmedian(distance_m(lat, lon, opened.lat[draw], opened.lon[draw])))


# --- sets --------------------------------------------------------------------------------------------------


def score_sets(
    root: Path, corpus_uri: str, encoder_uri: str, modality: str, tile_metres: float
) -> tuple[list[list[Any]], str]:
    """The sets world's test sets fused by each method and searched in its index, for sets with an
    unrelated photo and clean sets apart: (table rows, a note on the odd photos' weights). Errors are
    measured from each set's place (its tile's centre) with the evaluation's `query_errors`."""
    from gleam.corpus.reader import open_corpus
    from gleam.corpus.schema import Modality
    from gleam.evaluation.distance import query_errors, query_positions, ranked
    from gleam.evaluation.locate import index_geometry
    from gleam.evaluation.sets import (
        exact_scorer,
        fuse_sets,
        group_sets,
        set_label,
        set_metrics,
        split_set_ids,
    )
    from gleam.evaluation.split import split_queries
    from gleam.geo import distance_m
    from gleam.index.catalog import open_index
    from gleam.index.location import DEFAULT_K
    from gleam.model import weights
    from gleam.retrieval.fusion import FUSIONS

    corpus = open_corpus(corpus_uri)
    opened = open_index(str(root / "store"), "sets")
    geometry = index_geometry(opened)
    model, spec, _ = weights.load(encoder_uri)
    queries = split_queries(corpus, "test", Modality(modality), model, spec, 64)
    set_ids = split_set_ids(corpus, "test", Modality(modality), queries.ids)
    if set_ids is None:
        raise RuntimeError(f"the sets world's {modality} test queries carry no set_id")
    camera = dict(zip(queries.ids, query_positions(corpus, queries.ids), strict=True))
    groups = group_sets(set_ids)
    place = {s: set_label([queries.labels[r] for r in members]) for s, members in groups.items()}
    centre = {s: (geometry[t]["lat"], geometry[t]["lon"]) for s, t in place.items()}
    # how far each photo's camera stands from its set's place: an unrelated photo is more than a tile away
    apart = {
        s: [float(distance_m(*camera[queries.ids[r]], *centre[s])) for r in members]
        for s, members in groups.items()
    }
    odd = {s: max(d) > tile_metres for s, d in apart.items()}
    k = int((opened.meta.get("location") or {}).get("k") or DEFAULT_K)
    table: list[list[Any]] = []
    odd_weights: list[float] = []
    for subset, wanted in (("with an unrelated photo", True), ("clean", False)):
        chosen = [s for s in groups if odd[s] is wanted]
        if not chosen:
            continue
        rows_of = [r for s in chosen for r in groups[s]]
        vectors = queries.vectors[rows_of]
        labels = [queries.labels[r] for r in rows_of]
        sets_of = [set_ids[r] for r in rows_of]
        score = exact_scorer(opened.index, opened.tile_ids.tolist(), ks=(1, 5))
        metrics = set_metrics(score, vectors, labels, sets_of)
        assert metrics is not None
        for method in FUSIONS:
            fused = fuse_sets(vectors, labels, sets_of, method)
            found = ranked(opened.search, fused.vectors, min(k, len(opened)), geometry)
            errors = query_errors(found, [centre[s] for s in fused.set_ids], modality, opened.meta)
            figures = errors.report(None).methods
            if method == "agreement" and wanted:
                odd_weights += [
                    float(w[int(np.argmax(apart[s]))])
                    for s, w in zip(fused.set_ids, fused.weights, strict=True)
                ]
            table.append(
                [
                    subset,
                    method,
                    len(chosen),
                    f"{metrics[method]['R@1']:.1f}",
                    f"{metrics[method]['R@5']:.1f}",
                    _figure(figures.get("top1"), "median_m"),
                    _figure(figures.get("fused"), "median_m"),
                    _figure(figures.get("fused"), "coverage"),
                ]
            )
    size = len(next(iter(groups.values()))) if groups else 0
    note = ""
    if odd_weights:
        note = (
            f"Agreement gave the unrelated photo a median weight of {np.median(odd_weights):.3f}"
            f" (an equal share: {1 / max(size, 1):.3f}; 10th-90th percentile"
            f" {np.percentile(odd_weights, 10):.3f}-{np.percentile(odd_weights, 90):.3f})."
        )
    return table, note


# --- the report --------------------------------------------------------------------------------------------

ESTIMATES = ("top1", "fused", "refined")


def _figure(figures: dict[str, float] | None, name: str, digits: int = 0) -> str:
    if not figures or name not in figures:
        return "-"
    return f"{figures[name]:.{digits}f}"


def location_rows(gallery: str, result: Any) -> list[list[Any]]:
    """One row per modality and estimate of an evaluation through an index."""
    rows = []
    for modality, found in sorted((result.distances or {}).items()):
        r_at_1 = result.metrics[modality]["R@1"]
        unknown = 100.0 * found.unknown / found.measured if found.measured else float("nan")
        for method in ESTIMATES:
            figures = found.methods.get(method)
            if figures is None:
                continue
            rows.append(
                [gallery, modality, f"{r_at_1:.1f}", method, int(figures["queries"])]
                + [_figure(figures, n) for n in ("median_m", "mean_m")]
                + [_figure(figures, f"within_{d}m") for d in WITHIN_M]
                + [_figure(figures, "radius_m"), _figure(figures, "coverage")]
                + [_figure(figures, "refined_pct") if method == "refined" else "", f"{unknown:.0f}"]
            )
    return rows


def report(
    args: argparse.Namespace,
    metas: dict[str, dict[str, Any]],
    results: dict[str, Any],
    chance: dict[str, dict[str, float]],
    sets: tuple[list[list[Any]], str],
    seconds: dict[str, float],
) -> str:
    header = ["gallery", "modality", "R@1 %", "estimate", "queries", "median m", "mean m"]
    header += [f"<= {d} m %" for d in WITHIN_M]
    header += ["radius m (median)", "radius held %", "moved to peak %", "served unknown %"]
    rows = [row for gallery, result in results.items() for row in location_rows(gallery, result)]
    coverage = next((m["location"]["coverage"] for m in metas.values() if m.get("location")), None)
    fitted = []
    for gallery, meta in metas.items():
        where = meta.get("location")
        if not where:
            fitted.append(f"- {gallery}: no location radius was fitted")
            continue
        radius = where.get("radius_m") or {}
        counts = where.get("queries") or {}
        fitted.append(
            f"- {gallery} index ({meta['counts']['vectors']} tiles): fitted on"
            f" {max(counts.values(), default=0)} {where.get('split')} queries"
            f" ({where.get('refine_sample', 0)} with a heatmap), pooled radius: "
            + ", ".join(f"{m} {_metres(radius.get(m))}" for m in ESTIMATES)
        )
    scale = [
        f"- {gallery} / {modality}: {value:.0f} m"
        for gallery, per in chance.items()
        for modality, value in per.items()
    ]
    set_rows, weight_note = sets
    set_header = [
        "sets",
        "fusion",
        "count",
        "R@1 %",
        "R@5 %",
        "top-1 median m",
        "fused median m",
        "radius held %",
    ]
    timing = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    target = f"{100 * coverage:.0f} %" if coverage is not None else "n/a"
    return "\n\n".join(
        [
            f"Training city: world seed {args.seed}, {args.train_locations} places; evaluation city: seed"
            f" {args.eval_seed}, {args.locations} places split val/test {100 * args.val:.0f}/"
            f"{100 - 100 * args.val:.0f} by place (the grid world's queries by their grid tile). 64 px"
            f" tiles {args.tile_metres:g} m wide ({args.tile_metres / 64:g} m/px); evaluation query"
            f" cameras at random offsets up to {args.offset:g} m from their place (training city:"
            f" {args.train_offset:g} m)."
            f" Encoder: random-init test_convnext (64-d),"
            f" one GLEAM-C phase on {args.modality} over every place of the training city, {args.steps}"
            f" steps, {args.workers} Ray Train workers x {args.batch} pairs, lr {args.lr}. Each evaluation"
            " world's index is built by the index job over all its tiles (calibration and radius fitted on"
            " its val split); the evaluation job (`gleam evaluate --index`, refine on) measures its test"
            f" split against each query's camera. Radius target coverage {target}. Time: {timing}.",
            "Gallery `sites`: one tile centred on each place; `grid`: tiles every"
            f" {args.stride or args.tile_metres / 2:g} m (tiles {args.tile_metres:g} m wide: they overlap),"
            " the positive being the tile nearest the camera. Estimates: `top1` the top tile's centre;"
            " `fused` the probability-weighted centre of the top tile and the candidates within one tile"
            " footprint of it; `refined` what is served with refinement on: the top tile's centre moved"
            " to its evidence-heatmap peak where that applies (`moved to peak`), else the fused point."
            " `radius held`: share of queries whose camera lies within the radius served with their"
            ' estimate; `served unknown`: share of queries serving answers "position unknown" (errors'
            " are measured on every query regardless, as `gleam evaluate` does).",
            markdown_table(header, rows),
            "Fitted at index build:\n" + "\n".join(fitted),
            "For scale, a tile drawn at random from the index lies this far from the camera (median):\n"
            + "\n".join(scale),
            f"Sets: the sets world ({args.set_size} {args.modality} photos per place; in"
            f" {100 * args.set_outliers:.0f} % of the sets one photo shows another place), test split, each"
            " set fused into one query by `mean` or `agreement` and searched in the sets world's index;"
            " errors from the set's place (top-1 centre and fused estimate), radius as served. "
            + weight_note,
            markdown_table(set_header, set_rows),
        ]
    )


def _metres(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f} m"


if __name__ == "__main__":
    main()
