"""`train_quality.py --real`: the GPU recipe (jobs/configs/train_phase{1,2}.yaml) on a real dataset.

One command: optionally prepare a raw dataset, train phase 1, train phase 2 from phase 1's encoder,
evaluate phase 2's encoder on the held-out test split, and write the table next to the published
figures it should be compared with. Everything goes through the platform's own entry points
(`prepare`, `run_training`, `evaluate`), so the figures are the platform's, not a re-implementation's.

Overrides (`--set`) are routed by prefix: `phase1.` / `phase2.` / `evaluate.` / `prepare.` go to that
config only; a key without a prefix goes to both phases, except `encoder.*`, which only phase 1 has
(phase 2 starts from phase 1's weights). Setting `steps` clears `epochs` and the other way round, since a
phase gives exactly one of them.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report import markdown_table

from gleam.errors import InvalidInputError

PHASES = ("phase1", "phase2")
TARGETS = (*PHASES, "evaluate", "prepare")
METRICS = ("R@1", "R@5", "R@10", "R@1%", "AP")
BENCH_REGISTRY = "gleam-c-quality"  # never the recipe's own `gleam-c`: a benchmark moves no production alias

# A tiny CPU run of the same path (`--smoke`): random-init test_convnext at 64 px, two steps a phase.
SMOKE = {
    "phase1": ["encoder.backbone=test_convnext", "encoder.pretrained=null", "encoder.embed_dim=64"]
    + [f"encoder.image_sizes.{m}=[64,64]" for m in ("satellite", "drone", "streetmap", "ground")]
    + ["encoder.image_sizes.panorama=[128,64]", "encoder.channels_last=false"],
    "both": [
        "steps=2",
        "batch_size=4",
        "loader_threads=1",
        "shuffle_buffer=16",
        "scaling.workers=1",
        "scaling.cpus_per_worker=1",
        "validation.enabled=false",
        "checkpoint.every=2",
        "checkpoint.max_failures=0",  # a smoke run fails at once instead of retrying
        "batching={mode: random}",
    ],
    "phase2": ["image_sizes=null"],  # phase 1's 64 px, not the recipe's 384
    "evaluate": ["batch_size=16"],
}  # (prepare follows phase 1's sizes by itself)


@dataclass(frozen=True)
class Reference:
    """One published figure set: who, on what, for which of this platform's query modalities."""

    source: str
    task: str
    modality: str
    metrics: dict[str, float]


# Published held-out figures on the datasets' own test protocols (percent). Only numbers the cited
# paper states; a metric it does not report is left out, never filled in.
PUBLISHED: tuple[Reference, ...] = (
    Reference(
        "Sample4Geo (Deuser et al., ICCV 2023), its University-1652 table",
        "University-1652 drone -> satellite (701 test buildings, 951 gallery tiles)",
        "drone",
        {"R@1": 92.65, "AP": 93.81},
    ),
)


def route_overrides(assignments: list[str], smoke: bool = False) -> dict[str, list[str]]:
    """`--set` assignments (and the smoke preset before them) per target config, in order."""
    routed: dict[str, list[str]] = {target: [] for target in TARGETS}
    if smoke:
        for phase in PHASES:
            routed[phase] += SMOKE["both"]
        for target in TARGETS:
            routed[target] += SMOKE.get(target, [])
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"--set {assignment!r} must look like key.path=value")
        key = assignment.split("=", 1)[0].strip()
        head, _, rest = key.partition(".")
        if head in TARGETS and rest:
            routed[head].append(assignment.strip()[len(head) + 1 :])
        elif head == "encoder":
            routed["phase1"].append(assignment)
        else:
            for phase in PHASES:
                routed[phase].append(assignment)
    for phase in PHASES:
        routed[phase] = _exclusive_length(routed[phase])
    return routed


def _exclusive_length(assignments: list[str]) -> list[str]:
    """After each `steps=` (or `epochs=`), null the other: a phase gives exactly one of them."""
    out: list[str] = []
    for assignment in assignments:
        out.append(assignment)
        key = assignment.split("=", 1)[0].strip()
        if key in ("steps", "epochs"):
            out.append(("epochs" if key == "steps" else "steps") + "=null")
    return out


def default_name(dataset: str) -> str:
    """A run name from the dataset's last path part: the same command again resumes (or reuses) it."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset.rstrip("/").rsplit("/", 1)[-1]).strip("-._")
    return f"quality-{base or 'dataset'}"


def phase_overrides(phase: str, name: str, fitted: list[str], user: list[str]) -> list[str]:
    """A recipe phase's overrides: the benchmark's run name and registry, the corpus fit, then the user's."""
    return [
        f"name={name}-{phase}",
        f"registry.name={BENCH_REGISTRY}",
        "registry.champion=false",
        *fitted,
        *user,
    ]


