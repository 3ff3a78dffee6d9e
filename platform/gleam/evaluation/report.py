"""An evaluation result as a terminal table, with chance next to every modality.

Through an index, each modality gets three rows: the index, exact search over the same vectors, and
the gap (index minus exact, percentage points), so an approximation's cost reads off one table.
The R@1% column says "R@1% (official)" when University-1652's own convention was asked for
(`one_percent: official`). A "hit rate" column (VIGOR's: top-1 is the positive or a semi-positive)
appears when some modality has one; the others show "-". The caption is the gallery's spread
(`gleam.retrieval.spread`): "tile embeddings: mean cosine ..., effective rank ... (ok|COLLAPSED)", in
bold red when the encoder has collapsed.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from gleam.evaluation.result import EvaluationResult
from gleam.retrieval.metrics import HIT_RATE


def metrics_table(result: EvaluationResult, ks: Sequence[int] = (1, 5, 10)) -> Table:
    if result.index is not None:
        return comparison_table(result, ks)
    table = Table(title=f"{result.split} split: {result.gallery_size} tiles in the gallery")
    names = _names(result, ks)
    for column in ["modality", "queries", *_headers(result, names), "chance R@1"]:
        table.add_column(column, justify="left" if column == "modality" else "right")
    for modality, metrics in result.metrics.items():
        values = _cells(metrics, names)
        table.add_row(modality, str(result.query_counts[modality]), *values, f"{result.chance_r1:.2f}")
    return _with_spread(table, result)


def comparison_table(result: EvaluationResult, ks: Sequence[int] = (1, 5, 10)) -> Table:
    """index / exact / gap rows per modality; `beyond depth` counts positives not in the top list."""
    index = result.index
    assert index is not None
    params = ", ".join(f"{k}={v}" for k, v in index.search_params.items()) or "no search parameters"
    table = Table(
        title=(
            f"{result.split} split through index {index.name} {index.version} ({index.index_key}, {params}): "
            f"{result.gallery_size} tiles, top {index.depth} per query, chance R@1 {result.chance_r1:.2f}"
        )
    )
    names = _names(result, ks)
    table.add_column("modality", no_wrap=True)
    table.add_column("search")
    for column in [*_headers(result, names), "beyond depth"]:
        table.add_column(column, justify="right")
    for modality, metrics in result.metrics.items():
        exact, gap = index.exact[modality], index.gap[modality]
        queries = f"[dim]{int(metrics['queries'])} queries[/]"
        table.add_row(modality, "index", *_cells(metrics, names), str(int(metrics["beyond_depth"])))
        table.add_row(queries, "exact", *_cells(exact, names), str(int(exact["beyond_depth"])))
        table.add_row("", "gap", *_cells(gap, names, "{:+.2f}"), "", end_section=True)
    return _with_spread(table, result)


def _names(result: EvaluationResult, ks: Sequence[int]) -> list[str]:
    """The metrics shown: R@k, R@1%, the hit rate where any modality has one, AP."""
    hit_rate = [HIT_RATE] if any(HIT_RATE in m for m in result.metrics.values()) else []
    return [f"R@{k}" for k in ks] + ["R@1%", *hit_rate, "AP"]


def _headers(result: EvaluationResult, names: Sequence[str]) -> list[str]:
    """Column titles: the metric names, R@1% marked when it is not the platform's convention."""
    mark = "" if result.one_percent == "platform" else f" ({result.one_percent})"
    titles = {"R@1%": f"R@1%{mark}", HIT_RATE: "hit rate"}
    return [titles.get(name, name) for name in names]


def _with_spread(table: Table, result: EvaluationResult) -> Table:
    if result.spread is not None:
        table.caption = result.spread.summary()
        table.caption_style = "bold red" if result.spread.collapsed else "dim"
    return table


def _cells(metrics: dict[str, float], names: Sequence[str], style: str = "{:.2f}") -> list[str]:
    """Formatted values; "-" for a metric this modality does not have (a hit rate without semi-positives)."""
    return [style.format(metrics[name]) if name in metrics else "-" for name in names]
