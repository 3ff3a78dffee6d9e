"""`gleam explain-data` config: which corpus and index, which pairs, which teacher, how to run it.

Everything is checked here, on the driver, before Ray starts: a typo in the teacher block is found
before the first paid request, not after an hour of them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from gleam import storage
from gleam.config import NAME_PATTERN, StrictModel, TrackingConfig
from gleam.corpus.schema import Modality, Split
from gleam.explain.mllm import MLLMConfig
from gleam.explain.prompts import LANGUAGES, normalize_language

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_URL = re.compile(r"^https?://[^\s/]+")
# fields that change how fast or where the job runs, not what it writes: left out of the config hash
RUNTIME_ONLY = {"tracking", "embed", "batch_size"}
TEACHER_RUNTIME_ONLY = {
    "base_url",
    "api_key_env",
    "concurrency",
    "actors",
    "timeout_s",
    "max_retries",
    "backoff_s",
    "max_backoff_s",
    "num_gpus",
    "num_cpus",
}
MLLM_RUNTIME_ONLY = {"device", "cache_dir"}


class IndexRef(StrictModel):
    """A published GLEAM-C index (`gleam index build`): its hard negatives, encoder and calibration."""

    store: str = Field(default_factory=storage.default_store, description="store root the index is under")
    name: str = Field(pattern=NAME_PATTERN)
    version: str | None = Field(None, description="a published version; None: CURRENT when the job starts")

    @field_validator("store")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return storage.normalize(value)


class EmbedSettings(StrictModel):
    """The Ray Data actor pool that embeds the chosen queries with the index's encoder."""

    batch_size: int = Field(64, ge=1, description="queries per forward pass")
    actors: int | None = Field(None, ge=1, description="pool size; default: one per GPU, else 1")
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs per actor; default: 1 when the cluster has any"
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs per actor")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    in_driver_below: int = Field(
        256, ge=0, description="fewer queries than this, and no GPUs: embed in the driver (no actor start-up)"
    )


class OpenAITeacher(StrictModel):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, Azure-compatible gateways, vLLM, ...)."""

    kind: Literal["openai"]
    base_url: str = Field(description="e.g. https://api.openai.com/v1 or http://vllm:8000/v1")
    model: str = Field(min_length=1, description="the endpoint's model name, e.g. gpt-4o")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        pattern=_ENV_NAME,
        description="name of the environment variable holding the key (None: the endpoint needs none)",
    )
    concurrency: int = Field(8, ge=1, le=512, description="requests in flight, over all actors")
    actors: int = Field(1, ge=1, le=64, description="Ray Data actors sharing `concurrency`")
    timeout_s: float = Field(120.0, gt=0, description="per request")
    max_retries: int = Field(
        4, ge=0, le=20, description="on timeouts, 429 and 5xx; then the pair is rejected"
    )
    backoff_s: float = Field(2.0, ge=0, description="first wait before a retry; doubles each time (jittered)")
    max_backoff_s: float = Field(60.0, ge=0)
    max_image_pixels: int = Field(
        1024 * 1024, ge=28 * 28, description="images are downscaled (aspect kept) to at most this many pixels"
    )
    max_tokens: int = Field(512, ge=16, le=16384)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    num_cpus: float = Field(0.25, gt=0, description="CPUs per actor (the work is waiting on the network)")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not _URL.match(value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def identity(self) -> str:
        return f"openai:{self.model}"


class LocalTeacher(StrictModel):
    """A transformers multimodal LLM (gleam.explain.mllm) in a Ray Data actor pool, one per GPU."""

    kind: Literal["local"]
    mllm: MLLMConfig = Field(default_factory=MLLMConfig)
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs per actor; default: 1 when the cluster has any"
    )
    actors: int | None = Field(None, ge=1, description="pool size; default: one per GPU, else 1")
    num_cpus: float = Field(1.0, gt=0, description="CPUs per actor")

    @property
    def identity(self) -> str:
        return f"local:{self.mllm.model}"


Teacher = Annotated[OpenAITeacher | LocalTeacher, Field(discriminator="kind")]
Count = Annotated[int, Field(ge=1)]


class ExplainDataConfig(StrictModel):
    """`jobs/explain_data.py`: a corpus and a published index -> `<output>/<name>/` (manifest last)."""

    name: str = Field(pattern=NAME_PATTERN, description="the set: <output>/<name>/")
    output: str = Field(
        default_factory=lambda: storage.join(storage.default_store(), "explain"),
        description="store URI the set goes under",
    )
    corpus: str = Field(description="store URI of the prepared corpus the index was built from")
    index: IndexRef
    encoder: str | None = Field(
        None,
        description="embed queries with this encoder (it must have the index's fingerprint); "
        "default: the registry version or URI recorded in the index's meta.json",
    )
    splits: list[Split] = Field(default_factory=lambda: [Split.TRAIN, Split.VAL, Split.TEST], min_length=1)
    modalities: list[Modality] | None = Field(None, description="query modalities; None: every one present")
    queries_per_modality: Count | dict[Split, Count] = Field(
        description="queries per modality and split (one number for every split, or one per split); "
        "every modality of a split gets the same count (the smallest available caps them all)"
    )
    negatives_per_query: int = Field(3, ge=0, le=100, description="hard negatives per query")
    languages: list[str] = Field(default_factory=lambda: list(LANGUAGES), min_length=1)
    teacher: Teacher
    batch_size: int = Field(16, ge=1, le=4096, description="pairs per teacher batch")
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    seed: int = Field(0, ge=0)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("output", "corpus")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return storage.normalize(value)

    @field_validator("splits")
    @classmethod
    def _unique_splits(cls, value: list[Split]) -> list[Split]:
        if len(set(value)) != len(value):
            raise ValueError("splits must not repeat")
        return value

    @field_validator("modalities")
    @classmethod
    def _query_modalities(cls, value: list[Modality] | None) -> list[Modality] | None:
        return Modality.checked_queries(value)

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        try:
            languages = [normalize_language(v) for v in value]
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if len(set(languages)) != len(languages):
            raise ValueError("languages must not repeat")
        return languages

    @field_validator("queries_per_modality")
    @classmethod
    def _counts_name_configured_splits(
        cls, value: int | dict[Split, int], info: ValidationInfo
    ) -> int | dict[Split, int]:
        splits = info.data.get("splits")
        if isinstance(value, dict) and splits is not None:
            missing = [s.value for s in splits if s not in value]
            extra = [s.value for s in value if s not in splits]
            if missing or extra:
                raise ValueError(
                    f"must name exactly the splits {[s.value for s in splits]} (missing {missing}, "
                    f"not in splits {extra})"
                )
        return value

    @property
    def set_uri(self) -> str:
        return storage.join(self.output, self.name)

    def queries_for(self, split: Split) -> int:
        counts = self.queries_per_modality
        return counts[split] if isinstance(counts, dict) else counts

    def runtime_only(self) -> dict[str, Any]:
        """What the config hash leaves out (a pydantic `exclude`): how the job runs, not what it writes."""
        teacher: dict[str, Any] = {name: True for name in TEACHER_RUNTIME_ONLY}
        teacher["mllm"] = {name: True for name in MLLM_RUNTIME_ONLY}
        return {name: True for name in RUNTIME_ONLY} | {"teacher": teacher}
