# ruff: noqa: RUF001  (Chinese text uses full-width punctuation on purpose)
"""Read an MLLM's answer: the JSON object the prompt asked for, found leniently, never made up.

Models wrap JSON in ``` fences, add a sentence before or after it, use single quotes, leave trailing
commas, answer "yes"/"是" instead of true, or give confidence as 85 or "85%". All of that is read. What is
not read is never guessed: without a JSON object carrying a recognisable "match", the answer is
`parsed=False` with match/confidence/reasoning None, the model's text in `raw` and the reason in `error`.

Whatever the reading changed is said, never done silently: a confidence read as a percentage ("85%",
or 85 -> 0.85) or clamped into [0, 1], and a field dropped because it is unusable, each leave a sentence in
`notes` (the explanation's `notes`); dropped fields are also named in `error`, as before.

Where to look, in order: each fenced block, then each balanced `{...}` object in the text (a brace
counter that skips braces inside quoted strings). Each candidate is tried with `json.loads`, then with
single quotes turned into double quotes and trailing commas dropped. The first candidate that decodes
to an object with a usable "match" wins.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\n?(.*?)```", re.DOTALL)
_MAX_CANDIDATE_CHARS = 20_000

TRUE_WORDS = frozenset({"true", "yes", "y", "match", "same", "是", "是的", "对", "匹配", "相同", "一致"})
FALSE_WORDS = frozenset(
    {"false", "no", "n", "no match", "different", "否", "不是", "不", "不匹配", "不同", "不一致"}
)


@dataclass(frozen=True)
class ParsedAnswer:
    """What the model said. With parsed=True, `error` may still name a field that was dropped.

    `notes`: every change the reading made to what the model wrote (rescaled, clamped, dropped).
    """

    match: bool | None
    confidence: float | None
    reasoning: str | None
    parsed: bool
    raw: str
    error: str | None = None
    notes: tuple[str, ...] = ()


def parse_answer(text: str) -> ParsedAnswer:
    """The model's text -> ParsedAnswer; see the module docstring for what is tolerated."""
    if not isinstance(text, str):
        return ParsedAnswer(None, None, None, False, str(text), f"expected text, got {type(text).__name__}")
    if not text.strip():
        return ParsedAnswer(None, None, None, False, text, "empty answer")
    objects = 0
    last_problem = "no JSON object found"
    for candidate in _candidates(text):
        data = _decode(candidate)
        if not isinstance(data, dict):
            continue
        objects += 1
        fields = {str(k).strip().lower(): v for k, v in data.items()}
        if "match" not in fields:
            last_problem = "the JSON object has no 'match' field"
            continue
        match = as_match(fields["match"])
        if match is None:
            last_problem = f"'match' is {fields['match']!r}, not a yes/no value"
            continue
        dropped: list[str] = []
        changed: list[str] = []
        confidence = None
        if fields.get("confidence") is not None:
            confidence, change = read_confidence(fields["confidence"])
            if confidence is None:
                dropped.append(f"confidence {fields['confidence']!r} is not a number: dropped")
            elif change:
                changed.append(change)
        reasoning = fields.get("reasoning")
        if reasoning is not None and not isinstance(reasoning, str):
            dropped.append(f"reasoning of type {type(reasoning).__name__} is not text: dropped")
            reasoning = None
        if isinstance(reasoning, str):
            if not reasoning.strip():
                changed.append("reasoning is blank: dropped")
            reasoning = reasoning.strip() or None
        notes = (*changed, *dropped)
        return ParsedAnswer(match, confidence, reasoning, True, text, "; ".join(dropped) or None, notes)
    if objects == 0:
        last_problem = "no JSON object found"
    return ParsedAnswer(None, None, None, False, text, last_problem)


def as_match(value: Any) -> bool | None:
    """true/false, 1/0, or a yes/no word in English or Chinese -> bool; anything else -> None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().strip(".。!！").lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    return None


def as_confidence(value: Any) -> float | None:
    """0.85, 85, "0.85", "85%" -> 0.85, clamped to [0, 1]; a number above 1 is read as a percentage."""
    return read_confidence(value)[0]


def read_confidence(value: Any) -> tuple[float | None, str | None]:
    """(`as_confidence(value)`, a sentence saying how it was rescaled or clamped, or None if it was not)."""
    if isinstance(value, bool):
        return None, None
    percent = False
    if isinstance(value, str):
        word = value.strip()
        if word.endswith(("%", "％")):
            percent, word = True, word[:-1].strip()
        try:
            number = float(word)
        except ValueError:
            return None, None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        return None, None
    if not math.isfinite(number):
        return None, None
    said = f"confidence {value!r}"
    rescaled = percent or number > 1.0
    if rescaled:
        said += " read as a percentage" if percent else " is above 1, read as a percentage"
        number /= 100.0
    clamped = min(1.0, max(0.0, number))
    if clamped != number:
        said += f" ({number:g}), then clamped into [0, 1]" if rescaled else " is clamped into [0, 1]"
    elif not rescaled:
        return clamped, None
    return clamped, f"{said}: {clamped:g}"


# --- finding candidates ----------------------------------------------------------------------------------


def _candidates(text: str) -> Iterator[str]:
    for fenced in _FENCE.findall(text):
        yield fenced.strip()
        yield from _objects(fenced)
    yield from _objects(text)


def _objects(text: str) -> Iterator[str]:
    """Every balanced {...} substring, outermost first, in order; braces inside strings do not count."""
    start = text.find("{")
    while start != -1:
        end = _balanced_end(text, start)
        if end is not None:
            yield text[start : end + 1]
            start = text.find("{", end + 1)
        else:
            start = text.find("{", start + 1)


def _balanced_end(text: str, start: int) -> int | None:
    depth, quote, escaped = 0, "", False
    for i in range(start, min(len(text), start + _MAX_CANDIDATE_CHARS)):
        char = text[i]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _decode(candidate: str) -> Any:
    if len(candidate) > _MAX_CANDIDATE_CHARS:
        return None
    for attempt in (candidate, _relax(candidate)):
        try:
            return json.loads(attempt)
        except (json.JSONDecodeError, RecursionError):
            continue
    return None


def _relax(candidate: str) -> str:
    """Single-quoted strings -> double-quoted; trailing commas before } or ] removed (outside strings)."""
    out: list[str] = []
    quote, escaped = "", False
    for char in candidate:
        if quote:
            if escaped:
                escaped = False
                if char == "'":
                    out[-1] = "'"  # \' -> ' : an apostrophe needs no escape in a JSON string
                else:
                    out.append(char)
                continue
            if char == "\\":
                escaped = True
                out.append(char)
            elif char == quote:
                quote = ""
                out.append('"')
            elif char == '"' and quote == "'":
                out.append('\\"')
            else:
                out.append(char)
        elif char in "\"'":
            quote = char
            out.append('"')
        elif char in "}]":
            while out and out[-1].isspace():
                out.pop()
            if out and out[-1] == ",":
                out.pop()
            out.append(char)
        else:
            out.append(char)
    return "".join(out)
