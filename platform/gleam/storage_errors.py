"""Tell a store that failed from an object that is bad, and retry the first but never the second.

A read fails in two different ways. The store can be throttled (503 SlowDown), briefly down (5xx),
slow (timeouts) or unreachable (connection reset or refused): the object is fine and a later read
succeeds, so the read is retried with exponential backoff and, when the store does not recover, the job
fails (a re-run finishes the work). Or the object itself is the problem (absent, access denied on it,
bytes that do not decode): that is a per-object outcome the caller records, and retrying cannot help.

The same failure arrives in different shapes: s3fs raises OSError with an errno (EBUSY for 503, EREMOTEIO
for 500) and the botocore `ClientError` as `__cause__`; botocore and aiohttp raise their own connection
and timeout classes; pyarrow's S3 filesystem raises a plain OSError naming the AWS error; the OS raises
ConnectionResetError or TimeoutError. So `classify` walks the whole exception chain, and recognises
botocore and aiohttp errors by class name and response shape, without importing either.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, TypeVar

import tenacity

from gleam.errors import ConfigError, StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")


class ReadFailure(Enum):
    TRANSIENT = "transient"  # the store failed: retry, then fail the job
    MISSING = "missing"  # the object is not there
    PERMANENT = "permanent"  # this object cannot be read (denied, bad request, bad bytes)


TRANSIENT_ERRNOS = frozenset(
    {
        errno.EBUSY,  # s3fs: 503 SlowDown/ServiceUnavailable, 409 OperationAborted, object replaced mid-read
        getattr(errno, "EREMOTEIO", errno.EIO),  # s3fs: 500 InternalError
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.ENETRESET,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTUNREACH,
        errno.EPIPE,
        errno.EAGAIN,
    }
)
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
# botocore's connection/timeout/streaming errors and aiohttp's, matched by name anywhere in the MRO
TRANSIENT_CLASSES = frozenset(
    {
        "HTTPClientError",  # botocore: ConnectionClosedError, ReadTimeoutError, ResponseStreamingError
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "IncompleteReadError",
        "ResponseParserError",  # throttling answers with broken XML (s3fs retries these too)
        "ClientConnectionError",  # aiohttp: ServerDisconnectedError, ClientOSError
        "ClientPayloadError",
        "ServerTimeoutError",
        "IncompleteRead",  # http.client
    }
)
# pyarrow's own S3 filesystem: "AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 56"
PYARROW_TRANSIENT = re.compile(
    r"AWS Error (NETWORK_CONNECTION|SLOW_DOWN|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|THROTTLING|"
    r"REQUEST_TIMEOUT|UNKNOWN \(HTTP status (5\d\d|429)\))"
)


def classify(exc: BaseException) -> ReadFailure:
    """What a failed read means. A store failure anywhere in the chain wins: retrying costs time, while
    calling a hiccup a bad object would lose the object."""
    chain = list(causes(exc))
    if any(_is_transient(e) for e in chain):
        return ReadFailure.TRANSIENT
    if any(_is_missing(e) for e in chain):
        return ReadFailure.MISSING
    return ReadFailure.PERMANENT


def is_transient(exc: BaseException) -> bool:
    return classify(exc) is ReadFailure.TRANSIENT


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception behind it, each once: `__cause__`, `__context__`, and the `.cause`
    that Ray keeps of the error a task raised (RayTaskError)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend((getattr(item, "cause", None), item.__cause__, item.__context__))


def _response(exc: BaseException) -> tuple[int | None, str | None]:
    """(HTTP status, error code) of a botocore ClientError; (None, None) for anything else."""
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return None, None
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    code = (response.get("Error") or {}).get("Code")
    return (status if isinstance(status, int) else None), (str(code) if code is not None else None)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (TimeoutError, ConnectionError)):  # resets, refusals, broken pipes, socket timeouts
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    status, code = _response(exc)
    if (status is not None and (status >= 500 or status == 429)) or code in TRANSIENT_CODES:
        return True
    if any(cls.__name__ in TRANSIENT_CLASSES for cls in type(exc).__mro__):
        return True
    return isinstance(exc, OSError) and bool(PYARROW_TRANSIENT.search(str(exc)))


def _is_missing(exc: BaseException) -> bool:
    if isinstance(exc, FileNotFoundError):
        return True
    status, code = _response(exc)
    return status == 404 or code in MISSING_CODES


@dataclass(frozen=True)
class RetryPolicy:
    """How long one object's read is retried while the store fails: `attempts` reads at most, waits
    doubling from `first_wait_s` plus up to `first_wait_s` of jitter (each at most `max_wait_s`), and
    no wait that would end past `max_seconds` after the first read began."""

    attempts: int = 6
    first_wait_s: float = 1.0
    max_wait_s: float = 30.0
    max_seconds: float = 120.0

    ENV: ClassVar[dict[str, str]] = {
        "attempts": "GLEAM_READ_ATTEMPTS",
        "first_wait_s": "GLEAM_READ_BACKOFF_S",
        "max_seconds": "GLEAM_READ_MAX_S",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RetryPolicy:
        """The defaults, changed by GLEAM_READ_ATTEMPTS, GLEAM_READ_BACKOFF_S and GLEAM_READ_MAX_S."""
        values: dict[str, Any] = {}
        for field, variable in cls.ENV.items():
            raw = environ.get(variable)
            if raw is None or not raw.strip():
                continue
            try:
                value = int(raw) if field == "attempts" else float(raw)
            except ValueError:
                value = -1
            if not math.isfinite(value) or value < (1 if field == "attempts" else 0):
                minimum = "a whole number >= 1" if field == "attempts" else "a number of seconds >= 0"
                raise ConfigError(f"{variable}={raw!r} is not valid: expected {minimum}")
            values[field] = value
        return cls(**values)

    def call(self, uri: str, read: Callable[[], T]) -> T:
        """read(), retried while it fails with a store failure. Other errors pass through unchanged; a
        store failure that outlasts the policy becomes a StorageError naming `uri` (exit 4)."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_before_delay(self.max_seconds),
            wait=tenacity.wait_exponential_jitter(
                multiplier=self.first_wait_s, max=self.max_wait_s, jitter=self.first_wait_s
            ),
            retry=tenacity.retry_if_exception(is_transient),
            before_sleep=lambda state: log.info(
                "store failed reading %s (attempt %d): %s; retrying",
                uri,
                state.attempt_number,
                state.outcome.exception() if state.outcome else None,
            ),
            reraise=True,
        )
        start = time.monotonic()
        try:
            return retrying(read)
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempts = retrying.statistics.get("attempt_number", 1)
            raise StorageError(
                f"cannot read {uri}: the store kept failing ({attempts} attempt{'s' * (attempts != 1)} over "
                f"{time.monotonic() - start:.1f}s; last: {one_line(exc)})"
            ) from exc


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line, for messages that end up in a one-line CLI error or a reject."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
