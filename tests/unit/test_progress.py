"""A long step's progress: one start line, the probe's news every so often in a log, the time at the end."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from gleam import progress


def log_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=200)


def test_in_a_log_a_step_prints_its_start_the_probes_news_and_its_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.05)
    console = log_console()
    steps = iter(range(1, 1000))
    with progress.running(console, "training demo", probe=lambda: f"step {next(steps)}/200", interval_s=0.02):
        time.sleep(0.3)
    lines = console.file.getvalue().splitlines()
    assert lines[0] == "training demo ..."
    news = [line for line in lines[1:-1] if line.startswith("training demo: step ")]
    assert news and all(line.endswith(" s)") for line in news)
    assert lines[-1].startswith("training demo: ") and lines[-1].endswith(" s")


def test_a_failing_probe_never_fails_the_step_and_errors_of_the_step_pass_through() -> None:
    console = log_console()

    def broken() -> str:
        raise RuntimeError("store unreachable")

    with progress.running(console, "indexing", probe=broken, interval_s=0.01):
        time.sleep(0.05)
    with pytest.raises(ValueError, match="bad tile"), progress.running(console, "again", interval_s=0.01):
        raise ValueError("bad tile")
    assert "store unreachable" not in console.file.getvalue()
    assert console.file.getvalue().splitlines()[-1].startswith("again: stopped after ")


def test_on_a_terminal_the_line_updates_in_place() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with progress.running(console, "rendering", probe=lambda: "half done", interval_s=0.02):
        time.sleep(0.1)
    shown = console.file.getvalue()
    assert "rendering: half done" in shown and "rendering: 0 s" in shown
