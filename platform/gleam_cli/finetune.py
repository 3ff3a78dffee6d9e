"""`gleam finetune-explainer`: fine-tune GLEAM-X's multimodal LLM on an explanation set (Ray Train).

The job is `gleam.explain.finetune.job.run_finetune`; this module loads the config, shows the step and
loss rank 0 last logged while it runs, and prints where the result went. Register it in
`gleam_cli.main` with `app.command("finetune-explainer")(finetune_explainer)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from gleam.config import load_config
from gleam_cli.guard import ConfigOption, SetOption, console, run_guarded

if TYPE_CHECKING:
    from gleam.explain.finetune.config import FinetuneConfig
    from gleam.explain.finetune.job import FinetuneResult
    from gleam.progress import Probe


def finetune_explainer(
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Fine-tune GLEAM-X (LoRA or full) on Ray Train; checkpoints resume, the result is registered."""
    from gleam.explain.finetune.config import FinetuneConfig
    from gleam.explain.finetune.job import run_finetune
    from gleam.progress import running

    cfg = run_guarded(lambda: load_config(FinetuneConfig, config, set_))
    with running(console, f"fine-tuning {cfg.base_model} as {cfg.name!r}", probe=_probe(cfg)):
        result = run_guarded(lambda: run_finetune(cfg))
    if result.already_done:
        console.print(f"run {result.name!r} is already complete for this config: nothing to do")
    console.print(result_table(result))


def result_table(result: FinetuneResult) -> Table:
    table = Table(title=f"GLEAM-X fine-tune {result.name!r}: {result.steps} steps", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    table.add_row("train samples", str(result.samples))
    table.add_row("checkpoint", result.checkpoint)
    table.add_row("base model", f"{result.base_reference} (sha256 {result.base_fingerprint[:12]})")
    if result.registry_uri:
        alias = f" @{result.alias}" if result.alias else ""
        table.add_row(f"registered ({result.kind})", f"{result.registry_uri}{alias}")
        table.add_row("fingerprint", result.fingerprint or "-")
    table.add_row("MLflow run", result.run_id or "(tracking disabled)")
    for name in ("loss", "val_loss"):
        if name in result.metrics:
            table.add_row(f"final {name}", f"{result.metrics[name]:.4f}")
    return table


def _probe(config: FinetuneConfig) -> Probe:
    """News for the spinner: the step and loss rank 0 last logged to the run's MLflow run."""
    from gleam import storage, tracking
    from gleam.explain.finetune.job import STATE_FILE, absolute_paths, run_dir

    state_uri = storage.join(run_dir(absolute_paths(config)), STATE_FILE)

    def probe() -> str | None:
        import mlflow

        if not storage.exists(state_uri):
            return "preparing samples"
        state = storage.read_json(state_uri)
        if not state.get("run_id"):
            return None
        history = mlflow.MlflowClient(tracking.tracking_uri()).get_metric_history(state["run_id"], "loss")
        if not history:
            return "starting Ray Train workers"
        last = max(history, key=lambda m: m.step)
        return f"step {last.step}/{state.get('total_steps', '?')}, loss {last.value:.3f}"

    return probe
