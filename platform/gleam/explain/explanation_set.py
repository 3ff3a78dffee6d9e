"""The GLEAM-X explanation set: its Arrow schemas, its layout in the store, and how to read it.

One row is one (query view, satellite tile) pair with its label and a rationale per language:
`jobs/explain_data.py` writes it, `jobs/finetune_explainer.py` trains on it and
`jobs/evaluate_explainer.py` scores against it. Images are not copied: `query_id` and `tile_id` point
into the prepared corpus the manifest names (`corpus`), so the set is small and a corpus fix reaches it.

Layout under `<output>/<name>/` (as corpora are laid out, docs/explain.md):

    pairs/part-*.parquet   accepted rows (PAIRS_SCHEMA), only the files the manifest lists count
    rejects/part-*.parquet pairs whose rationale was refused, with the reason (REJECTS_SCHEMA)
    cache/                 the teacher's answers keyed by (pair, prompt, teacher): a re-run never pays twice
    review/                exports for human revision, and what was imported back
    manifest.json          written last: the data contract, the counts, the corpus and index it came from

The manifest (`gleam.explain.dataset.job` builds it): `schema_version`, `name`, `config_hash`, `corpus`
(URI), `index` ({store, name, version, encoder: {uri, queries_embedded_with, fingerprint}}),
`calibration` and `spread` (the index's meta.json values, verbatim), `quality` (the index's pooled
quality, `gleam.index.calibrate.index_quality`), `evidence` (per modality: the threshold, calibration
used, fitted confidence and quality the served evidence answer would use;
`gleam.index.calibrate.evidence_facts`), `teacher`, `languages`, `data` (columns of each part), `files`
({pairs, rejects}: names under each part), `counts` ({pairs, by_split, by_split_modality_match, rejects,
teacher, review, ...}) and `reviews`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from gleam import storage
from gleam.errors import RefusedError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
LANGUAGE_COLUMNS = {"en": "reasoning_en", "zh": "reasoning_zh"}


def pair_id(query_id: str, tile_id: str) -> str:
    """The stable id of a (query, tile) pair: the same pair has the same id in every set and run."""
    return hashlib.sha256(f"{query_id}\0{tile_id}".encode()).hexdigest()[:16]


class Review(str, Enum):
    """Where a row's rationale stands with human reviewers."""

    NONE = "none"  # the teacher's words, not yet reviewed
    APPROVED = "approved"  # exported, read by a person and imported back unchanged
    REVISED = "revised"  # exported and edited by a person: the edited words replace the teacher's


class ExplainRejectReason(str, Enum):
    """Stable reason codes for pairs left out of the set; counted in the manifest."""

    UNPARSEABLE = "unparseable"  # the teacher's answer holds no usable JSON
    CONTRADICTS_LABEL = "contradicts_label"  # the teacher's verdict is not the ground truth it was told
    EMPTY_REASONING = "empty_reasoning"  # parsed, but no rationale
    TEACHER_UNAVAILABLE = "teacher_unavailable"  # timeouts / 429 / 5xx outlasted the retries (not cached)
    MISSING_IMAGE = "missing_image"  # the query or tile is not in the corpus any more
    WRONG_LANGUAGE = "wrong_language"  # the rationale is not written in the language it was asked in


PAIRS_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),  # stable: sha of (query_id, tile_id)
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("match", pa.bool_(), nullable=False),  # the ground truth: the query's own tile
        pa.field("rank", pa.int32(), nullable=False),  # 1-based rank of this tile in the query's search
        pa.field("similarity", pa.float32(), nullable=False),  # GLEAM-C cosine of the pair
        pa.field("split", pa.string(), nullable=False),  # the query's split (negatives share it)
        pa.field("reasoning_en", pa.string()),
        pa.field("reasoning_zh", pa.string()),
        pa.field("teacher", pa.string(), nullable=False),  # who wrote the rationale: "<kind>:<model>"
        pa.field("review", pa.string(), nullable=False),  # a Review value
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("match", pa.bool_(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("language", pa.string(), nullable=False),  # the language whose answer was refused
        pa.field("reason", pa.string(), nullable=False),  # an ExplainRejectReason value
        pa.field("detail", pa.string(), nullable=False),
        pa.field("teacher", pa.string(), nullable=False),
    ]
)

PARTS = {"pairs": PAIRS_SCHEMA, "rejects": REJECTS_SCHEMA}


class ExplanationSetNotReady(RefusedError, RuntimeError):
    """No manifest.json: the set was never built, or its job is still running or crashed."""


@dataclass(frozen=True)
class ExplanationSet:
    """A complete explanation set: only the files its manifest lists are part of it."""

    uri: str
    manifest: dict[str, Any]

    @property
    def corpus_uri(self) -> str:
        return str(self.manifest["corpus"])

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The index's calibration (meta.json, verbatim): what the GLEAM-C baseline is scored with."""
        return self.manifest.get("calibration")

    def evidence_facts(self, modality: str) -> dict[str, Any] | None:
        """What the served evidence answer uses for `modality` (threshold, calibration_used,
        confidence_model, quality), as recorded when the set was built; None for sets without it."""
        return (self.manifest.get("evidence") or {}).get(modality)

    def files(self, part: str) -> list[str]:
        if part not in PARTS:
            raise ValueError(f"unknown explanation-set part {part!r}; expected one of {sorted(PARTS)}")
        return [storage.join(self.uri, part, name) for name in self.manifest["files"].get(part, [])]

    def read(self, part: str = "pairs", filter: Any = None) -> pa.Table:
        """The part's rows (an empty table with the schema when the manifest lists no file)."""
        files = self.files(part)
        if not files:
            return PARTS[part].empty_table()
        fs, _ = storage.resolve(self.uri)
        dataset = pads.dataset(
            [storage.resolve(f)[1] for f in files], filesystem=fs, format="parquet", schema=PARTS[part]
        )
        return dataset.to_table(filter=filter)


def open_explanation_set(uri: str) -> ExplanationSet:
    uri = storage.normalize(uri)
    manifest_uri = storage.join(uri, MANIFEST)
    if not storage.exists(manifest_uri):
        raise ExplanationSetNotReady(
            f"no complete explanation set at {uri}: manifest.json is missing (run `gleam explain-data`)"
        )
    return ExplanationSet(uri, storage.read_json(manifest_uri))
