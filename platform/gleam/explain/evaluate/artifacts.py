"""What an explainer evaluation leaves in its MLflow run, besides the config's params.

- metrics: `scoring.flat_metrics` (`mllm.drone.en.f1`, `baseline.all.all.accuracy`, `beats.drone.en.f1`)
  and the run's counts (`pairs`, `answered_pairs`, `missing_images`, `answers`, `inference_seconds`);
- `evaluation.json`: every group's numbers and confusion counts, the flags, the groups with too few pairs;
- `confusion_matrix.png`: MLLM and baseline side by side over all pairs, the no-verdict column apart;
- `worst_cases.json` (mlflow.log_table, so the MLflow UI shows it as a table) and `worst_cases.parquet`;
- `answers.parquet`: every answer of both sources with its reference and rationale scores (the model's
  raw text included), so any number of the run can be recomputed from the run alone.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gleam.explain.evaluate.plots import confusion_png
from gleam.explain.evaluate.result import ExplainerEvaluation
from gleam.explain.evaluate.scoring import ALL, BASELINE, MLLM, Answer, RationaleScore, flat_metrics
from gleam.tracking import JobRun


def parquet_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(list(rows)), buffer)
    return buffer.getvalue()


def answer_rows(answers: Sequence[Answer], rationale: Sequence[RationaleScore]) -> list[dict[str, Any]]:
    """One row per answer: the answer's fields, then its rationale scores."""
    pairs = zip(answers, rationale, strict=True)
    return [{**asdict(a), **asdict(r), "rationale_similarity": r.similarity} for a, r in pairs]


def summary(result: ExplainerEvaluation) -> dict[str, Any]:
    """evaluation.json: the run's counts, every group (metrics + confusion counts) and the flags."""
    return {
        "explanation_set": result.explanation_set,
        "split": result.split,
        "languages": result.languages,
        "model": result.model,
        "pairs": result.pairs,
        "answered_pairs": result.answered_pairs,
        "missing_images": result.missing_images,
        "min_pairs": result.min_pairs,
        "too_few": [f"{m}.{lang}" for m, lang in result.too_few],
        "groups": [
            {
                "source": g.source,
                "modality": g.modality,
                "language": g.language,
                "too_few": g.too_few,
                "references": g.references,
                "metrics": g.metrics(),
                "counts": asdict(g.counts),
            }
            for g in result.groups
        ],
        "beats_baseline": {f"{m}.{lang}": flags for (m, lang), flags in result.beats.items()},
        "seconds": result.seconds,
    }


def log_evaluation(
    run: JobRun, result: ExplainerEvaluation, answers: Sequence[Answer], rationale: Sequence[RationaleScore]
) -> None:
    """Metrics, evaluation.json, the confusion matrix PNG, the worst cases and every answer."""
    if not run.active:
        return
    import mlflow

    run.log_metrics(
        {
            **flat_metrics(result.groups, result.beats),
            "pairs": result.pairs,
            "answered_pairs": result.answered_pairs,
            "missing_images": result.missing_images,
            "answers": len(answers),
            **{f"seconds.{k}": v for k, v in result.seconds.items()},
        }
    )
    run.set_tags({"gleam.too_few": ",".join(f"{m}.{lang}" for m, lang in result.too_few) or "none"})
    run.log_dict(summary(result), "evaluation.json")
    mine, theirs = result.group(MLLM, ALL, ALL), result.group(BASELINE, ALL, ALL)
    if mine is not None and theirs is not None:
        panels = [("MLLM", mine.counts, "unparsed"), ("evidence baseline", theirs.counts, "no verdict")]
        title = f"{result.split} split, {'/'.join(result.languages)}, {result.answered_pairs} pairs"
        run.log_bytes(confusion_png(panels, title), "confusion_matrix.png")
    worst = [w.to_dict() for w in result.worst]
    if worst:
        mlflow.log_table({key: [row[key] for row in worst] for key in worst[0]}, "worst_cases.json")
        run.log_bytes(parquet_bytes(worst), "worst_cases.parquet")
    run.log_bytes(parquet_bytes(answer_rows(answers, rationale)), "answers.parquet")
