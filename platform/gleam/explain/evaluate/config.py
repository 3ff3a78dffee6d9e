"""`gleam evaluate-explainer` config: which pairs of which explanation set, which MLLM, how to run it."""

from __future__ import annotations

from pydantic import Field, field_validator

from gleam import storage
from gleam.config import StrictModel, TrackingConfig
from gleam.corpus.schema import Modality, Split
from gleam.explain.mllm import MLLMConfig
from gleam.explain.prompts import LANGUAGES, normalize_language


class InferenceConfig(StrictModel):
    """The Ray Data actor pool that asks the MLLM: each actor loads the model once."""

    actors: int | None = Field(None, ge=1, description="pool size; default: one per GPU, else 1")
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs per actor; default: 1 when the cluster has any"
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs per actor (also its torch threads)")
    batch_size: int = Field(
        4, ge=1, description="pairs handed to an actor at a time (each in every language)"
    )
    partitions: int = Field(4, ge=1, description="partitions of the joins of pairs with corpus images")


class EvaluateExplainerConfig(StrictModel):
    """`jobs/evaluate_explainer.py`: ask the MLLM about a split of an explanation set, score it against the
    references and against the GLEAM-C evidence answer on the same pairs."""

    explanation_set: str = Field(
        min_length=1, description="store URI of an explanation set (holds manifest.json)"
    )
    split: Split = Field(Split.TEST, description="pairs of this split")
    languages: list[str] = Field(default_factory=lambda: list(LANGUAGES), description="answer languages")
    modalities: list[Modality] | None = Field(None, description="query modalities; None: all in the split")
    limit: int | None = Field(
        None,
        ge=1,
        description="at most this many pairs per modality (deterministic, matches and not alternate)",
    )
    mllm: MLLMConfig = Field(default_factory=MLLMConfig)
    share_evidence: bool = Field(True, description="quote GLEAM-C's numbers in the prompt, as served")
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    worst_cases: int = Field(20, ge=0, description="rows of the worst-cases table")
    min_pairs: int = Field(
        30, ge=1, description="a modality/language with fewer answers is flagged: too few to say anything"
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("explanation_set")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return storage.normalize(value)  # resolved here, in the driver; workers never resolve paths

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"at least one language ({', '.join(LANGUAGES)})")
        return list(dict.fromkeys(normalize_language(v) for v in value))

    @field_validator("modalities")
    @classmethod
    def _query_modalities(cls, value: list[Modality] | None) -> list[Modality] | None:
        return Modality.checked_queries(value)
