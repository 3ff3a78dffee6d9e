"""Answers -> numbers: per source, modality and language (and pooled), the flags, and the worst cases.

Pure: no Ray, no MLflow. The job feeds it the MLLM's answers and the evidence baseline's answers on the
same (pair, language)s; the tests feed it hand-made answers. The metrics are `gleam.explain.metrics`'s.

- Verdicts: accuracy, precision, recall, F1 (positive = match), parse rate and verdict rate; an answer
  without a verdict (unparsed, or evidence that gives none) counts as wrong (`VerdictCounts`).
- Rationales, against the set's reference in the answer's language: mean character ROUGE-L and corpus
  character BLEU (both languages), mean MiniLM cosine (English answers only). A missing or unparsed
  reasoning scores 0 against its reference; an answer without a reference is left out of these means.
- `rationale_similarity` of one answer: the MiniLM cosine in English, the character ROUGE-L in Chinese
  (the issue's "sentence encoder for English, character-level measure for Chinese").
- A group with fewer than `min_pairs` answers is flagged `too_few`: its numbers are shown, not trusted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gleam.explain.metrics import (
    VerdictCounts,
    char_bleu,
    char_rouge_l,
    corpus_char_bleu,
    sentence_similarity,
    verdict_counts,
)

MLLM = "mllm"
BASELINE = "baseline"
ALL = "all"
SOURCES = (MLLM, BASELINE)
EMBEDDED_LANGUAGE = "en"  # all-MiniLM-L6-v2 is an English model
# metrics on which the MLLM is compared with the baseline (parse rate is not: evidence always parses)
COMPARED = ("accuracy", "precision", "recall", "f1", "rouge_l", "char_bleu", "minilm")


@dataclass(frozen=True)
class Answer:
    """One answer about one (pair, language), from the MLLM or the evidence baseline, with its reference."""

    source: str
    pair_id: str
    query_id: str
    tile_id: str
    modality: str
    language: str
    label: bool  # the ground truth: the query's own tile
    similarity: float  # GLEAM-C cosine of the pair
    reference: str | None  # the set's rationale in this language
    parsed: bool
    verdict: bool | None
    confidence: float | None = None
    reasoning: str | None = None
    raw: str | None = None
    error: str | None = None

    @property
    def right(self) -> bool:
        return self.verdict is not None and self.verdict == self.label

    @property
    def key(self) -> tuple[str, str]:
        return self.pair_id, self.language


@dataclass(frozen=True)
class RationaleScore:
    """One answer's reasoning against its reference; all None when the pair has no reference."""

    rouge_l: float | None
    char_bleu: float | None
    minilm: float | None  # English only

    @property
    def similarity(self) -> float | None:
        """The language's measure: MiniLM cosine in English, character ROUGE-L otherwise."""
        return self.minilm if self.minilm is not None else self.rouge_l


def rationale_scores(answers: Sequence[Answer], device: str = "cpu") -> list[RationaleScore]:
    """Score every answer's reasoning against its reference (MiniLM embeddings in one batched pass)."""
    english = [i for i, a in enumerate(answers) if a.reference and a.language == EMBEDDED_LANGUAGE]
    cosines = sentence_similarity(
        [answers[i].reasoning for i in english], [str(answers[i].reference) for i in english], device=device
    )
    minilm = dict(zip(english, cosines.tolist(), strict=True))
    scores = []
    for i, answer in enumerate(answers):
        if not answer.reference:
            scores.append(RationaleScore(None, None, None))
            continue
        reasoning = answer.reasoning or ""
        scores.append(
            RationaleScore(
                char_rouge_l(reasoning, answer.reference),
                char_bleu(reasoning, answer.reference),
                minilm.get(i),
            )
        )
    return scores


@dataclass(frozen=True)
class GroupScore:
    """The numbers of one source on one (modality, language) group; ALL pools modalities or languages."""

    source: str
    modality: str
    language: str
    counts: VerdictCounts
    references: int  # answers with a reference rationale
    rouge_l: float | None
    char_bleu: float | None
    minilm: float | None
    too_few: bool

    @property
    def key(self) -> tuple[str, str]:
        return self.modality, self.language

    def metrics(self) -> dict[str, float | None]:
        counts = self.counts
        return {
            "n": float(counts.n),
            "parsed": float(counts.parsed),
            "verdict_rate": counts.verdicts / counts.n if counts.n else None,
            **counts.metrics(),
            "rouge_l": self.rouge_l,
            "char_bleu": self.char_bleu,
            "minilm": self.minilm,
        }


