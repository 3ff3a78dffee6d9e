"""The `gleam` command: one sub-command per job, each a thin shell over one library function.

Errors users can fix (a bad config, a missing corpus, an occupied output) print one clear message and
exit non-zero without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gleam.config import load_config
from gleam_cli.evaluate_explainer import evaluate_explainer
from gleam_cli.explain_data import explain_data, review_app
from gleam_cli.finetune import finetune_explainer
from gleam_cli.guard import ConfigOption, SetOption, console, run_guarded
from gleam_cli.models import models_app
from gleam_cli.submit import jobs_app, submit

if TYPE_CHECKING:
    from gleam.index.config import IndexBuildConfig
    from gleam.index.job import IndexBuildResult

app = typer.Typer(add_completion=False, no_args_is_help=True, help="GLEAM platform jobs.")


# commands that run their work on a cluster: the locations are the job's, decided by gleam.submission
REMOTE_COMMANDS = frozenset({"submit", "jobs"})


@app.callback()
def _setup(
    ctx: typer.Context,
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
    if ctx.invoked_subcommand not in REMOTE_COMMANDS:
        runtime_env.pin()  # relative defaults mean this folder, for every worker the job starts


@app.command()
def prepare(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Prepare raw corpora into tiles/queries/rejects Parquet + manifest.json (Ray Data)."""
    from gleam.corpus.config import PrepareConfig
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
    from gleam.evaluation.config import EvaluateConfig
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
    skip_if_busy: Annotated[
        bool,
        typer.Option(
            "--skip-if-busy",
            help="another live build holds the index lease: log one line and exit 0 (schedules)",
        ),
    ] = False,
) -> None:
    """Embed tiles (Ray Data actor pool), build and validate a FAISS index, publish a new version."""
    from gleam.index.config import IndexBuildConfig
    from gleam.index.report import build_table

    overrides = [
        *(set_ or []),
        *([f"incremental={str(incremental).lower()}"] if incremental is not None else []),
    ]
    cfg = run_guarded(lambda: load_config(IndexBuildConfig, config, overrides))
    result = run_guarded(lambda: _build_unless_busy(cfg, skip_if_busy))
    if result is not None:
        console.print(build_table(result))


def _build_unless_busy(cfg: IndexBuildConfig, skip_if_busy: bool) -> IndexBuildResult | None:
    """Look at the lease before any expensive step (corpus, weights, Ray); a live holder is a skip with
    --skip-if-busy (overlapping schedules), else BusyError (exit 6). A build that takes the lease between
    this look and ours is caught the same way."""
    import time

    from gleam.index.job import build_index
    from gleam.index.layout import IndexLocation
    from gleam.index.lease import LeaseHeldError, read

    lease_uri = IndexLocation(cfg.store, cfg.name).lease_uri
    held = read(lease_uri)
    if held is not None and held.expires > time.time():
        if not skip_if_busy:
            raise LeaseHeldError(
                f"another build holds {lease_uri}: {held.describe()}. Wait for it, or delete the lease if "
                "that build is known to be dead"
            )
    else:
        try:
            return build_index(cfg)
        except LeaseHeldError:
            if not skip_if_busy:
                raise
            held = read(lease_uri)
    by = f"pid {held.pid} on {held.host} (lease until {_utc(held.expires)})" if held else "another build"
    console.print(
        f"skipped: index {cfg.name} is being built by {by}", highlight=False, markup=False, soft_wrap=True
    )
    return None


def _utc(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


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


app.command("explain-data")(explain_data)
app.add_typer(review_app, name="explain-review")
app.command("finetune-explainer")(finetune_explainer)
app.command("evaluate-explainer")(evaluate_explainer)
app.command("submit")(submit)
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="gleam")


if __name__ == "__main__":
    main()
