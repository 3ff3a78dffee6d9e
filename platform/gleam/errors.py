"""The platform's error model: every error a user can fix is a `GleamError` that carries its exit code.

The command line catches `GleamError` once and prints its message as one line; anything else is a bug
and keeps its traceback. Each error derives from one of the five meanings below, so its exit code
follows from what it means rather than from a table kept next to the CLI. Errors that have always
been a `ValueError`/`RuntimeError`/`LookupError` keep that base too, so older callers still catch them.

This module is a leaf: it imports nothing from the platform, so every layer can raise these.
"""

from __future__ import annotations

from typing import ClassVar


class GleamError(Exception):
    """An error the user can fix; the message says what to fix."""

    exit_code: ClassVar[int] = 1


class InvalidInputError(GleamError):
    """A config, a source layout or an argument is invalid (exit 2)."""

    exit_code = 2


class RefusedError(GleamError):
    """The request is well-formed but the platform will not do it in this state (exit 3): an output
    exists, a corpus is unfinished, a split is empty, weights do not fit, an index is below its floor."""

    exit_code = 3


class StorageError(GleamError, RuntimeError):
    """A store operation failed; the message names the URI (exit 4). A re-run finishes the work."""

    exit_code = 4


class TrainingError(GleamError):
    """Training could not finish (exit 5); the latest checkpoint is kept, so a re-run resumes."""

    exit_code = 5


class BusyError(GleamError):
    """Another job holds what this one needs (exit 6); try again when it is done."""

    exit_code = 6


class ConfigError(InvalidInputError, ValueError):
    """An invalid config; the message names every offending field."""
