"""Is a teacher's answer usable data? Accepted with its reasoning, or a reject with a reason.

Read with `gleam.explain.parse.parse_answer` (the same lenient reader the Explainer uses), then:
nothing usable -> UNPARSEABLE; a verdict other than the label it was told -> CONTRADICTS_LABEL (the
teacher disagrees with the ground truth, so its words would argue for the wrong answer); no reasoning
-> EMPTY_REASONING; a reasoning not in the language asked for -> WRONG_LANGUAGE (Chinese without any
Chinese character, English mostly in Chinese characters). Nothing is repaired or filled in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gleam.explain.explanation_set import ExplainRejectReason
from gleam.explain.parse import parse_answer

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class Checked:
    """`reasoning` when accepted; otherwise `reason` and a one-line `detail`."""

    reasoning: str | None
    reason: ExplainRejectReason | None = None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.reason is None


def check_answer(text: str, label: bool, language: str) -> Checked:
    """The teacher's raw text for a pair whose ground truth is `label`, asked in `language`."""
    parsed = parse_answer(text)
    if not parsed.parsed:
        return Checked(None, ExplainRejectReason.UNPARSEABLE, f"{parsed.error}: {_excerpt(text)}")
    if parsed.match is not label:
        said = "a match" if parsed.match else "no match"
        truth = "a match" if label else "no match"
        return Checked(
            None, ExplainRejectReason.CONTRADICTS_LABEL, f"the teacher said {said}, the label is {truth}"
        )
    if not parsed.reasoning:
        return Checked(
            None, ExplainRejectReason.EMPTY_REASONING, parsed.error or "no reasoning in the answer"
        )
    problem = language_problem(parsed.reasoning, language)
    if problem:
        return Checked(None, ExplainRejectReason.WRONG_LANGUAGE, problem)
    return Checked(parsed.reasoning)


def language_problem(reasoning: str, language: str) -> str | None:
    """Why `reasoning` is not written in `language` ("en" or "zh"), or None when it is."""
    han, latin = len(_HAN.findall(reasoning)), len(_LATIN.findall(reasoning))
    if language == "zh" and han == 0:
        return f"asked for Chinese, got no Chinese characters: {_excerpt(reasoning)}"
    if language == "en" and han > latin:
        return f"asked for English, got mostly Chinese characters: {_excerpt(reasoning)}"
    return None


def _excerpt(text: str, limit: int = 120) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
