"""What an explainer evaluation returns, shared by the job and its report table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gleam.explain.evaluate.scoring import MLLM, GroupScore, WorstCase


@dataclass(frozen=True)
class ExplainerEvaluation:
    """Per source/modality/language scores, the MLLM-vs-baseline flags and the worst cases of one run."""

    run_id: str | None
    explanation_set: str
    split: str
    languages: list[str]
    model: dict[str, Any]  # requested, pinned, fingerprint, name, version
    pairs: int  # selected from the set
    answered_pairs: int  # with both images in the corpus (the others are counted, not scored)
    groups: list[GroupScore]
    beats: dict[tuple[str, str], dict[str, bool | None]]
    worst: list[WorstCase]
    min_pairs: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def missing_images(self) -> int:
        return self.pairs - self.answered_pairs

    @property
    def too_few(self) -> list[tuple[str, str]]:
        """(modality, language) groups with fewer than `min_pairs` answers: shown, flagged, not trusted."""
        return [g.key for g in self.groups if g.source == MLLM and g.too_few]

    def group(self, source: str, modality: str, language: str) -> GroupScore | None:
        return next(
            (g for g in self.groups if (g.source, g.modality, g.language) == (source, modality, language)),
            None,
        )
