"""Explainer (GLEAM-X): a multimodal LLM's answer to "same place, and why?", or the evidence alone.

Without a configured MLLM the deployment still answers, from GLEAM-C's evidence (similarity against the
calibrated threshold, rank, margin, heatmap; no verdict when the index's quality says its encoder
cannot tell places apart), and says so in `reasoning_source`; with one, an answer the
model gives in a shape that cannot be parsed is returned flagged, never replaced by an invented one.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from serve.settings import ExplainerSettings


@serve.deployment(
    name="Explainer",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=8,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2},
    health_check_period_s=30,
    health_check_timeout_s=60,
)
class Explainer:
    def __init__(
        self, settings: ExplainerSettings | dict[str, Any], locations: dict[str, str] | None = None
    ) -> None:
        from gleam import runtime_env
        from gleam.explain.explainer import Explainer as GleamX
        from gleam.explain.mllm import MultimodalLLM

        runtime_env.apply(locations)  # the builder's registry and model cache, whatever this replica's folder

        settings = ExplainerSettings.model_validate(settings)
        self.mllm = MultimodalLLM.load(settings.mllm) if settings.mllm is not None else None
        self.gleam_x = GleamX(self.mllm)

    def describe(self) -> dict[str, Any]:
        if self.mllm is None:
            return {"mllm": None, "answers_from": "evidence"}
        return {"mllm": self.mllm.info, "answers_from": "mllm"}

    def explain(
        self,
        query_images: list[bytes],
        satellite: bytes,
        modality: str,
        language: str,
        evidence: dict[str, Any],
    ) -> dict[str, Any]:
        from dataclasses import fields

        from gleam.explain.evidence import Evidence

        known = {field.name for field in fields(Evidence)}  # the encoder's figures and the index's context
        facts = Evidence(**{key: value for key, value in evidence.items() if key in known})
        facts.similarity = float(facts.similarity)
        return self.gleam_x.explain(query_images, satellite, modality, language, facts).to_json()

    def check_health(self) -> None:
        """A faulted GPU raises here, so Serve replaces the replica instead of routing requests to it."""
        if self.mllm is not None and self.mllm.model.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.mllm.model.device)
