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

from gleam.config import load_config
from gleam.corpus.config import PrepareConfig
from gleam.errors import GleamError
from gleam.evaluation.config import EvaluateConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="GLEAM platform jobs.")
console = Console(stderr=False)
T = TypeVar("T")

ConfigOption = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML config file (a path or a store URI)")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override a config field: key.path=value (repeatable)")
]


def run_guarded(action: Callable[[], T]) -> T:
    """Run one step of a command; a `GleamError` becomes one line and its exit code (gleam.errors)."""
    try:
        return action()
    except GleamError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)  # one line, unbroken
        raise typer.Exit(exc.exit_code) from None


@app.callback()
def _setup(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="show Ray's and the libraries' log lines on the console")
    ] = False,
) -> None:
    from gleam import runtime_env
    from gleam.cluster import quiet_console

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s" if verbose else "%(levelname)s: %(message)s",
    )
    quiet_console(not verbose)
    runtime_env.pin()  # relative defaults mean this folder, for every worker the job starts


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
def evaluate(
    config: ConfigOption = None,
    set_: SetOption = None,
    index: Annotated[
        str | None,
        typer.Option(help="search through this published index and compare with exact search (gap)"),
    ] = None,
) -> None:
    """Evaluate an encoder on a prepared split: exact FAISS search, per-modality R@k / AP to MLflow.

    With --index, the queries are searched through a published index, next to exact search over the same
    gallery, and the gap between the two is reported.
    """
    from gleam.evaluation.evaluate import evaluate as run_evaluate
    from gleam.evaluation.report import metrics_table

    overrides = [*(set_ or []), *([f"index={index}"] if index is not None else [])]
    cfg = run_guarded(lambda: load_config(EvaluateConfig, config, overrides))
    result = run_guarded(lambda: run_evaluate(cfg))
    console.print(metrics_table(result, cfg.ks))
    console.print(f"MLflow run: {result.run_id or '(tracking disabled)'}")


@app.command()
def train(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Train one GLEAM-C phase on Ray Train; checkpoints resume, the encoder is registered in MLflow."""
    from gleam.training.config import TrainConfig
    from gleam.training.phases import run_training
    from gleam.training.report import result_table

    cfg = run_guarded(lambda: load_config(TrainConfig, config, set_))
    result = run_guarded(lambda: run_training(cfg))
    if result.already_done:
        console.print(f"run {result.name!r} is already complete for this config: nothing to do")
    console.print(result_table(result))


index_app = typer.Typer(no_args_is_help=True, help="Satellite indexes: build, inspect.")
app.add_typer(index_app, name="index")


@index_app.command("build")
def index_build(
    config: ConfigOption = None,
    set_: SetOption = None,
    incremental: Annotated[
        bool | None, typer.Option("--incremental/--full", help="embed only new or changed tiles")
    ] = None,
) -> None:
    """Embed tiles (Ray Data actor pool), build and validate a FAISS index, publish a new version."""
    from gleam.index.config import IndexBuildConfig
    from gleam.index.job import build_index
    from gleam.index.report import build_table

    overrides = [
        *(set_ or []),
        *([f"incremental={str(incremental).lower()}"] if incremental is not None else []),
    ]
    cfg = run_guarded(lambda: load_config(IndexBuildConfig, config, overrides))
    result = run_guarded(lambda: build_index(cfg))
    console.print(build_table(result))


@index_app.command("show")
def index_show(
    name: Annotated[str, typer.Argument(help="index name")],
    store: Annotated[
        str | None, typer.Option(help="store root; default: GLEAM_STORE or .gleam/store")
    ] = None,
    version: Annotated[str | None, typer.Option(help="a version; default: CURRENT")] = None,
) -> None:
    """Print the metadata of a published index version."""
    import json

    from gleam import storage
    from gleam.index.catalog import read_meta
    from gleam.index.layout import IndexLocation, IndexNotFoundError

    location = IndexLocation(store or storage.default_store(), name)

    def meta() -> dict:
        chosen = version or location.current()
        if chosen is None:
            raise IndexNotFoundError(f"no published index {name!r} under {location.root}")
        return read_meta(location, chosen)

    console.print_json(json.dumps(run_guarded(meta)))


@app.command()
def world(
    config: ConfigOption = None,
    set_: SetOption = None,
    output: Annotated[str | None, typer.Option(help="store URI to write the raw world to")] = None,
    locations: Annotated[int | None, typer.Option(help="number of places")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
) -> None:
    """Render a deterministic synthetic world in every modality, as a raw corpus with a manifest."""
    from gleam.corpus.world import WorldConfig, generate_world

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
    from gleam_cli.demo import run_demo

    run_guarded(lambda: run_demo(configs, console))


mllm_app = typer.Typer(no_args_is_help=True, help="GLEAM-X multimodal LLMs in the MLflow registry.")
app.add_typer(mllm_app, name="mllm")


@mllm_app.command("register")
def mllm_register(
    folder: Annotated[Path, typer.Argument(help="a Hugging Face model folder (safetensors weights)")],
    name: Annotated[str, typer.Option(help="registered model name")] = "gleam-x",
    alias: Annotated[str, typer.Option(help="alias moved to the new version")] = "champion",
) -> None:
    """Register a local MLLM folder (e.g. Qwen2.5-VL) so services load it as models:/NAME@ALIAS."""
    from gleam.explain.mllm import register_mllm

    registered, version = run_guarded(lambda: register_mllm(folder, name=name, alias=alias))
    console.print(f"registered {registered} version {version} (alias {alias}): models:/{registered}@{alias}")


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8000,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Serve config file (default: serve/config.yaml)")
    ] = None,
    encoder: Annotated[
        str | None, typer.Option(help="encoder URI (default: models:/gleam-c@champion)")
    ] = None,
    index: Annotated[str | None, typer.Option(help="index name (default: world-demo)")] = None,
    store: Annotated[
        str | None, typer.Option(help="store URI (default: $GLEAM_STORE or .gleam/store)")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Serve localization and explanation over HTTP (Ray Serve) until interrupted; the page is at /."""
    from serve.run import run_until_interrupted

    args: dict = {}
    for key, value in (("encoder", encoder), ("index", index), ("store", store)):
        if value is not None:
            args[key] = value
    run_guarded(lambda: run_until_interrupted(config, args, list(set_ or []), host, port, console))


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="gleam")


if __name__ == "__main__":
    main()
