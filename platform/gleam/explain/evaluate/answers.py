"""The two sources' answers on the same pairs, as `scoring.Answer`s: the MLLM's and the evidence baseline's.

The baseline is what GLEAM-X says without an MLLM (`gleam.explain.evidence.evidence_answer`): GLEAM-C's
similarity against the calibrated threshold of the index the set was built from, with that index's
fitted confidence and quality, exactly as served. Its evidence is the pair's similarity and rank from
the set plus the index's facts for the modality, which the set's manifest records (`evidence`, computed
with `gleam.index.calibrate.evidence_facts` when the set was built, next to the index's `calibration`).
The margin to the other candidates is not in the set, so it is unknown (None), for the MLLM's prompt and
the baseline's sentence alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gleam.errors import RefusedError
from gleam.explain.evaluate.scoring import BASELINE, MLLM, Answer
from gleam.explain.evidence import Evidence, evidence_answer
from gleam.explain.explanation_set import LANGUAGE_COLUMNS, ExplanationSet

# Evidence's fields that come from the index (gleam.index.calibrate.evidence_facts' keys); the manifest
# records them per modality, the calibration once for all
FACT_KEYS = ("modality", "threshold", "calibration", "calibration_used", "confidence_model", "quality")


class NoEvidenceFactsError(RefusedError, LookupError):
    """The set does not record what the served evidence answer used for a modality: no baseline."""


def set_evidence_facts(explanation_set: ExplanationSet, modality: str) -> dict[str, Any]:
    """Evidence's index fields for `modality`, as the set's manifest recorded them when it was built."""
    recorded = explanation_set.evidence_facts(modality)
    if recorded is None:
        raise NoEvidenceFactsError(
            f"explanation set {explanation_set.uri} records no evidence facts for {modality} (the index's "
            "threshold, fitted confidence and quality the baseline is scored with); rebuild it with "
            "`gleam explain-data`"
        )
    facts = {**recorded, "calibration": explanation_set.calibration}
    if set(facts) != set(FACT_KEYS) or facts["modality"] != modality:
        raise NoEvidenceFactsError(
            f"explanation set {explanation_set.uri}: the evidence facts recorded for {modality} have the "
            f"keys {sorted(facts)} (modality {facts.get('modality')!r}); expected {sorted(FACT_KEYS)}"
        )
    return facts


def pair_evidence(row: Mapping[str, Any], facts: Mapping[str, Any]) -> Evidence:
    """GLEAM-C's view of one pair of the set: its similarity and rank, and the index's facts."""
    return Evidence(similarity=float(row["similarity"]), rank=int(row["rank"]), **facts)


def reference(row: Mapping[str, Any], language: str) -> str | None:
    text = row.get(LANGUAGE_COLUMNS[language])
    return text if isinstance(text, str) and text.strip() else None


def _answer(row: Mapping[str, Any], language: str, source: str, **said: Any) -> Answer:
    return Answer(
        source=source,
        pair_id=row["pair_id"],
        query_id=row["query_id"],
        tile_id=row["tile_id"],
        modality=row["modality"],
        language=language,
        label=bool(row["match"]),
        similarity=float(row["similarity"]),
        reference=reference(row, language),
        **said,
    )


def baseline_answers(
    rows: Sequence[Mapping[str, Any]], languages: Sequence[str], facts: Mapping[str, Mapping[str, Any]]
) -> list[Answer]:
    """The evidence answer for every (pair, language): `facts` maps a modality to its index facts."""
    answers = []
    for row in rows:
        evidence = pair_evidence(row, facts[row["modality"]])
        for language in languages:
            said = evidence_answer(evidence, language)
            answers.append(
                _answer(
                    row,
                    language,
                    BASELINE,
                    parsed=said.parsed,
                    verdict=said.match,
                    confidence=said.confidence,
                    reasoning=said.reasoning,
                )
            )
    return answers


def mllm_answers(rows: Sequence[Mapping[str, Any]], said: Sequence[Mapping[str, Any]]) -> list[Answer]:
    """Join the actor pool's output rows (pair_id, language, parsed, match, ...) with their pairs."""
    by_id = {row["pair_id"]: row for row in rows}
    return [
        _answer(
            by_id[s["pair_id"]],
            s["language"],
            MLLM,
            parsed=bool(s["parsed"]),
            verdict=s["match"],
            confidence=s["confidence"],
            reasoning=s["reasoning"],
            raw=s["raw"],
            error=s["error"],
        )
        for s in sorted(said, key=lambda s: (s["pair_id"], s["language"]))
    ]
