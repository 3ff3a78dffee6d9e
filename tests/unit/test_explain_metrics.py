# ruff: noqa: RUF001  (Chinese text uses full-width punctuation and spaces on purpose)
"""GLEAM-X's metrics on inputs computed by hand: character ROUGE-L and BLEU (Chinese and English alike,
whitespace ignored), MiniLM sentence similarity, and verdict counts where no verdict counts as wrong."""

from __future__ import annotations

import math
import random

import pytest

from gleam.explain.metrics import (
    char_bleu,
    char_rouge_l,
    corpus_char_bleu,
    lcs_length,
    sentence_encoder,
    sentence_similarity,
    verdict_counts,
)


def dynamic_lcs(a: str, b: str) -> int:
    """The textbook O(len(a) * len(b)) table, to check the bit-parallel version against."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def word_rouge_l(candidate: str, reference: str) -> float:
    """What a word-level ROUGE-L does: LCS over whitespace-separated words."""
    a, b = candidate.split(), reference.split()
    return 2.0 * lcs_length(a, b) / (len(a) + len(b)) if a and b else 0.0


# --- ROUGE-L over characters ------------------------------------------------------------------------------


def test_char_rouge_l_on_chinese_by_hand() -> None:
    # 道路布局一致 (6) is a subsequence of 道路的布局一致 (7): P = 6/6, R = 6/7, F1 = 2 * 6 / (6 + 7)
    assert char_rouge_l("道路布局一致", "道路的布局一致") == pytest.approx(12 / 13, abs=1e-12)
    assert char_rouge_l("道路的布局一致", "道路布局一致") == pytest.approx(12 / 13, abs=1e-12)  # symmetric
    assert char_rouge_l("河流弯曲", "河流弯曲") == 1.0
    assert char_rouge_l("河流", "道路") == 0.0


def test_char_rouge_l_on_english_by_hand() -> None:
    # "theroad" (7) and "aroad" (5): the LCS is "road" (4), F1 = 2 * 4 / 12
    assert char_rouge_l("the road", "a road") == pytest.approx(2 / 3, abs=1e-12)


def test_all_whitespace_is_removed_before_comparing() -> None:
    spaced = "道路 布局\t一致\n"
    full_width = "道路的\u3000布局一致"  # the ideographic space U+3000
    assert char_rouge_l(spaced, full_width) == pytest.approx(12 / 13, abs=1e-12)
    assert char_rouge_l("the  road\n", "a\troad") == pytest.approx(2 / 3, abs=1e-12)


@pytest.mark.parametrize(("candidate", "reference"), [("", "道路"), ("道路", ""), ("  \n", "道路"), ("", "")])
def test_an_empty_string_scores_zero(candidate: str, reference: str) -> None:
    assert char_rouge_l(candidate, reference) == 0.0
    assert char_bleu(candidate, reference) == 0.0


def test_a_word_level_measure_scores_chinese_zero_this_one_does_not() -> None:
    candidate, reference = "道路布局一致，所以是同一个地点。", "道路的布局一致，因此是同一地点。"
    assert word_rouge_l(candidate, reference) == 0.0  # one "word" each, and they differ
    assert char_rouge_l(candidate, reference) > 0.7
    english = ("the road layout agrees", "the road layout and roofs agree")
    assert word_rouge_l(*english) > 0.0  # on English both see the overlap
    assert char_rouge_l(*english) > 0.0


def test_bit_parallel_lcs_equals_the_dynamic_programming_table() -> None:
    rng = random.Random(7)
    for _ in range(300):
        a = "".join(rng.choice("ab道路c") for _ in range(rng.randint(0, 40)))
        b = "".join(rng.choice("ab道路c") for _ in range(rng.randint(0, 40)))
        assert lcs_length(a, b) == dynamic_lcs(a, b), (a, b)
    assert lcs_length("x" * 300, "x" * 200) == 200  # longer than one machine word


# --- BLEU over characters ---------------------------------------------------------------------------------


def test_sentence_char_bleu_by_hand() -> None:
    # 道路布局一致 vs 道路的布局一致: n-gram precisions 6/6, 4/5, 2/4, 1/3; brevity exp(1 - 7/6)
    expected = 100 * math.exp(1 - 7 / 6) * (1 * 4 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert char_bleu("道路布局一致", "道路的布局一致") == pytest.approx(expected, abs=1e-9)
    assert char_bleu("道路 布局\n一致", "道路的\u3000布局一致") == pytest.approx(expected, abs=1e-9)
    assert char_bleu("道路布局一致", "道路布局一致") == pytest.approx(100.0)


def test_corpus_char_bleu_pools_the_counts_by_hand() -> None:
    # pair 1 as above; pair 2 identical (河流: one 1-gram, one 2-gram): precisions 8/8, 5/6, 2/4, 1/3,
    # hypothesis length 8, reference length 9
    expected = 100 * math.exp(1 - 9 / 8) * (1 * 5 / 6 * 2 / 4 * 1 / 3) ** 0.25
    score = corpus_char_bleu(["道路布局一致", "河流"], ["道路的布局一致", "河流"])
    assert score == pytest.approx(expected, abs=1e-9)
    assert corpus_char_bleu([None], ["道路"]) == 0.0  # a missing answer matches nothing
    with pytest.raises(ValueError, match="2 candidates but 1 references"):
        corpus_char_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        corpus_char_bleu([], [])


# --- MiniLM sentence similarity (English) -----------------------------------------------------------------


def test_sentence_similarity_ranks_paraphrases_above_unrelated_text() -> None:
    reference = "The road layout and the red roofs north of the junction agree."
    scores = sentence_similarity(
        [
            reference,
            "The junction's road layout matches, and so do the red roofs to its north.",
            "A cat is sleeping on the sofa.",
            None,
            "   ",
        ],
        [reference] * 5,
    )
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores[1] > 0.6 > scores[2]
    assert scores[3] == 0.0 and scores[4] == 0.0  # no text, no similarity
    single = sentence_similarity(["A cat is sleeping on the sofa."], [reference])
    assert single[0] == pytest.approx(scores[2], abs=1e-5)  # batching does not change a score
    assert sentence_encoder() is sentence_encoder()  # loaded once per process


# --- verdicts ---------------------------------------------------------------------------------------------


def test_verdict_counts_by_hand_with_unparsed_answers_counted_wrong() -> None:
    labels = [True, True, True, False, False, False]
    verdicts = [True, False, None, True, False, None]  # None: unparsed
    parsed = [True, True, False, True, True, False]
    counts = verdict_counts(labels, verdicts, parsed)
    assert (counts.true_positive, counts.false_negative, counts.missed_matches) == (1, 1, 1)
    assert (counts.false_positive, counts.true_negative, counts.missed_non_matches) == (1, 1, 1)
    assert counts.n == 6 and counts.parsed == 4 and counts.verdicts == 4
    assert counts.accuracy == pytest.approx(2 / 6)  # the two unparsed answers are wrong
    assert counts.precision == pytest.approx(1 / 2)  # ... but said no "match"
    assert counts.recall == pytest.approx(1 / 3)  # the unparsed true match is missed
    assert counts.f1 == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert counts.parse_rate == pytest.approx(4 / 6)


def test_undefined_ratios_are_none_never_zero_or_invented() -> None:
    nothing_said = verdict_counts([True, False], [None, None], [False, False])
    assert nothing_said.precision is None and nothing_said.recall == 0.0 and nothing_said.f1 == 0.0
    assert nothing_said.accuracy == 0.0 and nothing_said.parse_rate == 0.0
    no_matches = verdict_counts([False, False], [False, False], [True, True])
    assert no_matches.recall is None and no_matches.precision is None and no_matches.f1 is None
    assert no_matches.accuracy == 1.0
    empty = verdict_counts([], [], [])
    assert empty.accuracy is None and empty.parse_rate is None
    with pytest.raises(ValueError, match="2 labels, 1 verdicts"):
        verdict_counts([True, False], [True], [True, True])
