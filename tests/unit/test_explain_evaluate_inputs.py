"""What the explainer evaluation feeds its scoring, without Ray: the pairs it picks, the baseline's answers
with the index facts the set's manifest records (as served), its config, and where the model is pinned."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from gleam.config import load_config
from gleam.errors import ConfigError
from gleam.explain.confidence import POOLED
from gleam.explain.evaluate.answers import NoEvidenceFactsError, baseline_answers, set_evidence_facts
from gleam.explain.evaluate.config import EvaluateExplainerConfig
from gleam.explain.evaluate.job import pin_model
from gleam.explain.evaluate.pairs import NoPairsError, select_pairs
from gleam.explain.evidence import Evidence, evidence_answer
from gleam.explain.explanation_set import ExplanationSet, open_explanation_set
from gleam.explain.mllm import MLLMNotFoundError
from gleam.index.calibrate import calibrate_pairs, evidence_facts, index_quality
from tests.support.explanation_sets import pair_id, write_explanation_set


def row(query: str, tile: str, modality: str, match: bool, split: str = "test", similarity: float = 0.8):
    return {
        "pair_id": pair_id(query, tile),
        "query_id": query,
        "tile_id": tile,
        "modality": modality,
        "match": match,
        "rank": 1 if match else 2,
        "similarity": similarity,
        "split": split,
        "reasoning_en": "The roads agree." if match else "The river bends the other way.",
        "reasoning_zh": "道路一致。" if match else None,
        "teacher": "test:fixed",
        "review": "none",
    }


ROWS = [
    *(row(f"d{i}", f"t{i}", "drone", True, similarity=0.9) for i in range(3)),
    *(row(f"d{i}", f"t{i + 1}", "drone", False, similarity=0.2) for i in range(3)),
    row("p0", "t9", "panorama", True, similarity=0.55),
    row("v0", "t5", "drone", True, split="val"),
]


def calibration() -> dict:
    """Shaped like an index's meta.json `calibration`: drone with its own, panorama on the pooled one."""
    rng = np.random.default_rng(0)
    scores = {
        "drone": (rng.normal(0.8, 0.05, 40), rng.normal(0.4, 0.05, 40)),
        "panorama": (rng.normal(0.6, 0.05, 5), rng.normal(0.5, 0.05, 5)),  # too few: pooled
    }
    overall, by_modality = calibrate_pairs(scores)
    return {**overall, "split": "val", "queries": 45, "by_modality": by_modality}


