"""A training result as a terminal table: where the encoder went and what validation said."""

from __future__ import annotations

from rich.table import Table

from gleam.training.phases import TrainResult


def result_table(result: TrainResult) -> Table:
    table = Table(title=f"{result.phase} run {result.name!r}: {result.steps} steps", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    table.add_row("encoder", result.encoder_uri)
    if result.registry_uri:
        aliases = ", ".join(f"@{a}" for a in result.aliases)
        table.add_row("registered", f"{result.registry_uri} {aliases}")
    table.add_row("MLflow run", result.run_id or "(tracking disabled)")
    gallery = result.metrics.get("val.gallery_size")
    for name, value in sorted(result.metrics.items()):
        if name.startswith("val.") and name != "val.gallery_size":
            table.add_row(name, f"{value:.2f}")
    if gallery:
        table.add_row("val chance R@1", f"{100.0 / gallery:.2f}")
    return table
