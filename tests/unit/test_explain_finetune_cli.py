"""`gleam finetune-explainer` as a typer command: a bad config is one line and exit 2, a result is a table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from typer.testing import CliRunner

from gleam.explain.finetune.job import FinetuneResult
from gleam_cli.finetune import finetune_explainer, result_table


def app() -> typer.Typer:
    """The command registered as gleam_cli.main registers it (`app.command("finetune-explainer")`)."""
    cli = typer.Typer()
    cli.command("finetune-explainer")(finetune_explainer)
    cli.command("noop")(lambda: None)  # two commands: typer keeps the sub-command name
    return cli


def test_a_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "finetune.yaml"
    config.write_text("name: x\nexplanation_set: /sets/s\nsteps: 4\nlora: {r: 0}\n")
    result = CliRunner().invoke(app(), ["finetune-explainer", "--config", str(config)])
    assert result.exit_code == 2 and "lora.r" in result.output, result.output
    unknown = CliRunner().invoke(
        app(), ["finetune-explainer", "-c", str(config), "--set", "lora.r=8", "-s", "epoch=1"]
    )
    assert unknown.exit_code == 2 and "epoch" in unknown.output and "Extra inputs" in unknown.output


def test_the_result_table_says_where_the_model_went() -> None:
    result = FinetuneResult(
        name="gleam-x-lora",
        steps=120,
        samples=960,
        checkpoint="/runs/gleam-x-lora/checkpoint_000004",
        run_id="abc123",
        base_reference="Qwen/Qwen2.5-VL-3B-Instruct",
        base_fingerprint="f" * 64,
        kind="adapter",
        model_name="gleam-x",
        model_version=3,
        alias="challenger",
        fingerprint="e" * 64,
        metrics={"loss": 0.4123, "val_loss": 0.5},
    )
    console = Console(record=True, width=200)
    console.print(result_table(result))
    text = console.export_text()
    assert "models:/gleam-x/3 @challenger" in text and "registered (adapter)" in text
    assert "Qwen/Qwen2.5-VL-3B-Instruct (sha256 ffffffffffff)" in text and "0.4123" in text
