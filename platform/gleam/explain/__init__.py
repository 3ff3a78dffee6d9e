"""GLEAM-X: say whether a query view and a satellite tile show the same place, and why.

Two answer sources: a multimodal LLM (`mllm.py`, transformers) asked with the prompts of `prompts.py` and
parsed by `parse.py`, or, without a model, the retrieval encoder's own evidence (`evidence.py`:
calibrated similarity, rank, margin and a feature-agreement heatmap). `explainer.py` composes them.
Nothing heavy is imported here: import the submodule you need.
"""
