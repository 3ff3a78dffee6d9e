"""The `gleam` command: one sub-command per job, each a thin shell over one library function.

Errors users can fix (a bad config, a missing corpus, an occupied output) print one clear message and
exit non-zero without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from gleam.config import ConfigError, PrepareConfig, WorldConfig, load_config
from gleam.storage import StorageError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="GLEAM platform jobs.")
console = Console(stderr=False)
T = TypeVar("T")

ConfigOption = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML config file (a path or a store URI)")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override a config field: key.path=value (repeatable)")
]

# exit codes: 2 invalid config, 3 refused (output exists, lease held, ...), 4 storage unreachable
USER_ERRORS: dict[type[BaseException], int] = {ConfigError: 2, StorageError: 4}


def _user_errors() -> dict[type[BaseException], int]:
    from gleam.corpus.prepare import CorpusExistsError
    from gleam.corpus.reader import CorpusNotReady

    return {**USER_ERRORS, CorpusExistsError: 3, CorpusNotReady: 3}


def run_guarded(action: Callable[[], T]) -> T:
    try:
        return action()
    except tuple(_user_errors()) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(_user_errors()[type(exc)]) from None


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )


@app.command()
def prepare(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Prepare raw corpora into tiles/queries/rejects Parquet + manifest.json (Ray Data)."""
    from gleam.corpus.prepare import prepare as run_prepare
    from gleam.corpus.summary import manifest_table

    cfg = run_guarded(lambda: load_config(PrepareConfig, config, set_))
    result = run_guarded(lambda: run_prepare(cfg))
    if result.skipped:
        console.print(f"{result.corpus_uri} is already complete for this config: nothing to do")
    console.print(manifest_table(result.manifest))
    console.print(f"corpus: {result.corpus_uri}")


@app.command()
def world(
    config: ConfigOption = None,
    set_: SetOption = None,
    output: Annotated[str | None, typer.Option(help="store URI to write the raw world to")] = None,
    locations: Annotated[int | None, typer.Option(help="number of places")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
) -> None:
    """Render a deterministic synthetic world in every modality, as a raw corpus with a manifest."""
    from gleam.corpus.world import generate_world

    overrides = list(set_ or [])
    for key, value in (("output", output), ("locations", locations), ("seed", seed)):
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = run_guarded(lambda: load_config(WorldConfig, config, overrides))
    summary = run_guarded(lambda: generate_world(cfg))
    console.print(summary)


@app.command()
def demo(
    configs: Annotated[Path, typer.Option(help="folder of the demo configs")] = Path("jobs/configs"),
) -> None:
    """Run the platform end to end on a synthetic world with the embedded defaults (`make demo`)."""
    from gleam.demo import run_demo

    run_guarded(lambda: run_demo(configs, console))


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="gleam")


if __name__ == "__main__":
    main()
