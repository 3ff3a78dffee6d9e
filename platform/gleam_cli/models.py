"""`gleam models show|alias`: look at a registered model's versions and move an alias (promote, roll back).

MLflow's own CLI has no alias commands, and a promotion is the step operators do by hand most often
(docs/operations.md, "Promoting a model"): `alias` prints where the alias pointed before, so the
rollback command is on the screen when the promotion is made.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

import typer
from rich.table import Table

from gleam_cli.guard import console, run_guarded

models_app = typer.Typer(
    no_args_is_help=True, help="Registered models (gleam-c, gleam-x): versions, aliases."
)


@models_app.command("show")
def show(name: Annotated[str, typer.Argument(help="registered model name, e.g. gleam-c")]) -> None:
    """List the versions of a registered model, newest first, with their aliases."""
    from gleam.registry import list_versions

    rows = run_guarded(lambda: list_versions(name))
    table = Table(title=f"models:/{name}")
    for column in ("version", "aliases", "created (UTC)", "run", "fingerprint"):
        table.add_column(column)
    for row in rows:
        created = datetime.fromtimestamp(row.created_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            str(row.version),
            ", ".join(row.aliases) or "-",
            created,
            row.run_id or "-",
            (row.fingerprint or "-")[:12],
        )
    console.print(table)


@models_app.command("alias")
def alias(
    name: Annotated[str, typer.Argument(help="registered model name, e.g. gleam-c")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="alias to move, e.g. champion")],
    version: Annotated[int, typer.Argument(help="version the alias points at from now on")],
) -> None:
    """Point models:/NAME@ALIAS at VERSION (promote or roll back); prints the version it left."""
    from gleam.registry import move_alias

    previous = run_guarded(lambda: move_alias(name, alias_name, version))
    console.print(f"models:/{name}@{alias_name} -> version {version} (was {previous or 'unset'})")
    if previous is not None and previous != version:
        console.print(f"roll back with: gleam models alias {name} {alias_name} {previous}")
    console.print(
        "Serve pins the encoder version when the application is deployed, and an index is tied to the "
        "encoder that built it: rebuild the index, then roll the service (docs/operations.md)."
    )