@pytest.fixture(scope="module")
def explanation_set(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("set") / "set"
    return open_explanation_set(write_explanation_set(folder, "/corpus", ROWS, calibration()))


def test_pairs_of_a_split_alternate_matches_and_not_under_a_limit(explanation_set) -> None:
    everything = select_pairs(explanation_set, "test", None, None)
    assert everything.num_rows == 7 and set(everything["split"].to_pylist()) == {"test"}
    limited = select_pairs(explanation_set, "test", ["drone"], 3).to_pylist()
    by_id = sorted(ROWS[:6], key=lambda r: r["pair_id"])
    matches = [r["pair_id"] for r in by_id if r["match"]]
    others = [r["pair_id"] for r in by_id if not r["match"]]
    assert [r["pair_id"] for r in limited] == [matches[0], others[0], matches[1]]
    assert select_pairs(explanation_set, "test", ["drone"], 3) == select_pairs(
        explanation_set, "test", ["drone"], 3
    )
    assert select_pairs(explanation_set, "test", None, 1)["modality"].to_pylist() == ["drone", "panorama"]


def test_a_split_or_modality_without_pairs_is_refused(explanation_set) -> None:
    with pytest.raises(NoPairsError, match="no pairs in split 'train'"):
        select_pairs(explanation_set, "train", None, None)
    with pytest.raises(NoPairsError, match=r"no ground pairs in split 'test' \(it has: drone, panorama\)"):
        select_pairs(explanation_set, "test", ["ground", "drone"], None)
    assert NoPairsError.exit_code == 3


HEALTHY = {"collapsed": False, "mean_cosine": 0.31, "effective_rank": 11.0}
COLLAPSED = {"collapsed": True, "mean_cosine": 0.9999, "effective_rank": 1.2}


def with_index_facts(explanation_set: ExplanationSet, spread: dict) -> ExplanationSet:
    """The set as `gleam explain-data` records its index: meta.json's calibration and spread, the pooled
    quality, and per modality what the served evidence answer uses (the calibration is recorded once)."""
    calibration = explanation_set.manifest["calibration"]
    meta = {"calibration": calibration, "spread": spread}
    evidence = {
        m: {k: v for k, v in evidence_facts(meta, m).items() if k != "calibration"}
        for m in ("drone", "panorama")
    }
    recorded = {"spread": spread, "quality": index_quality(spread, calibration), "evidence": evidence}
    return dataclasses.replace(explanation_set, manifest={**explanation_set.manifest, **recorded})


def test_the_baseline_is_the_served_evidence_answer_with_the_recorded_facts(explanation_set) -> None:
    recorded = with_index_facts(explanation_set, HEALTHY)
    facts = {m: set_evidence_facts(recorded, m) for m in ("drone", "panorama")}
    meta = {"calibration": recorded.manifest["calibration"], "spread": HEALTHY}
    assert facts == {m: evidence_facts(meta, m) for m in ("drone", "panorama")}  # what serving computes
    assert facts["drone"]["calibration_used"] == "drone" and facts["panorama"]["calibration_used"] == POOLED
    rows = select_pairs(explanation_set, "test", None, None).to_pylist()
    answers = baseline_answers(rows, ["en", "zh"], facts)
    assert len(answers) == 2 * len(rows)
    for answer in answers:
        source = next(r for r in rows if r["pair_id"] == answer.pair_id)
        evidence = Evidence(similarity=source["similarity"], rank=source["rank"], **facts[source["modality"]])
        served = evidence_answer(evidence, answer.language)
        assert (answer.verdict, answer.confidence, answer.reasoning) == (
            served.match,
            served.confidence,
            served.reasoning,
        )
        assert answer.source == "baseline" and answer.parsed and answer.label == source["match"]
        assert answer.reference == (
            source["reasoning_en"] if answer.language == "en" else source["reasoning_zh"]
        )
    drone = [a for a in answers if a.modality == "drone"]
    assert all(a.verdict == a.label for a in drone)  # 0.9 vs 0.2 around a threshold near 0.6


def test_a_collapsed_index_gives_the_baseline_no_verdict(explanation_set) -> None:
    facts = set_evidence_facts(with_index_facts(explanation_set, COLLAPSED), "drone")
    (answer, *_) = baseline_answers(
        [row("d0", "t0", "drone", True, similarity=0.99)], ["en"], {"drone": facts}
    )
    assert answer.verdict is None and "cannot tell places apart" in answer.reasoning


def test_a_set_without_recorded_facts_gets_no_made_up_baseline(explanation_set) -> None:
    with pytest.raises(NoEvidenceFactsError, match="records no evidence facts for drone"):
        set_evidence_facts(explanation_set, "drone")  # written with a calibration only
    recorded = with_index_facts(explanation_set, HEALTHY)
    evidence = {
        **recorded.manifest["evidence"],
        "drone": {**recorded.manifest["evidence"]["drone"], "margin": 1},
    }
    changed = dataclasses.replace(recorded, manifest={**recorded.manifest, "evidence": evidence})
    with pytest.raises(NoEvidenceFactsError, match="'margin'"):
        set_evidence_facts(changed, "drone")
    assert NoEvidenceFactsError.exit_code == 3


def test_config_validates_languages_modalities_and_makes_the_set_absolute(tmp_path: Path) -> None:
    config = load_config(
        EvaluateExplainerConfig,
        None,
        ["explanation_set=sets/x", "languages=[EN, zh-CN, en]", "modalities=[drone]", "limit=5"],
    )
    assert config.languages == ["en", "zh"] and config.split.value == "test"
    assert Path(config.explanation_set).is_absolute() and config.mllm.model == "Qwen/Qwen2.5-VL-3B-Instruct"
    for override, problem in (
        ("languages=[fr]", "unsupported language 'fr'"),
        ("modalities=[satellite]", "query modalities only"),
        ("limit=0", "limit"),
        ("worst=3", "worst"),
        ("mllm.temperature=9", "mllm.temperature"),
    ):
        with pytest.raises(ConfigError, match=problem):
            load_config(EvaluateExplainerConfig, None, ["explanation_set=s", override])


def test_the_model_is_pinned_on_the_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    assert pin_model("model") == str(folder.resolve())  # absolute: actors never resolve a relative path
    with pytest.raises(MLLMNotFoundError, match="no model folder"):
        pin_model(str(tmp_path / "absent"))


def test_the_cli_refuses_a_missing_set_in_one_line_before_asking_anything(tmp_path) -> None:
    from typer.testing import CliRunner

    from gleam_cli.main import app

    missing = tmp_path / "no-such-set"
    result = CliRunner().invoke(
        app, ["evaluate-explainer", "--set", f"explanation_set={missing}", "--set", "tracking.enabled=false"]
    )
    assert result.exit_code == 3, result.output
    assert "asking" not in result.output and "Traceback" not in result.output  # no spinner, no Ray
    assert result.output.strip().startswith("error:")
