"""The explainer evaluation job: ask the MLLM about a split of an explanation set, score it against the
references and against the GLEAM-C evidence answer on the same pairs, log one MLflow run.

Everything a user can get wrong is checked on the driver before Ray starts: the set and its corpus
exist, the split and modalities have pairs, the index facts exist for every modality, the model can be
found (a registry alias is pinned to one version, so every actor loads the same weights even if the
alias moves mid-run; a folder is made absolute). Inference runs on Ray Data (`inference`); the
baseline, which needs no images, and the scoring run on the driver.

The index facts of the baseline (threshold, fitted confidence, quality per modality) are the ones the
set's manifest recorded when it was built (`answers.set_evidence_facts`): the same numbers the service
answers with, and no import of gleam.index, which sits above gleam.explain in the layers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from gleam import registry
from gleam.corpus.reader import open_corpus
from gleam.explain.evaluate.answers import baseline_answers, mllm_answers, set_evidence_facts
from gleam.explain.evaluate.artifacts import log_evaluation
from gleam.explain.evaluate.config import EvaluateExplainerConfig
from gleam.explain.evaluate.inference import ask_mllm
from gleam.explain.evaluate.pairs import NoPairsError, select_pairs
from gleam.explain.evaluate.result import ExplainerEvaluation
from gleam.explain.evaluate.scoring import compare, rationale_scores, score_groups, worst_cases
from gleam.explain.explanation_set import open_explanation_set
from gleam.explain.mllm import MLLMError, MLLMNotFoundError, resolve_source
from gleam.tracking import job_run

JOB = "evaluate-explainer"


def pin_model(model: str, cache_dir: str | None = None) -> str:
    """What every actor loads: models:/name@alias -> models:/name/<version>, a folder -> its absolute
    path, a Hugging Face repo id unchanged (looked up in the local cache here, so absence fails now)."""
    if registry.is_registry_uri(model):
        try:
            return registry.resolve(model).uri
        except registry.ModelNotFoundError as exc:
            raise MLLMNotFoundError(str(exc)) from None
        except registry.RegistryError as exc:
            raise MLLMError(str(exc)) from None
    folder = Path(model).expanduser()
    if folder.is_dir():
        return str(folder.resolve())
    resolve_source(model, cache_dir)  # a missing folder or an uncached repo id: MLLMNotFoundError
    return model


def evaluate_explainer(config: EvaluateExplainerConfig) -> ExplainerEvaluation:
    """Run the evaluation `config` describes and log it as one MLflow run."""
    import ray

    from gleam.cluster import init_ray

    explanation_set = open_explanation_set(config.explanation_set)  # not ready: RefusedError, before Ray
    corpus = open_corpus(explanation_set.corpus_uri)
    modalities = [m.value for m in config.modalities] if config.modalities is not None else None
    pairs = select_pairs(explanation_set, config.split.value, modalities, config.limit)
    facts = {m: set_evidence_facts(explanation_set, m) for m in sorted(set(pairs["modality"].to_pylist()))}
    pinned = pin_model(config.mllm.model, config.mllm.cache_dir)
    mllm = {**config.mllm.model_dump(mode="json"), "model": pinned}
    if mllm.get("base"):  # an adapter's base, given in the config: pinned the same way
        mllm["base"] = pin_model(mllm["base"], config.mllm.cache_dir)
    if not ray.is_initialized():
        init_ray()
    tags = {"gleam.explanation_set": explanation_set.uri, "gleam.corpus": corpus.uri, "gleam.mllm": pinned}
    with job_run(JOB, config, config.tracking, tags=tags) as run:
        said, stats = ask_mllm(
            pairs, corpus, mllm, config.share_evidence, config.languages, facts, config.inference
        )
        started = time.perf_counter()
        answered = set(said["pair_id"].to_pylist())
        rows = [r for r in pairs.to_pylist() if r["pair_id"] in answered]
        if not rows:
            raise NoPairsError(
                f"none of the {pairs.num_rows} pairs chosen from {explanation_set.uri} has both its query "
                f"and its tile image in the corpus {corpus.uri}: nothing to evaluate"
            )
        answers = [*mllm_answers(rows, said.to_pylist()), *baseline_answers(rows, config.languages, facts)]
        rationale = rationale_scores(answers)
        groups = score_groups(answers, rationale, config.min_pairs, config.languages)
        model = _model(config.mllm.model, pinned, said)
        run.set_tags({"gleam.mllm_fingerprint": model["fingerprint"] or "unknown"})
        run.log_params({"mllm_pinned": pinned, "inference.actors_used": stats.actors})
        result = ExplainerEvaluation(
            run_id=run.run_id,
            explanation_set=explanation_set.uri,
            split=config.split.value,
            languages=list(config.languages),
            model=model,
            pairs=pairs.num_rows,
            answered_pairs=len(rows),
            groups=groups,
            beats=compare(groups),
            worst=worst_cases(answers, rationale, config.worst_cases),
            min_pairs=config.min_pairs,
            seconds={"inference": stats.seconds, "scoring": time.perf_counter() - started},
        )
        log_evaluation(run, result, answers, rationale)
    return result


def _model(requested: str, pinned: str, said: pa.Table) -> dict[str, Any]:
    """Which model answered, as its answers say (one fingerprint for the whole run, or it is a bug)."""
    fingerprints = sorted({f for f in said["model_fingerprint"].to_pylist() if f})
    if len(fingerprints) > 1:
        raise MLLMError(f"the actors loaded different models for {pinned}: fingerprints {fingerprints}")
    names = [n for n in said["model_name"].to_pylist() if n]
    versions = [v for v in said["model_version"].to_pylist() if v is not None]
    return {
        "requested": requested,
        "pinned": pinned,
        "fingerprint": fingerprints[0] if fingerprints else None,
        "name": names[0] if names else None,
        "version": versions[0] if versions else None,
    }
