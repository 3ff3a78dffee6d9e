"""The console and the one place a `GleamError` becomes one line and an exit code (gleam.errors).

Every command module imports these from here, so `gleam_cli.main` (which registers the commands) is
imported by nobody and sub-command modules never import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from gleam.errors import GleamError

console = Console(stderr=False)

# the two options every job command takes (`gleam <job> --config F --set key=value`)
ConfigOption = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML config file (a path or a store URI)")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override a config field: key.path=value (repeatable)")
]
T = TypeVar("T")


def run_guarded(action: Callable[[], T]) -> T:
    """Run one step of a command; a `GleamError` becomes one line and its exit code (gleam.errors)."""
    try:
        return action()
    except GleamError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)  # one line, unbroken
        raise typer.Exit(exc.exit_code) from None
