"""GLEAM-X's answer for one (query, tile) pair: from the MLLM when one is loaded, else from the evidence.

The two sources are never mixed. With an MLLM, its answer is parsed; an answer that cannot be parsed
is returned as such (`parsed=False`, match/confidence/reasoning None, the model's text in `raw`) and
is NOT replaced by the evidence answer: a caller must be able to tell what the model said from what
the platform computed. The evidence itself is attached to every explanation either way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from gleam.explain.evidence import Evidence, evidence_answer
from gleam.explain.explanation import Explanation, as_image_list
from gleam.explain.parse import parse_answer
from gleam.explain.prompts import normalize_language, query_modality

if TYPE_CHECKING:
    from gleam.explain.mllm import MultimodalLLM
    from gleam.model.transforms import ImageInput


class Explainer:
    """Composes the MLLM (optional), the answer parser and the evidence answer."""

    def __init__(self, mllm: MultimodalLLM | None = None, share_evidence: bool = True) -> None:
        """`share_evidence`: quote the encoder's numbers to the MLLM in the prompt (it may weigh them)."""
        self.mllm = mllm
        self.share_evidence = share_evidence

    @property
    def source(self) -> Literal["mllm", "evidence"]:
        return "mllm" if self.mllm is not None else "evidence"

    def explain(
        self,
        query_images: ImageInput | Sequence[ImageInput],
        satellite_image: ImageInput,
        modality: str,
        language: str,
        evidence: Evidence,
    ) -> Explanation:
        """Validate language and modality first (ValueError subclasses), then answer from one source."""
        lang = normalize_language(language)
        mod = query_modality(modality)
        queries = as_image_list(query_images)
        started = time.perf_counter()
        if self.mllm is None:
            answer = evidence_answer(evidence, lang)
            answer.seconds = time.perf_counter() - started
            return answer
        shown = evidence.scores() if self.share_evidence else None
        generation = self.mllm.generate(queries, satellite_image, mod.value, lang, shown)
        parsed = parse_answer(generation.text)
        return Explanation(
            match=parsed.match,
            confidence=parsed.confidence,
            reasoning=parsed.reasoning,
            reasoning_source="mllm",
            parsed=parsed.parsed,
            raw=generation.text,
            language=lang,
            evidence=evidence.to_json(),
            model={
                **self.mllm.info,
                "new_tokens": generation.new_tokens,
                "generate_seconds": generation.seconds,
            },
            seconds=time.perf_counter() - started,
            error=parsed.error,
            notes=[*parsed.notes, *evidence.notes(lang)],
        )
