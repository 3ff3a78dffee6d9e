# ruff: noqa: RUF001  (Chinese answers use full-width punctuation on purpose)
"""Reading MLLM answers: lenient about the wrapping, strict about never inventing a value."""

from __future__ import annotations

import pytest

from gleam.explain.parse import as_confidence, as_match, parse_answer


def test_plain_json_object() -> None:
    text = '{"match": true, "confidence": 0.9, "reasoning": "Same junction and roofs."}'
    answer = parse_answer(text)
    assert answer.parsed and answer.error is None
    assert (answer.match, answer.confidence, answer.reasoning) == (True, 0.9, "Same junction and roofs.")
    assert answer.raw == text


def test_fenced_block_with_text_around_it() -> None:
    text = (
        "Let me compare the two images.\n```json\n"
        '{"match": false, "confidence": 0.7, "reasoning": "The river is missing {sic}."}\n'
        "```\nI hope this helps!"
    )
    answer = parse_answer(text)
    assert answer.parsed and answer.match is False and answer.confidence == 0.7
    assert answer.reasoning == "The river is missing {sic}."  # braces inside a string are text


def test_object_inside_prose_without_fence() -> None:
    text = 'Answer: {"match": "yes", "confidence": "85%", "reasoning": "道路布局一致。"} Done.'
    answer = parse_answer(text)
    assert answer.parsed and answer.match is True and answer.confidence == pytest.approx(0.85)
    assert answer.reasoning == "道路布局一致。"


def test_a_non_answer_object_before_the_answer_is_skipped() -> None:
    text = 'The format is {like this}. {"note": 1} then {"match": "否", "confidence": 30, "reasoning": "x"}'
    answer = parse_answer(text)
    assert answer.parsed and answer.match is False and answer.confidence == pytest.approx(0.3)


def test_single_quotes_and_trailing_commas() -> None:
    answer = parse_answer("{'match': 'no', 'confidence': 0.4, 'reasoning': 'the road\\'s bend differs',}")
    assert answer.parsed and answer.match is False and answer.confidence == 0.4
    assert answer.reasoning == "the road's bend differs"
    answer = parse_answer('{"match": true, "confidence": 1, "reasoning": "ok", }')
    assert answer.parsed and answer.match is True and answer.confidence == 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("yes", True),
        ("No", False),
        ("true", True),
        ("FALSE", False),
        ("是", True),
        ("否", False),
        ("不匹配", False),
        (1, True),
        (0, False),
        ("maybe", None),
        (0.5, None),
        (None, None),
        (2, None),
    ],
)
def test_match_values(value: object, expected: bool | None) -> None:
    assert as_match(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.85, 0.85),
        (85, 0.85),
        ("85%", 0.85),
        ("0.6", 0.6),
        ("60 ％", 0.6),
        (1, 1.0),
        (0, 0.0),
        (250, 1.0),  # a percentage above 100: clamped
        (-0.2, 0.0),
        ("high", None),
        (True, None),
        (float("nan"), None),
        (None, None),
    ],
)
def test_confidence_values(value: object, expected: float | None) -> None:
    got = as_confidence(value)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_missing_or_bad_optional_fields_are_dropped_and_noted_never_invented() -> None:
    answer = parse_answer('{"match": true}')
    assert answer.parsed and answer.match is True and answer.confidence is None and answer.reasoning is None
    answer = parse_answer('{"Match": "no", "confidence": "very", "reasoning": ["a", "b"]}')
    assert answer.parsed and answer.match is False  # keys are case-insensitive
    assert answer.confidence is None and answer.reasoning is None
    assert "confidence" in answer.error and "reasoning" in answer.error
    answer = parse_answer('{"match": true, "confidence": 0.5, "reasoning": "   "}')
    assert answer.reasoning is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("The images show the same place with high confidence.", "no JSON object"),
        ('{"match": "probably", "confidence": 0.9}', "'match' is 'probably'"),
        ('{"confidence": 0.9, "reasoning": "roads"}', "no 'match' field"),
        ('{"match": true, "confidence": 0.9', "no JSON object"),  # never closed
        ("[true, 0.9]", "no JSON object"),
        ("gro相���+XB�置C��^ints�置C", "no JSON object"),  # what random weights say
    ],
)
def test_unparseable_answers_are_flagged_with_the_raw_text(text: str, why: str) -> None:
    answer = parse_answer(text)
    assert not answer.parsed
    assert answer.match is None and answer.confidence is None and answer.reasoning is None
    assert answer.raw == text and why in answer.error


def test_answer_is_frozen() -> None:
    answer = parse_answer('{"match": true}')
    with pytest.raises(AttributeError):
        answer.match = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("confidence", "value", "said"),
    [
        ('"85%"', 0.85, "confidence '85%' read as a percentage: 0.85"),
        ("85", 0.85, "confidence 85 is above 1, read as a percentage: 0.85"),
        ("250", 1.0, "confidence 250 is above 1, read as a percentage (2.5), then clamped into [0, 1]: 1"),
        ("-0.2", 0.0, "confidence -0.2 is clamped into [0, 1]: 0"),
    ],
)
def test_a_rescaled_or_clamped_confidence_is_said_in_the_notes(
    confidence: str, value: float, said: str
) -> None:
    answer = parse_answer(f'{{"match": true, "confidence": {confidence}, "reasoning": "roads"}}')
    assert answer.parsed and answer.confidence == pytest.approx(value)
    assert answer.notes == (said,)
    assert answer.error is None  # read, not dropped: nothing failed


def test_a_confidence_taken_as_written_leaves_no_note_and_a_dropped_field_leaves_one() -> None:
    for written in ("0.85", '"0.85"', "1", "0"):
        assert parse_answer(f'{{"match": false, "confidence": {written}}}').notes == ()
    answer = parse_answer('{"match": true, "confidence": "very", "reasoning": "  "}')
    assert answer.confidence is None and answer.reasoning is None
    assert answer.notes == ("reasoning is blank: dropped", "confidence 'very' is not a number: dropped")
