"""Human-readable summaries of a prepared corpus (the CLI and the demo print these)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def manifest_table(manifest: dict[str, Any]) -> Table:
    counts = manifest["counts"]
    splits = manifest.get("splits", {})
    table = Table(title=f"corpus {manifest['name']}: {counts['listed']} listed", show_lines=False)
    for column in ("part", "train", "val", "test", "total"):
        table.add_column(column, justify="left" if column == "part" else "right")

    def row(label: str, by_split: dict[str, int], total: int) -> None:
        table.add_row(label, *(str(by_split.get(s, 0)) for s in ("train", "val", "test")), str(total))

    row("tiles (satellite)", splits.get("tiles", {}), counts["tiles"])
    for modality, total in counts["queries"].items():
        row(f"queries: {modality}", splits.get("queries", {}).get(modality, {}), total)
    for reason, total in counts["rejects"].items():
        table.add_row(f"rejected: {reason}", "", "", "", str(total))
    table.caption = (
        f"accepted {counts['accepted']} + rejected {counts['rejected']} = listed {counts['listed']}; "
        f"{manifest.get('images_per_second') or 0:.1f} images/s"
    )
    return table
