"""An evaluation result as a terminal table, with chance next to every modality.

Through an index, each modality gets three rows: the index, exact search over the same vectors, and
the gap (index minus exact, percentage points), so an approximation's cost reads off one table.
The R@1% column says "R@1% (official)" when University-1652's own convention was asked for
(`one_percent: official`). A "hit rate" column (VIGOR's: top-1 is the positive or a semi-positive)
appears when some modality has one; the others show "-". The caption is the gallery's spread
(`gleam.retrieval.spread`): "tile embeddings: mean cosine ..., effective rank ... (ok|COLLAPSED)", in
bold red when the encoder has collapsed.

Where distance errors were measured (`gleam.evaluation.distance`), a second table follows: per modality
and estimate (top1 / fused / refined) the median and mean error in metres, the share within 25 / 50 /
100 / 500 m, the radius and its measured coverage against its target, with the queries skipped (no
coordinates) and those serving would answer "position unknown"; its caption says where the calibration
and radius came from.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table

from gleam.evaluation.distance import WITHIN_M
from gleam.evaluation.result import EvaluationResult
from gleam.retrieval.fusion import FUSIONS
from gleam.retrieval.metrics import HIT_RATE


def metrics_table(result: EvaluationResult, ks: Sequence[int] = (1, 5, 10)) -> RenderableType:
    """The retrieval table, and the distance-error table under it when distances were measured."""
    table = comparison_table(result, ks) if result.index is not None else retrieval_table(result, ks)
    extra = [part for part in (distance_table(result), sets_table(result)) if part is not None]
    return Group(table, *extra) if extra else table


def sets_table(result: EvaluationResult) -> Table | None:
    """Sets scored as sets (queries sharing a set_id fused into one), per fusion; None without sets."""
    if not result.sets:
        return None
    methods = [m for m in FUSIONS if any(m in found for found in result.sets.values())]
    table = Table(title="sets of photos (one set_id), each fused into one query: R@1 / R@5 / AP")
    for column in ["modality", "sets", *methods]:
        table.add_column(column, justify="left" if column == "modality" else "right")
    for modality, found in result.sets.items():
        cells = [
            " / ".join(f"{found[m].get(name, float('nan')):.2f}" for name in ("R@1", "R@5", "AP"))
            for m in methods
        ]
        table.add_row(modality, str(found.get("sets", 0)), *cells)
    return table


def retrieval_table(result: EvaluationResult, ks: Sequence[int] = (1, 5, 10)) -> Table:
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


def distance_table(result: EvaluationResult) -> Table | None:
    """Distance errors per modality and estimate; None when none were measured (no run asked, or a
    result from before they existed). Compact (no vertical rules) so it fits 80 columns; what does not
    fit a row (queries measured, skipped, served as unknown, the radius's origin) is in the caption."""
    if not result.distances:
        return None
    table = Table(
        title="distance to each photo's own position (metres)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    columns = ["modality", "estimate", "median", "mean", *(f"<={d}" for d in WITHIN_M), "radius"]
    for column in [*columns, "cover%"]:
        left = column in ("modality", "estimate")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    notes = []
    targets = set()
    for modality, found in result.distances.items():
        notes.append(f"{modality}: {_distance_notes(found.skipped, found.unknown, found.measured)}")
        if not found.methods:
            table.add_row(modality, "-", *["-"] * (len(columns) - 1), end_section=True)
            continue
        if found.coverage_target:
            targets.add(f"{100 * found.coverage_target:.0f} %")
        for n, (method, figures) in enumerate(found.methods.items()):
            table.add_row(
                modality if n == 0 else "",
                method,
                f"{figures['median_m']:.1f}",
                f"{figures['mean_m']:.1f}",
                *(f"{figures[f'within_{d}m']:.1f}" for d in WITHIN_M),
                f"{figures['radius_m']:.1f}" if "radius_m" in figures else "-",
                f"{figures['coverage']:.1f}" if "coverage" in figures else "-",
                end_section=n == len(found.methods) - 1,
            )
    target = f" (target {', '.join(sorted(targets))})" if targets else ""
    lines = [
        f"<=d: % within d metres; cover%: % within the radius{target}",
        f"radius: {result.location_fit}" if result.location_fit else "",
        *notes,
    ]
    table.caption = "\n".join(line for line in lines if line)
    table.caption_style = "dim"
    return table


_SKIPPED = {
    "queries_without_coordinates": "{n} without lat/lon",
    "top_tile_without_coordinates": "{n} whose top tile has no lat/lon",
}


def _distance_notes(skipped: dict[str, int], unknown: int, measured: int) -> str:
    parts = [f"{measured} measured"]
    parts += [_SKIPPED.get(reason, reason + ": {n}").format(n=n) for reason, n in skipped.items() if n]
    if unknown:
        parts.append(f"{unknown} served as unknown")
    return ", ".join(parts)


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
