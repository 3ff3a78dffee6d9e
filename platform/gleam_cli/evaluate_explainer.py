"""`gleam evaluate-explainer`: score GLEAM-X's MLLM on an explanation set against the evidence baseline.

The job is `gleam.explain.evaluate.job.evaluate_explainer`; this command loads the config, runs it and
prints the table, the pairs that could not be scored and the groups too small to say anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gleam.config import load_config
from gleam_cli.guard import ConfigOption, SetOption, console, run_guarded

if TYPE_CHECKING:
    from gleam.explain.evaluate.config import EvaluateExplainerConfig
    from gleam.explain.evaluate.result import ExplainerEvaluation


def evaluate_explainer(
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Evaluate GLEAM-X on an explanation set: verdicts and rationales, MLLM vs the evidence baseline."""
    from gleam.explain.evaluate.config import EvaluateExplainerConfig
    from gleam.explain.evaluate.report import evaluation_table

    cfg = run_guarded(lambda: load_config(EvaluateExplainerConfig, config, set_))
    result = run_guarded(lambda: _run(cfg))  # an error is the last line, after the progress line
    console.print(evaluation_table(result))
    if result.missing_images:
        console.print(
            f"[yellow]{result.missing_images} of {result.pairs} pairs were not scored: their query or tile "
            "image is not in the corpus any more[/]"
        )
    if result.too_few:
        groups = ", ".join(f"{m}/{lang}" for m, lang in result.too_few)
        console.print(
            f"[yellow]too few pairs to say anything (fewer than {result.min_pairs} answers): {groups}[/]"
        )
    console.print(f"MLflow run: {result.run_id or '(tracking disabled)'}")


def _run(cfg: EvaluateExplainerConfig) -> ExplainerEvaluation:
    from gleam.explain.evaluate.job import evaluate_explainer as run_evaluation
    from gleam.explain.explanation_set import open_explanation_set
    from gleam.progress import running

    open_explanation_set(cfg.explanation_set)  # a set that is missing or unfinished: the error alone
    with running(console, f"asking {cfg.mllm.model} about the {cfg.split.value} pairs"):
        return run_evaluation(cfg)
