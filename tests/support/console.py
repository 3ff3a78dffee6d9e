"""What our own code printed, without the lines Ray forwards from its workers.

A CLI run in-process shares stdout with Ray's log monitor, which prints every worker's
output prefixed with ``(ActorName pid=N)``. Ray Data's own helper threads sometimes log a
harmless traceback there when a dataset finishes; a test that checks our message carries
no traceback must not fail on Ray's.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAY_WORKER_PREFIX = re.compile(r"^\s*\(.*?\bpid=\d+(?:, ip=[^)]*)?\)")


def own_output(text: str) -> str:
    """``text`` without ANSI colours and without the lines forwarded from Ray workers."""
    lines = (_ANSI.sub("", line) for line in text.splitlines())
    return "\n".join(line for line in lines if not _RAY_WORKER_PREFIX.match(line))
