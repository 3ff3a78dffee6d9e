"""Scoring of GLEAM-X answers without Ray: given answers and labels, the numbers per group, the flags
(beats baseline, too few), MLflow's names, the worst cases' order, the table and the confusion matrix."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from rich.console import Console

from gleam.explain.evaluate.plots import confusion_matrix, confusion_png
from gleam.explain.evaluate.report import evaluation_table
from gleam.explain.evaluate.result import ExplainerEvaluation
from gleam.explain.evaluate.scoring import (
    BASELINE,
    MLLM,
    Answer,
    RationaleScore,
    compare,
    flat_metrics,
    rationale_scores,
    score_groups,
    worst_cases,
)
from gleam.explain.metrics import char_bleu, char_rouge_l, corpus_char_bleu, verdict_counts

PAIRS = {  # pair_id -> (modality, label, reference en, reference zh)
    "p1": ("drone", True, "The roads agree.", "道路一致。"),
    "p2": ("drone", False, "The river bends the other way.", None),
    "p3": ("panorama", True, "The facades agree.", "立面一致。"),
}


def answer(
    source: str, pair: str, language: str, verdict: bool | None, reasoning: str | None = None
) -> Answer:
    modality, label, en, zh = PAIRS[pair]
    return Answer(
        source=source,
        pair_id=pair,
        query_id=f"q-{pair}",
        tile_id=f"t-{pair}",
        modality=modality,
        language=language,
        label=label,
        similarity=0.5,
        reference=en if language == "en" else zh,
        parsed=verdict is not None or source == BASELINE,
        verdict=verdict,
        reasoning=reasoning,
        raw=None if source == BASELINE else f"model text {pair}-{language}",
    )


# (answer, its rationale score): the scores are given, so the aggregation is checked on its own
ANSWERS = [
    (answer(MLLM, "p1", "en", True, "The roads agree."), RationaleScore(1.0, 100.0, 1.0)),  # right
    (answer(MLLM, "p1", "zh", None), RationaleScore(0.0, 0.0, None)),  # unparsed
    (answer(MLLM, "p2", "en", True, "Same place."), RationaleScore(0.1, 5.0, 0.4)),  # false positive
    (answer(MLLM, "p2", "zh", False, "河流不同。"), RationaleScore(None, None, None)),  # right, no reference
    (answer(MLLM, "p3", "en", False, "No."), RationaleScore(0.2, 1.0, 0.2)),  # false negative
    (answer(MLLM, "p3", "zh", True, "立面相同。"), RationaleScore(0.3, 9.0, None)),  # right
    (answer(BASELINE, "p1", "en", True, "sim"), RationaleScore(0.2, 1.0, 0.3)),
    (answer(BASELINE, "p1", "zh", True, "相似"), RationaleScore(0.1, 1.0, None)),
    (answer(BASELINE, "p2", "en", False, "sim"), RationaleScore(0.2, 1.0, 0.3)),
    (answer(BASELINE, "p2", "zh", False, "相似"), RationaleScore(None, None, None)),
    (answer(BASELINE, "p3", "en", None, "uncalibrated"), RationaleScore(0.0, 0.0, 0.1)),  # no verdict
    (answer(BASELINE, "p3", "zh", None, "未校准"), RationaleScore(0.0, 0.0, None)),
]
ANSWER_LIST = [a for a, _ in ANSWERS]
SCORES = [s for _, s in ANSWERS]


@pytest.fixture(scope="module")
def groups():
    return {(g.source, g.modality, g.language): g for g in score_groups(ANSWER_LIST, SCORES, 2, ["en", "zh"])}


def test_per_group_verdict_metrics_by_hand(groups) -> None:
    drone_en = groups[MLLM, "drone", "en"].metrics()  # TP + FP
    assert drone_en["accuracy"] == 0.5 and drone_en["precision"] == 0.5 and drone_en["recall"] == 1.0
    assert drone_en["f1"] == pytest.approx(2 / 3) and drone_en["parse_rate"] == 1.0
    drone_zh = groups[MLLM, "drone", "zh"].metrics()  # unparsed match + TN
    assert drone_zh["accuracy"] == 0.5 and drone_zh["precision"] is None and drone_zh["recall"] == 0.0
    assert drone_zh["f1"] == 0.0 and drone_zh["parse_rate"] == 0.5 and drone_zh["verdict_rate"] == 0.5
    overall = groups[MLLM, "all", "all"]  # TP 2, FP 1, TN 1, FN 1, one unparsed match
    assert overall.counts == verdict_counts(
        [True, True, False, False, True, True], [True, None, True, False, False, True], [1, 0, 1, 1, 1, 1]
    )
    assert overall.metrics()["accuracy"] == 0.5 and overall.metrics()["f1"] == pytest.approx(4 / 7)
    by_language = groups[MLLM, "all", "en"].metrics()  # p1 TP, p2 FP, p3 FN
    assert by_language["n"] == 3 and by_language["precision"] == 0.5 and by_language["recall"] == 0.5
    baseline = groups[BASELINE, "all", "all"].metrics()  # right on drone, no verdict on panorama
    assert baseline["accuracy"] == pytest.approx(4 / 6) and baseline["parse_rate"] == 1.0
    assert baseline["verdict_rate"] == pytest.approx(4 / 6) and baseline["recall"] == 0.5


def test_rationale_means_skip_answers_without_a_reference(groups) -> None:
    drone_zh = groups[MLLM, "drone", "zh"]  # p2 has no Chinese reference: only p1 counts
    assert drone_zh.references == 1 and drone_zh.rouge_l == 0.0 and drone_zh.minilm is None
    assert drone_zh.char_bleu == 0.0  # the unparsed answer is an empty candidate
    drone_all = groups[MLLM, "drone", "all"]
    assert drone_all.references == 3 and drone_all.rouge_l == pytest.approx((1.0 + 0.0 + 0.1) / 3)
    assert drone_all.minilm == pytest.approx((1.0 + 0.4) / 2)  # English answers only
    pooled = corpus_char_bleu(
        ["The roads agree.", None, "Same place."], [PAIRS["p1"][2], "道路一致。", PAIRS["p2"][2]]
    )
    assert drone_all.char_bleu == pytest.approx(pooled)


def test_groups_with_too_few_answers_are_flagged_not_dropped(groups) -> None:
    assert groups[MLLM, "panorama", "en"].too_few and groups[MLLM, "panorama", "en"].counts.n == 1
    assert not groups[MLLM, "drone", "en"].too_few
    assert len(groups) == 2 * 3 * 3  # both sources x (drone, panorama, all) x (en, zh, all)


def test_beats_baseline_flags_are_strict_and_none_when_undefined(groups) -> None:
    beats = compare(list(groups.values()))
    assert beats["panorama", "zh"]["accuracy"] is True  # 1.0 vs the baseline's no verdict (0.0)
    assert beats["panorama", "en"]["accuracy"] is False  # 0.0 vs 0.0: a tie does not beat
    assert beats["panorama", "en"]["precision"] is None  # neither said "match"
    assert beats["drone", "en"]["f1"] is False  # 2/3 vs the baseline's 1.0
    assert beats["drone", "en"]["minilm"] is True  # 0.7 vs 0.3
    assert beats["drone", "zh"]["minilm"] is None  # no English answer


def test_flat_metric_names_and_values(groups) -> None:
    flat = flat_metrics(list(groups.values()), compare(list(groups.values())))
    assert flat["mllm.drone.en.f1"] == pytest.approx(2 / 3)
    assert flat["baseline.all.all.accuracy"] == pytest.approx(4 / 6)
    assert flat["mllm.all.all.n"] == 6.0 and flat["mllm.all.all.parsed"] == 5.0
    assert flat["beats.panorama.zh.accuracy"] == 1.0 and flat["beats.drone.en.f1"] == 0.0
    assert "mllm.drone.zh.precision" not in flat and "beats.panorama.en.precision" not in flat  # undefined


def test_worst_cases_wrong_first_then_lowest_rationale_similarity() -> None:
    worst = worst_cases(ANSWER_LIST, SCORES, 6)
    order = [(w.pair_id, w.language) for w in worst]
    # wrong: p1/zh (unparsed, ROUGE-L 0.0), p3/en (MiniLM 0.2), p2/en (MiniLM 0.4);
    # right: p3/zh (ROUGE-L 0.3), p1/en (MiniLM 1.0), p2/zh (no reference: last)
    assert order == [("p1", "zh"), ("p3", "en"), ("p2", "en"), ("p3", "zh"), ("p1", "en"), ("p2", "zh")]
    first = worst[0]
    assert first.verdict is None and not first.parsed and first.answer == "model text p1-zh"  # raw text
    assert first.baseline_verdict is True and first.reference == "道路一致。" and first.label is True
    assert worst[1].answer == "No." and worst[1].rationale_similarity == 0.2
    assert len(worst_cases(ANSWER_LIST, SCORES, 2)) == 2 and worst_cases(ANSWER_LIST, SCORES, 0) == []


def test_rationale_scores_in_chinese_need_no_sentence_encoder() -> None:
    chinese = [a for a in ANSWER_LIST if a.language == "zh"]
    scores = rationale_scores(chinese)
    for item, score in zip(chinese, scores, strict=True):
        if item.reference is None:
            assert score == RationaleScore(None, None, None)
        else:
            assert score.rouge_l == char_rouge_l(item.reasoning or "", item.reference)
            assert score.char_bleu == char_bleu(item.reasoning or "", item.reference)
            assert score.minilm is None and score.similarity == score.rouge_l
    assert scores[2].rouge_l == pytest.approx(2 * 3 / 10)  # 立面相同 vs 立面一致: LCS 立面。 of 5 and 5


def test_the_table_shows_flags_notes_and_undefined_values(groups) -> None:
    result = ExplainerEvaluation(
        run_id=None,
        explanation_set="/sets/x",
        split="test",
        languages=["en", "zh"],
        model={"requested": "models:/gleam-x@champion", "pinned": "models:/gleam-x/3"},
        pairs=3,
        answered_pairs=3,
        groups=list(groups.values()),
        beats=compare(list(groups.values())),
        worst=worst_cases(ANSWER_LIST, SCORES, 3),
        min_pairs=2,
    )
    assert result.too_few == [("panorama", "en"), ("panorama", "zh")]
    console = Console(record=True, width=260)
    console.print(evaluation_table(result))
    text = console.export_text()
    assert "models:/gleam-x/3" in text and "too few pairs to say anything (n=1 < 2)" in text
    assert "▲ 1.000" in text  # panorama/zh accuracy beats the baseline
    panorama_zh = next(line for line in text.splitlines() if "panorama" in line and " zh " in line)
    assert " - " in panorama_zh  # precision without any "match" answer is not 0


def test_confusion_matrix_layout_and_png(groups) -> None:
    counts = groups[MLLM, "all", "all"].counts
    assert confusion_matrix(counts).tolist() == [[2, 1, 1], [1, 1, 0]]  # rows truth, last column unparsed
    png = confusion_png(
        [("MLLM", counts, "unparsed"), ("baseline", groups[BASELINE, "all", "all"].counts, "none")], "t"
    )
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > image.height > 100
