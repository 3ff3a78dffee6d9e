"""What a location string means, without touching any store: S3 or local, and its canonical form.

A leaf below `gleam.storage` and `gleam.runtime_env`, which both need it.
"""

from __future__ import annotations

import os

S3_SCHEMES = ("s3://", "s3a://")


def is_s3(uri: str) -> bool:
    return str(uri).startswith(S3_SCHEMES)


def is_local(uri: str) -> bool:
    return not is_s3(uri)


def normalize(uri: str | os.PathLike[str]) -> str:
    """A canonical URI: `s3://bucket/key` (no trailing slash) or an absolute local path."""
    text = os.fspath(uri)
    if is_s3(text):
        _, rest = text.split("://", 1)
        return "s3://" + rest.strip("/")
    if text.startswith("file://"):
        text = text[len("file://") :]
    return os.path.abspath(os.path.expanduser(text))  # keeps symlinks: listing and relative paths agree
