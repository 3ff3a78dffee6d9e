"""Retrieval evaluation for GLEAM-C: metrics in the University-1652 convention (docs/evaluation.md)."""

from gleam.retrieval.metrics import retrieval_metrics

__all__ = ["retrieval_metrics"]
