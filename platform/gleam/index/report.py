"""The terminal summary of an index build."""

from __future__ import annotations

from rich.table import Table

from gleam.index.job import IndexBuildResult


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
        ("MLflow run", result.run_id or "-"),
    ]
    if result.removed_versions:
        rows.append(("cleaned", ", ".join(result.removed_versions)))
    for key, value in rows:
        table.add_row(key, value)
    return table