def corpus_overrides(
    recipe: dict[str, Any], available: set[str], routed: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Fit each recipe phase to the corpus: the modalities it has train pairs for (and their mixture weights).

    When the corpus has none of phase 1's modalities (University-1652 has no panoramas), phase 1 trains
    phase 2's and composes its batches as phase 2 does: the recipe's GPS start needs coordinates such a
    corpus may lack. A field the user sets (`--set`) is left to the user.
    """
    wanted = {p: [m.value for m in recipe[p].modalities] for p in PHASES}
    keep = {p: [m for m in wanted[p] if m in available] for p in PHASES}
    if not keep["phase2"]:
        raise InvalidInputError(f"the corpus has no train pairs of phase 2's modalities {wanted['phase2']}")
    fallback = not keep["phase1"]
    keep["phase1"] = keep["phase1"] or keep["phase2"]
    fitted: dict[str, list[str]] = {p: [] for p in PHASES}
    for p in PHASES:
        fields = {a.split("=", 1)[0].strip().split(".", 1)[0] for a in routed[p]}
        if keep[p] != wanted[p] and "modalities" not in fields:
            fitted[p].append(f"modalities={json.dumps(keep[p])}")
            if recipe[p].mixture is not None and "mixture" not in fields:
                kept = {m.value: w for m, w in recipe[p].mixture.items() if m.value in keep[p]}
                fitted[p].append(f"mixture={json.dumps(kept or None)}")
        if p == "phase1" and fallback and "batching" not in fields:
            batching = recipe["phase2"].batching.model_dump(mode="json", exclude_defaults=True)
            fitted[p].append(f"batching={json.dumps(batching)}")
    return fitted


@dataclass
class PhaseRun:
    modalities: list[str]
    steps: int
    seconds: float
    encoder_uri: str
    already_done: bool


def run_real(args: Any) -> str:
    """Prepare (with --source), train both phases, evaluate; returns the docs/benchmarks.md body."""
    from gleam import storage
    from gleam.cluster import init_ray
    from gleam.config import load_config
    from gleam.corpus.reader import open_corpus
    from gleam.corpus.schema import Modality
    from gleam.evaluation.config import EvaluateConfig
    from gleam.evaluation.evaluate import evaluate  # run as a Ray task: see _evaluate_on_cluster
    from gleam.training.config import TrainConfig
    from gleam.training.phases import run_training, train_pair_counts

    routed = route_overrides(args.set, smoke=args.smoke)
    paths = {"phase1": Path(args.phase1_config), "phase2": Path(args.phase2_config)}
    init_ray()
    started = time.perf_counter()
    corpus_uri = args.real
    if args.source:
        corpus_uri = _prepare(args.source, args.real, paths["phase1"], routed, storage.default_store())
    prepare_seconds = time.perf_counter() - started
    corpus = open_corpus(corpus_uri)
    queries = [m.value for m in Modality if m is not Modality.SATELLITE]
    available = {m for m, n in train_pair_counts(corpus, queries).items() if n > 0}
    recipe = {phase: load_config(TrainConfig, paths[phase], routed[phase]) for phase in PHASES}
    fitted = corpus_overrides(recipe, available, routed)
    name = args.name or default_name(args.real)
    configs, runs = {}, {}
    init: list[str] = []  # phase 2 starts from this run's phase 1 (a `phase2.init=` still wins)
    for phase in PHASES:
        own = phase_overrides(phase, name, fitted[phase], routed[phase])
        configs[phase] = load_config(TrainConfig, paths[phase], [f"corpus={corpus.uri}", *init, *own])
        t = time.perf_counter()
        trained = run_training(configs[phase])
        modalities = [m.value for m in configs[phase].modalities]
        seconds = time.perf_counter() - t
        runs[phase] = PhaseRun(modalities, trained.steps, seconds, trained.encoder_uri, trained.already_done)
        init = [f"init={trained.encoder_uri}"]
    defaults = [f"corpus={corpus.uri}", f"encoder={runs['phase2'].encoder_uri}", "split=test"]
    evaluation = load_config(
        EvaluateConfig, None, [*defaults, "grid_queries=0", "one_percent=official", *routed["evaluate"]]
    )
    result = _evaluate_on_cluster(evaluate, evaluation)
    return real_report(
        dataset=args.real,
        corpus_uri=corpus.uri,
        phase1=configs["phase1"],
        phase2=configs["phase2"],
        runs=runs,
        result=result,
        one_percent=evaluation.one_percent,
        prepare_seconds=prepare_seconds if args.source else None,
        cluster=_cluster(),
    )


def _prepare(kind: str, raw: str, phase1_path: Path, routed: dict[str, list[str]], store: str) -> str:
    """Prepare a raw dataset of `kind` at the sizes phase 1 trains at; an identical earlier one is reused."""
    from gleam.config import load_config
    from gleam.corpus.config import PrepareConfig
    from gleam.corpus.prepare import prepare
    from gleam.training.config import TrainConfig

    phase1 = load_config(TrainConfig, phase1_path, routed["phase1"])
    sizes = phase1.encoder.image_sizes if phase1.encoder is not None else {}
    overrides = [
        f"name={kind}",
        f"output={store.rstrip('/')}/prepared",
        f"sources.0.kind={kind}",
        f"sources.0.uri={raw}",
        *(f"sizes.{m.value}=[{w},{h}]" for m, (w, h) in sizes.items()),
        *routed["prepare"],
    ]
    return prepare(load_config(PrepareConfig, None, overrides)).corpus_uri


def _evaluate_on_cluster(evaluate: Any, config: Any) -> Any:
    """The evaluation job as one Ray task, on a GPU when the cluster has one.

    The driver needs no GPU of its own: reserving one for it (`--entrypoint-num-gpus`) would leave an
    8-GPU cluster one short of the 8 training workers. Training has released every GPU by now.
    """
    import ray

    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return ray.get(ray.remote(num_gpus=gpus, max_retries=0)(evaluate).remote(config))


def _cluster() -> str:
    """What the Ray cluster holds: the accelerators the figures were trained on."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    kinds = sorted(
        k.removeprefix("accelerator_type:") for k in resources if k.startswith("accelerator_type:")
    )
    gpu_text = f"{gpus} GPU" + (f" ({', '.join(kinds)})" if kinds else "") if gpus else "no GPU"
    return f"Ray cluster: {gpu_text}, {int(resources.get('CPU', 0))} CPU"


