"""`gleam explain-data` and `gleam explain-review export|import`: build GLEAM-X's explanation set, review it.

Register in gleam_cli.main with `app.command("explain-data")(explain_data)` and
`app.add_typer(review_app, name="explain-review")`. The job library does not import gleam.index (the
index package sits above gleam.explain in the layers), so this entrypoint hands it in (`index_access`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from gleam.config import load_config
from gleam_cli.guard import ConfigOption, SetOption, console, run_guarded

if TYPE_CHECKING:
    from gleam.explain.dataset.pairs import IndexAccess

review_app = typer.Typer(no_args_is_help=True, help="Human revision of an explanation set: export, import.")


def index_access() -> IndexAccess:
    """gleam.index's reader side, as the explanation-set job needs it."""
    from gleam.explain.dataset.pairs import IndexAccess
    from gleam.index.calibrate import evidence_facts, index_quality
    from gleam.index.catalog import open_index

    return IndexAccess(
        open=lambda store, name, version: open_index(store, name, version),
        evidence_facts=evidence_facts,
        quality=lambda spread, calibration: index_quality(spread, calibration),
    )


def explain_data(
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Build a GLEAM-X explanation set: pairs from a published index, rationales from a teacher (Ray Data)."""
    from gleam.explain.dataset.config import ExplainDataConfig
    from gleam.explain.dataset.job import build_explanation_set

    cfg = run_guarded(lambda: load_config(ExplainDataConfig, config, set_))
    result = run_guarded(lambda: build_explanation_set(cfg, index_access()))
    if result.skipped:
        console.print(f"{result.set_uri} is already complete for this config: nothing to do", soft_wrap=True)
    console.print(counts_table(result.manifest))
    console.print(f"explanation set: {result.set_uri}", soft_wrap=True)


def counts_table(manifest: dict) -> Table:
    counts = manifest["counts"]
    table = Table(title=f"explanation set {manifest['name']} (teacher {manifest['teacher']})")
    for column in ("split", "modality", "match", "no match"):
        table.add_column(column)
    for split, modalities in counts["by_split_modality_match"].items():
        for modality, cell in modalities.items():
            table.add_row(split, modality, str(cell["match"]), str(cell["no_match"]))
    rejects = counts["rejects"]
    reasons = ", ".join(f"{k} {v}" for k, v in rejects["by_reason"].items()) or "none"
    table.caption = (
        f"{counts['pairs']} pairs; rejects: {rejects['total']} ({reasons}); teacher asked "
        f"{counts['teacher']['asked']}, cache hits {counts['teacher']['cache_hits']}"
    )
    return table


SetArgument = Annotated[str, typer.Option("--set", help="the explanation set's URI (<output>/<name>)")]


@review_app.command("export")
def review_export(
    set_uri: SetArgument,
    out: Annotated[Path, typer.Option("--out", help="the file to write: .jsonl or .csv")],
    split: Annotated[str, typer.Option(help="the split to review")] = "test",
) -> None:
    """Write a split's rows to FILE.jsonl|.csv, with their images in FILE_images/ beside it."""
    from gleam.explain.dataset.review import export_split

    result = run_guarded(lambda: export_split(set_uri, split, out))
    console.print(
        f"exported {result.rows} rows to {result.path} ({result.images} images beside it)", soft_wrap=True
    )


@review_app.command("import")
def review_import(
    file: Annotated[Path, typer.Argument(help="the reviewed .jsonl or .csv file")],
    set_uri: SetArgument,
) -> None:
    """Apply a reviewed file: edited rows become revised, unchanged ones approved; validated first."""
    from gleam.explain.dataset.review import import_review

    result = run_guarded(lambda: import_review(set_uri, file))
    console.print(f"{result.set_uri}: {result.revised} revised, {result.approved} approved", soft_wrap=True)
