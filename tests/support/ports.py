"""A free TCP port on 127.0.0.1, for the real services tests start (S3, MLflow, a Ray head)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the kernel just handed out (ephemeral range, so clear of Ray's fixed worker ports)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
