"""Shared by every benchmark: describe the machine and append a dated section to docs/benchmarks.md.

Figures are only comparable side by side within one run, so every section records the exact command,
the machine and the date next to the numbers.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform as _platform
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    cpu = _platform.processor() or _platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_gib = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem_gib}, Python {sys.version.split()[0]}, {_platform.system()}"


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def append_section(title: str, body: str, doc: Path = DOC) -> None:
    """Append `## title` with date, machine and command, then the body, to docs/benchmarks.md."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    if not doc.exists():
        doc.write_text(
            "# Benchmarks\n\nMeasured figures, newest last. Each section says the machine, the command and"
            " the date; compare figures only within one section (one run), because shared machines are"
            " noisy.\n"
        )
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    header = f"\n## {title}\n\n- date: {stamp}\n- machine: {machine()}\n- command: `{command()}`\n"
    section = f"{header}\n{body.strip()}\n"
    with doc.open("a") as handle:
        handle.write(section)
    print(section)


@contextmanager
def scratch_platform(prefix: str) -> Iterator[Path]:
    """A temporary folder holding the run's GLEAM_HOME (store under it) and sqlite MLflow, deleted after:
    a benchmark never touches the user's store or tracking server."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp)
        os.environ["GLEAM_HOME"] = str(root / "home")
        os.environ.pop("GLEAM_STORE", None)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        yield root