def real_report(
    *,
    dataset: str,
    corpus_uri: str,
    phase1: Any,
    phase2: Any,
    runs: dict[str, PhaseRun],
    result: Any,
    one_percent: str,
    prepare_seconds: float | None,
    cluster: str,
) -> str:
    """The docs/benchmarks.md body: the recipe as run, this run's table, then the published references."""
    spec = phase1.encoder
    backbone = (
        f"{spec.backbone} (pretrained: {spec.pretrained})" if spec is not None else f"init {phase1.init}"
    )
    lines = []
    for phase, config in zip(PHASES, (phase1, phase2), strict=True):
        run, optimizer, batching = runs[phase], config.optimizer, config.batching.mode
        lines.append(
            f"- phase {phase[-1]}: {', '.join(run.modalities)}; {run.steps} steps of {config.batch_size} x"
            f" {config.scaling.workers} workers = {config.batch_size * config.scaling.workers} pairs, lr"
            f" {optimizer.lr:g} (warm-up {optimizer.warmup_steps}, cosine), batches: {batching};"
            f" {run.seconds:.0f} s" + (" (already trained: reused)" if run.already_done else "")
        )
    prepared = f" (prepared here in {prepare_seconds:.0f} s)" if prepare_seconds is not None else ""
    intro = "\n".join(
        [
            f"Dataset `{dataset}`, corpus `{corpus_uri}`{prepared}; {cluster}. The recipe:"
            f" jobs/configs/train_phase1.yaml and train_phase2.yaml (every number's source is in their"
            f" comments) with the overrides in the command. Encoder {backbone}.",
            "",
            *lines,
        ]
    )
    rows = [
        [m, result.query_counts[m], result.gallery_size, *(f"{v[k]:.2f}" for k in METRICS)]
        for m, v in sorted(result.metrics.items())
    ]
    this_run = markdown_table(["query modality", "queries", "gallery tiles", *METRICS], rows)
    measured = set(result.metrics)
    refs = [
        [
            r.source,
            r.task,
            r.modality,
            *(f"{r.metrics[k]:.2f}" if k in r.metrics else "not reported" for k in METRICS),
        ]
        for r in PUBLISHED
        if r.modality in measured
    ]
    parts = [
        intro,
        f"**This run**: phase 2's encoder on the corpus's held-out test split, in percent (exact search;"
        f" R@1% by the `{one_percent}` convention; chance R@1 {result.chance_r1:.2f} %).",
        this_run,
    ]
    if refs:
        parts += [
            "**Published references (not this run)**, in percent: other code on other machines, on the"
            " datasets' own test protocols. Comparable only when this corpus's test split is that"
            " protocol's (the University-1652 adapter keeps the official test folders).",
            markdown_table(["source", "task", "modality", *METRICS], refs),
        ]
    return "\n\n".join(parts)
