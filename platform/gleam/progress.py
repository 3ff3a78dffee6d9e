"""What a long step shows while it runs: a spinner with the elapsed time (and a probe's news) on a
terminal, a line every so often in a log, and how long it took at the end.

A job that runs for minutes in silence looks hung; one that prints Ray's scheduler chatter is unreadable.
A step here prints one header, one line of progress that updates in place, and its result.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

Probe = Callable[[], str | None]
LOG_EVERY_S = 30.0  # without a terminal, a progress line this often (CI logs stay short)


@contextmanager
def running(
    console: Console, what: str, probe: Probe | None = None, interval_s: float = 2.0
) -> Iterator[None]:
    """Show `what` (plus the probe's latest news) with the elapsed time until the block ends."""
    started = time.monotonic()
    stop = threading.Event()
    news: dict[str, str | None] = {"text": None}

    def line() -> str:
        extra = f": {news['text']}" if news["text"] else ""
        return f"{what}{extra} ({time.monotonic() - started:.0f} s)"

    def watch(update: Callable[[str], None]) -> None:
        last_logged = started
        while not stop.wait(interval_s):
            if probe is not None:
                with contextlib.suppress(Exception):  # a failing probe must never fail its step
                    news["text"] = probe() or news["text"]
            if console.is_terminal:
                update(line())
            elif time.monotonic() - last_logged >= LOG_EVERY_S:
                last_logged = time.monotonic()
                update(line())

    if console.is_terminal:
        shown = console.status(line())
    else:
        console.print(f"{what} ...", highlight=False)
        shown = contextlib.nullcontext()
    outcome = "stopped after "  # unless the block finishes
    try:
        with shown as status:
            update = (
                status.update if status is not None else lambda text: console.print(text, highlight=False)
            )
            watcher = threading.Thread(target=watch, args=(update,), daemon=True)
            watcher.start()
            try:
                yield
                outcome = ""
            finally:
                stop.set()
                watcher.join()
    finally:
        console.print(f"[dim]{what}: {outcome}{time.monotonic() - started:.0f} s[/]", highlight=False)
