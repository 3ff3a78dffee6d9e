"""`gleam evaluate-explainer` end to end on the shared Ray cluster: a tiny prepared world, an explanation set
written in the store layout with an index-shaped calibration, and a real tiny Qwen2.5-VL from the registry
(random weights: every answer is unparsed, and counted as wrong). The MLflow run must hold the metrics
(parse rate, baseline figures equal to the same scoring in-process), the confusion matrix and the worst
cases; a taught copy then answers two pairs with JSON through the pool's actor class, and the parsed
path gives the numbers by hand."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import typer
import yaml
from PIL import Image
from typer.testing import CliRunner

from gleam.config import TrackingConfig
from gleam.corpus.reader import open_corpus
from gleam.explain.evaluate.answers import baseline_answers, mllm_answers, pair_evidence, set_evidence_facts
from gleam.explain.evaluate.inference import PAIR_COLUMNS, PairExplainer
from gleam.explain.evaluate.pairs import select_pairs
from gleam.explain.evaluate.scoring import BASELINE, flat_metrics, rationale_scores, score_groups, worst_cases
from gleam.explain.explanation_set import open_explanation_set
from gleam.explain.metrics import char_rouge_l
from gleam.explain.mllm import MLLMConfig, folder_fingerprint, register_mllm
from gleam.explain.prompts import build_messages
from gleam.index.calibrate import calibrate_pairs, evidence_facts, index_quality
from gleam_cli.evaluate_explainer import evaluate_explainer
from tests.support.explanation_sets import pairs_from_corpus, write_explanation_set
from tests.support.tiny_vlm import build_tiny_qwen25vl, teach_tiny_vlm
from tests.support.training import world_corpus

LANGUAGES = ["en", "zh"]
LIMIT = 4  # pairs per modality: 2 matches, 2 non-matches


@pytest.fixture(scope="module")
def world(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 6-place world, a set of its drone and streetmap pairs (all in `test`), and the tiny model."""
    import numpy as np

    root = tmp_path_factory.mktemp("explain-eval")
    corpus = world_corpus(root / "world", locations=6)
    rows = [{**r, "split": "test"} for r in pairs_from_corpus(corpus, ["drone", "streetmap"])]
    rng = np.random.default_rng(0)
    overall, by_modality = calibrate_pairs(  # the shape of an index's meta.json calibration
        {
            "drone": (rng.normal(0.8, 0.05, 30), rng.normal(0.3, 0.05, 30)),
            "streetmap": (rng.normal(0.7, 0.05, 4), rng.normal(0.4, 0.05, 4)),  # pooled: too few
        }
    )
    calibration = {**overall, "split": "val", "queries": 34, "by_modality": by_modality}
    explanation_set = write_explanation_set(root / "set", corpus, rows, calibration)
    record_index_facts(Path(explanation_set), {"collapsed": False, "mean_cosine": 0.3, "effective_rank": 9.0})
    model = build_tiny_qwen25vl(root / "tiny-qwen")
    return {"root": root, "corpus": corpus, "set": explanation_set, "model": model}