def score_groups(
    answers: Sequence[Answer],
    rationale: Sequence[RationaleScore],
    min_pairs: int,
    languages: Sequence[str] | None = None,
) -> list[GroupScore]:
    """Every source x (each modality, ALL) x (each language, ALL) that has answers, in a stable order."""
    if len(answers) != len(rationale):
        raise ValueError(f"{len(answers)} answers but {len(rationale)} rationale scores")
    modalities = [*sorted({a.modality for a in answers}), ALL]
    present = {a.language for a in answers}
    ordered = [lang for lang in (languages or sorted(present)) if lang in present]
    groups = []
    for source in SOURCES:
        for modality in modalities:
            for language in [*ordered, ALL]:
                members = [
                    i
                    for i, a in enumerate(answers)
                    if a.source == source and modality in (ALL, a.modality) and language in (ALL, a.language)
                ]
                if members:
                    groups.append(_group(source, modality, language, answers, rationale, members, min_pairs))
    return groups


def _group(
    source: str,
    modality: str,
    language: str,
    answers: Sequence[Answer],
    rationale: Sequence[RationaleScore],
    members: list[int],
    min_pairs: int,
) -> GroupScore:
    chosen = [answers[i] for i in members]
    counts = verdict_counts(
        [a.label for a in chosen], [a.verdict for a in chosen], [a.parsed for a in chosen]
    )
    referenced = [i for i in members if answers[i].reference]
    embedded = [rationale[i].minilm for i in referenced if rationale[i].minilm is not None]
    return GroupScore(
        source=source,
        modality=modality,
        language=language,
        counts=counts,
        references=len(referenced),
        rouge_l=_mean([rationale[i].rouge_l for i in referenced]),
        char_bleu=(
            corpus_char_bleu(
                [answers[i].reasoning for i in referenced], [str(answers[i].reference) for i in referenced]
            )
            if referenced
            else None
        ),
        minilm=_mean(embedded),
        too_few=counts.n < min_pairs,
    )


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return math.fsum(present) / len(present) if present else None


def compare(groups: Sequence[GroupScore]) -> dict[tuple[str, str], dict[str, bool | None]]:
    """(modality, language) -> metric -> does the MLLM beat the baseline (strictly)? None: not comparable."""
    baseline = {g.key: g.metrics() for g in groups if g.source == BASELINE}
    beats: dict[tuple[str, str], dict[str, bool | None]] = {}
    for group in groups:
        if group.source != MLLM or group.key not in baseline:
            continue
        mine, theirs = group.metrics(), baseline[group.key]
        beats[group.key] = {name: _beats(mine[name], theirs[name]) for name in COMPARED}
    return beats


def _beats(mine: float | None, theirs: float | None) -> bool | None:
    return None if mine is None or theirs is None else mine > theirs


def flat_metrics(
    groups: Sequence[GroupScore], beats: dict[tuple[str, str], dict[str, bool | None]]
) -> dict[str, float]:
    """MLflow's names: `mllm.drone.en.f1`, `baseline.all.zh.rouge_l`, `beats.drone.en.f1` (1/0).

    A metric that is undefined (None: no answer said "match", no English answer, ...) is left out, not 0.
    """
    flat: dict[str, float] = {}
    for group in groups:
        for name, value in group.metrics().items():
            if value is not None:
                flat[f"{group.source}.{group.modality}.{group.language}.{name}"] = float(value)
    for (modality, language), flags in beats.items():
        for name, flag in flags.items():
            if flag is not None:
                flat[f"beats.{modality}.{language}.{name}"] = 1.0 if flag else 0.0
    return flat


@dataclass(frozen=True)
class WorstCase:
    """A row of the worst-cases table: the MLLM's answer next to the reference and the baseline's verdict."""

    query_id: str
    tile_id: str
    pair_id: str
    modality: str
    language: str
    label: bool
    verdict: bool | None
    parsed: bool
    baseline_verdict: bool | None
    similarity: float
    rationale_similarity: float | None
    reference: str | None
    answer: str | None  # the reasoning when parsed, else the model's raw text
    error: str | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def worst_cases(
    answers: Sequence[Answer], rationale: Sequence[RationaleScore], count: int
) -> list[WorstCase]:
    """The MLLM's `count` worst answers: wrong verdicts (no verdict included) first, then the lowest
    rationale similarity (an answer without a reference last in its block), then pair and language."""
    baseline = {a.key: a.verdict for a in answers if a.source == BASELINE}
    mine = [(a, r) for a, r in zip(answers, rationale, strict=True) if a.source == MLLM]

    def order(item: tuple[Answer, RationaleScore]) -> tuple[bool, bool, float, str, str]:
        answer, score = item
        similarity = score.similarity
        return (answer.right, similarity is None, similarity or 0.0, answer.pair_id, answer.language)

    rows = []
    for answer, score in sorted(mine, key=order)[:count]:
        rows.append(
            WorstCase(
                query_id=answer.query_id,
                tile_id=answer.tile_id,
                pair_id=answer.pair_id,
                modality=answer.modality,
                language=answer.language,
                label=answer.label,
                verdict=answer.verdict,
                parsed=answer.parsed,
                baseline_verdict=baseline.get(answer.key),
                similarity=answer.similarity,
                rationale_similarity=score.similarity,
                reference=answer.reference,
                answer=answer.reasoning if answer.parsed else answer.raw,
                error=answer.error,
            )
        )
    return rows
