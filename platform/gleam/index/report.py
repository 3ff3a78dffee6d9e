"""The terminal summary of an index build, with a loud WARNING row when its scores cannot be trusted."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from gleam.index.calibrate import index_quality
from gleam.index.job import IndexBuildResult
from gleam.retrieval.spread import describe


def build_table(result: IndexBuildResult) -> Table:
    meta = result.meta
    title = f"index {result.name} {result.version}: " + (
        "published" if result.status == "published" else "unchanged, nothing published"
    )
    table = Table(title=title, show_header=False)
    counts = meta["counts"]
    recall = meta["recall"]
    rows = [
        ("index key", f"{meta['index_key']}  ({meta.get('plan_reason', '')})"),
        ("vectors", f"{counts['vectors']} (embedded {counts['embedded']}, reused {counts['reused']})"),
        ("dimension / metric", f"{meta['dim']} / {meta['metric']}"),
        ("encoder", f"{meta['encoder']['uri']}  {meta['encoder']['fingerprint'][:12]}"),
        (
            "recall",
            f"@{recall['k']} = {recall['value']:.4f} (floor {recall['floor']}, {meta['search_params']})",
        ),
        ("index bytes", f"{meta.get('index_bytes', 0):,}"),
        ("seconds", ", ".join(f"{k} {v:.2f}" for k, v in meta["seconds"].items())),
        (
            "embedding",
            f"{meta['embedding']['tiles_per_second']:.1f} tiles/s, {meta['embedding']['precision']}",
        ),
        ("spread", describe(meta.get("spread"))),
        ("calibration", _calibration(meta.get("calibration"))),
        ("location radius", _location(meta.get("location"))),
        ("MLflow run", result.run_id or "-"),
    ]
    if result.removed_versions:
        rows.append(("cleaned", ", ".join(result.removed_versions)))
    for key, value in rows:
        table.add_row(key, value)
    warning = index_quality(meta.get("spread"), meta.get("calibration"))["warning"]
    if warning:
        table.add_row("WARNING", warning, style="bold red")
    return table


def _calibration(calibration: dict[str, Any] | None) -> str:
    if not calibration:
        return "none (calibration.split is null, or no validation query has its tile in the index)"
    verdict = " (AT CHANCE)" if index_quality(None, calibration)["at_chance"] else ""
    return (
        f"threshold {calibration['threshold']:.4f}, balanced accuracy {calibration['accuracy']:.3f}{verdict} "
        f"on {calibration.get('queries', '?')} {calibration.get('split', '')} queries"
    )


def _location(location: dict[str, Any] | None) -> str:
    """The pooled radius per estimate, e.g. "68 % within: top1 412 m, fused 305 m (median 190 m) on 64 val
    queries"; "none" with why when no radius was fitted."""
    if not location:
        return "none (no calibration, or no validation query with coordinates)"
    radii = [
        f"{method} {radius:.0f} m (median error {location['median_error_m'][method]:.0f} m)"
        for method, radius in location["radius_m"].items()
        if radius is not None
    ]
    queries = location["queries"].get("top1", 0)
    where = f"on {queries} {location.get('split') or ''} queries".replace("  ", " ")
    if not radii:
        return f"none fitted {where} (too few with coordinates)"
    return f"{100 * location['coverage']:.0f} % within: " + ", ".join(radii) + f" {where}"
