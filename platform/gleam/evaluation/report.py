"""An evaluation result as a terminal table, with chance next to every modality."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from gleam.evaluation.evaluate import EvaluationResult


def metrics_table(result: EvaluationResult, ks: Sequence[int] = (1, 5, 10)) -> Table:
    table = Table(title=f"{result.split} split: {result.gallery_size} tiles in the gallery")
    names = [f"R@{k}" for k in ks] + ["R@1%", "AP"]
    for column in ["modality", "queries", *names, "chance R@1"]:
        table.add_column(column, justify="left" if column == "modality" else "right")
    for modality, metrics in result.metrics.items():
        values = [f"{metrics[name]:.2f}" for name in names]
        table.add_row(modality, str(result.query_counts[modality]), *values, f"{result.chance_r1:.2f}")
    return table
