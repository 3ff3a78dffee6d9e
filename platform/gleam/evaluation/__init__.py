"""Retrieval evaluation for GLEAM-C: metrics in the University-1652 convention (DESIGN.md section 4)."""

from gleam.evaluation.metrics import retrieval_metrics

__all__ = ["retrieval_metrics"]