def record_index_facts(folder: Path, spread: dict) -> None:
    """Add to the manifest what `gleam explain-data` records from the index: meta.json's spread, the pooled
    quality, and per modality the facts the served evidence answer uses (the calibration once)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    meta = {"calibration": manifest["calibration"], "spread": spread}
    manifest["spread"], manifest["quality"] = spread, index_quality(spread, manifest["calibration"])
    manifest["evidence"] = {
        m: {k: v for k, v in evidence_facts(meta, m).items() if k != "calibration"}
        for m in ("drone", "streetmap")
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def overrides(world: dict, experiment: str, model: str, **extra: object) -> list[str]:
    fields = {
        "explanation_set": world["set"],
        "limit": LIMIT,
        "mllm.model": model,
        "mllm.max_new_tokens": 12,
        "inference.partitions": 1,
        "inference.batch_size": 8,
        "worst_cases": 5,
        "tracking.experiment": experiment,
        **extra,
    }
    return [
        f"{key}={json.dumps(value) if isinstance(value, list) else value}" for key, value in fields.items()
    ]


def test_evaluate_explainer_logs_metrics_baseline_and_artifacts(
    world: dict, mlflow_client, experiment_name: str
):
    name = f"gleam-x-test-{uuid.uuid4().hex[:6]}"
    register_mllm(
        world["model"], name=name, alias="challenger", tracking=TrackingConfig(experiment=experiment_name)
    )
    config_file = world["root"] / "evaluate.yaml"
    config_file.write_text(yaml.safe_dump({"explanation_set": world["set"]}))
    app = typer.Typer()
    app.command()(evaluate_explainer)
    sets = overrides(world, experiment_name, f"models:/{name}@challenger")
    outcome = CliRunner().invoke(
        app, ["--config", str(config_file), *(a for s in sets for a in ("--set", s))]
    )
    assert outcome.exit_code == 0, outcome.output
    assert "too few pairs to say anything" in outcome.output and "MLflow run:" in outcome.output

    (run,) = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name(experiment_name).experiment_id],
        "tags.`gleam.job` = 'evaluate-explainer'",
    )
    metrics, tags = run.data.metrics, run.data.tags
    assert tags["gleam.mllm"] == f"models:/{name}/1"  # the alias pinned to one version on the driver
    assert tags["gleam.mllm_fingerprint"] == folder_fingerprint(world["model"])
    pairs, answers = 2 * LIMIT, 2 * LIMIT * len(LANGUAGES)
    assert metrics["pairs"] == metrics["answered_pairs"] == pairs and metrics["missing_images"] == 0
    # random weights: nothing parses, and every unparsed answer counts as wrong
    assert metrics["mllm.all.all.n"] == answers and metrics["mllm.all.all.parse_rate"] == 0.0
    assert metrics["mllm.all.all.accuracy"] == 0.0 and metrics["mllm.all.all.recall"] == 0.0
    assert "mllm.all.all.precision" not in metrics  # never said "match": undefined, not 0
    assert metrics["mllm.drone.zh.rouge_l"] == 0.0 and metrics["mllm.drone.en.minilm"] == 0.0

    # the baseline's numbers are exactly what the same scoring gives in-process on the same pairs
    explanation_set = open_explanation_set(world["set"])
    rows = select_pairs(explanation_set, "test", None, LIMIT).to_pylist()
    facts = {m: set_evidence_facts(explanation_set, m) for m in ("drone", "streetmap")}
    baseline = baseline_answers(rows, LANGUAGES, facts)
    groups = score_groups(baseline, rationale_scores(baseline), 30, LANGUAGES)
    expected = flat_metrics(groups, {})
    assert expected and all(k.startswith(BASELINE) for k in expected)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    assert metrics["baseline.all.all.accuracy"] == 1.0  # 0.8 vs 0.3 around a threshold near 0.55
    assert metrics["beats.all.all.accuracy"] == 0.0 and metrics["beats.drone.en.rouge_l"] == 0.0

    artifacts = Path(mlflow_client.download_artifacts(run.info.run_id, "", str(world["root"] / "artifacts")))
    picture = Image.open(artifacts / "confusion_matrix.png")
    assert picture.format == "PNG" and picture.width > picture.height
    summary = json.loads((artifacts / "evaluation.json").read_text())
    assert summary["too_few"] == [
        f"{m}.{lang}" for m in ("drone", "streetmap", "all") for lang in (*LANGUAGES, "all")
    ]
    table = json.loads((artifacts / "worst_cases.json").read_text())
    worst = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert len(worst) == 5 and all(w["verdict"] is None and not w["parsed"] for w in worst)
    assert {"query_id", "tile_id", "reference", "answer", "similarity"} <= set(worst[0])
    assert pq.read_table(artifacts / "worst_cases.parquet").num_rows == 5
    every = pq.read_table(artifacts / "answers.parquet").to_pylist()
    assert len(every) == 2 * answers and sum(a["source"] == "mllm" for a in every) == answers
    assert all(a["raw"] for a in every if a["source"] == "mllm")  # the model's own words are kept

    # a taught copy answers two English drone pairs in JSON, one right, one wrong, through the pool's actor
    # class in this process (a second Ray run would add nothing but time): the parsed path, numbers by hand
    chosen = select_pairs(explanation_set, "test", ["drone"], 2).to_pylist()  # a match, then a non-match
    corpus = open_corpus(world["corpus"])
    images = {}
    for part, key in (("queries", "query_id"), ("tiles", "tile_id")):
        wanted = {pair[key] for pair in chosen}
        images.update(
            {i[key]: i["image"] for i in corpus.read(part, [key, "image"]).to_pylist() if i[key] in wanted}
        )
    said = [  # right (the reference itself), then wrong with another rationale
        json.dumps({"match": True, "confidence": 0.9, "reasoning": chosen[0]["reasoning_en"]}),
        json.dumps({"match": True, "confidence": 0.6, "reasoning": "The roads agree."}),
    ]
    lessons = [
        (
            build_messages("drone", "en", pair_evidence(pair, facts["drone"]).scores()),
            [Image.open(io.BytesIO(images[pair[key]])).convert("RGB") for key in ("query_id", "tile_id")],
            answer,
        )
        for pair, answer in zip(chosen, said, strict=True)
    ]
    taught = teach_tiny_vlm(world["model"], world["root"] / "taught", lessons)
    threads = torch.get_num_threads()
    try:
        actor = PairExplainer(
            MLLMConfig(model=str(taught), max_new_tokens=64).model_dump(mode="json"),
            True,
            ["en"],
            facts,
            {},
            1,
        )
        batch = [
            {
                **{k: pair[k] for k in PAIR_COLUMNS},
                "query_image": images[pair["query_id"]],
                "tile_image": images[pair["tile_id"]],
            }
            for pair in chosen
        ]
        output = actor(pa.Table.from_pylist(batch)).to_pylist()
    finally:
        torch.set_num_threads(threads)
    assert [o["raw"] for o in output] == said and all(o["parsed"] for o in output)
    answers = [*mllm_answers(chosen, output), *baseline_answers(chosen, ["en"], facts)]
    scores = rationale_scores(answers)
    (mine,) = [
        g for g in score_groups(answers, scores, 2, ["en"]) if g.key == ("drone", "en") and g.source == "mllm"
    ]
    assert mine.counts.parsed == 2 and mine.counts.true_positive == 1 and mine.counts.false_positive == 1
    assert mine.metrics()["accuracy"] == 0.5 and mine.metrics()["precision"] == 0.5
    assert mine.metrics()["recall"] == 1.0 and not mine.too_few
    second = char_rouge_l("The roads agree.", chosen[1]["reasoning_en"])
    assert mine.rouge_l == pytest.approx((1.0 + second) / 2)
    right = next(i for i, a in enumerate(answers) if a.source == "mllm" and a.pair_id == chosen[0]["pair_id"])
    assert (
        scores[right].minilm == pytest.approx(1.0, abs=1e-5) and scores[right].rouge_l == 1.0
    )  # the reference
    worst = worst_cases(answers, scores, 5)
    assert [w.pair_id for w in worst] == [chosen[1]["pair_id"], chosen[0]["pair_id"]]  # wrong first
