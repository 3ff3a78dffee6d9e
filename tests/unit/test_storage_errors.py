"""Store failures vs bad objects: the classification prepare relies on, and the retry policy around it.

The errors are the real classes, built the way the libraries build them (botocore's ClientError from a
parsed response, s3fs's translation of it, aiohttp's and the OS's own); pyarrow's S3 texts are the ones
its S3 filesystem raised against a faulting endpoint. The same classification is checked against a live
faulting store in tests/integration/test_prepare_store_faults.py.
"""

from __future__ import annotations

import errno
import time

import pytest
from aiohttp import ClientPayloadError, ServerDisconnectedError
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from PIL import UnidentifiedImageError
from s3fs.errors import translate_boto_error

from gleam.errors import ConfigError, StorageError
from gleam.storage_errors import ReadFailure, RetryPolicy, causes, classify, is_transient


def client_error(status: int, code: str, operation: str = "GetObject") -> ClientError:
    response = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)  # type: ignore[arg-type]


def through_s3fs(error: ClientError) -> BaseException:
    """What s3fs raises for a ClientError (an OSError subclass with the ClientError as __cause__)."""
    return translate_boto_error(error)


def raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    """`outer` raised while handling `inner`, as Python links them."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904  # the implicit __context__ is the point
    except BaseException as exc:
        return exc


PYARROW_503 = (
    "When reading information for key 'k.jpg' in bucket 'bkt': AWS Error UNKNOWN (HTTP status 503) "
    "during HeadObject operation: No response body."
)
PYARROW_RESET = (
    "When reading information for key 'k.jpg' in bucket 'bkt': AWS Error NETWORK_CONNECTION during "
    "HeadObject operation: curlCode: 56, Failure when receiving data from the peer; Details: Recv "
    "failure: Connection reset by peer"
)
PYARROW_DENIED = (
    "When reading information for key 'k.jpg' in bucket 'bkt': AWS Error ACCESS_DENIED during "
    "HeadObject operation: No response body."
)

TRANSIENT = {
    "s3fs 503 SlowDown": through_s3fs(client_error(503, "SlowDown")),
    "s3fs 503 on HEAD (no code)": through_s3fs(client_error(503, "503", "HeadObject")),
    "s3fs 500 InternalError": through_s3fs(client_error(500, "InternalError")),
    "s3fs 502 (unknown code)": through_s3fs(client_error(502, "BadGateway")),
    "botocore 503 ServiceUnavailable": client_error(503, "ServiceUnavailable"),
    "botocore throttling without 5xx": client_error(400, "ThrottlingException"),
    "botocore 429": client_error(429, "TooManyRequests"),
    "botocore 400 RequestTimeout": client_error(400, "RequestTimeout"),
    "endpoint unreachable": EndpointConnectionError(endpoint_url="http://127.0.0.1:1/bkt/k.jpg"),
    "read timeout": ReadTimeoutError(endpoint_url="http://127.0.0.1:1/bkt/k.jpg"),
    "connection closed": ConnectionClosedError(endpoint_url="http://127.0.0.1:1/bkt/k.jpg"),
    "body cut off": ResponseStreamingError(error="Connection broken"),
    "aiohttp disconnect": ServerDisconnectedError(),
    "aiohttp payload": ClientPayloadError("Response payload is not completed"),
    "connection reset": ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    "connection refused": ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    "socket timeout": TimeoutError("timed out"),
    "ETIMEDOUT": OSError(errno.ETIMEDOUT, "Connection timed out"),
    "pyarrow 503": OSError(PYARROW_503),
    "pyarrow reset": OSError(PYARROW_RESET),
    "s3fs wraps a reset it saw": raised_from(
        EndpointConnectionError(endpoint_url="http://h/k"), ConnectionResetError(errno.ECONNRESET, "reset")
    ),
    "not found, but while the store was failing": raised_from(
        FileNotFoundError("bkt/k.jpg"), ConnectionResetError(errno.ECONNRESET, "reset")
    ),
}
MISSING = {
    "file": FileNotFoundError(errno.ENOENT, "No such file or directory"),
    "s3fs 404 on HEAD": through_s3fs(client_error(404, "404", "HeadObject")),
    "s3fs NoSuchKey": through_s3fs(client_error(404, "NoSuchKey")),
    "botocore NoSuchKey": client_error(404, "NoSuchKey"),
}
PERMANENT = {
    "s3fs 403 on HEAD": through_s3fs(client_error(403, "403", "HeadObject")),
    "s3fs AccessDenied": through_s3fs(client_error(403, "AccessDenied")),
    "local permission": PermissionError(errno.EACCES, "Permission denied"),
    "s3fs InvalidObjectState": through_s3fs(client_error(403, "InvalidObjectState")),
    "s3fs InvalidRange": through_s3fs(client_error(416, "InvalidRange")),
    "pyarrow denied": OSError(PYARROW_DENIED),
    "bad bytes": UnidentifiedImageError("cannot identify image file"),
    "a plain bug": ValueError("something else"),
    "local EIO": OSError(errno.EIO, "Input/output error"),
}


@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_store_failures_are_transient(name: str) -> None:
    assert classify(TRANSIENT[name]) is ReadFailure.TRANSIENT


@pytest.mark.parametrize("name", sorted(MISSING))
def test_absent_objects_are_missing(name: str) -> None:
    assert classify(MISSING[name]) is ReadFailure.MISSING


@pytest.mark.parametrize("name", sorted(PERMANENT))
def test_object_problems_are_permanent(name: str) -> None:
    assert classify(PERMANENT[name]) is ReadFailure.PERMANENT


def test_policy_defaults_and_environment() -> None:
    assert RetryPolicy.from_env({}) == RetryPolicy(
        attempts=6, first_wait_s=1.0, max_wait_s=30.0, max_seconds=120.0
    )
    policy = RetryPolicy.from_env(
        {"GLEAM_READ_ATTEMPTS": "3", "GLEAM_READ_BACKOFF_S": "0.05", "GLEAM_READ_MAX_S": "2", "OTHER": "x"}
    )
    assert (policy.attempts, policy.first_wait_s, policy.max_seconds) == (3, 0.05, 2.0)
    assert RetryPolicy.from_env({"GLEAM_READ_ATTEMPTS": " "}) == RetryPolicy()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GLEAM_READ_ATTEMPTS", "0"),
        ("GLEAM_READ_ATTEMPTS", "2.5"),
        ("GLEAM_READ_BACKOFF_S", "-1"),
        ("GLEAM_READ_MAX_S", "soon"),
        ("GLEAM_READ_MAX_S", "nan"),
    ],
)
def test_policy_refuses_bad_settings(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable) as caught:
        RetryPolicy.from_env({variable: value})
    assert caught.value.exit_code == 2


class Flaky:
    """A read that fails with `errors` in turn, then returns b"ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> bytes:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return b"ok"


FAST = RetryPolicy(attempts=4, first_wait_s=0.01, max_wait_s=0.05, max_seconds=5)


def test_transient_failures_are_retried_until_the_read_succeeds() -> None:
    read = Flaky(TRANSIENT["s3fs 503 SlowDown"], TRANSIENT["connection reset"], TRANSIENT["pyarrow 503"])
    assert FAST.call("s3://bkt/k.jpg", read) == b"ok"
    assert read.calls == 4


@pytest.mark.parametrize("error", [MISSING["s3fs 404 on HEAD"], PERMANENT["s3fs AccessDenied"]])
def test_object_problems_are_not_retried(error: BaseException) -> None:
    read = Flaky(error)
    with pytest.raises(type(error)):
        FAST.call("s3://bkt/k.jpg", read)
    assert read.calls == 1


def test_a_store_that_does_not_recover_is_a_storage_error_naming_the_object() -> None:
    read = Flaky(*[TRANSIENT["s3fs 503 SlowDown"]] * 10)
    with pytest.raises(StorageError) as caught:
        FAST.call("s3://bkt/raw/k.jpg", read)
    assert read.calls == FAST.attempts
    message = str(caught.value)
    assert "s3://bkt/raw/k.jpg" in message and "4 attempts" in message and "\n" not in message
    assert caught.value.exit_code == 4
    assert classify(caught.value.__cause__) is ReadFailure.TRANSIENT


def test_the_total_time_bounds_the_retries() -> None:
    policy = RetryPolicy(attempts=100, first_wait_s=0.2, max_wait_s=0.2, max_seconds=0.5)
    read = Flaky(*[TRANSIENT["connection reset"]] * 100)
    start = time.monotonic()
    with pytest.raises(StorageError):
        policy.call("s3://bkt/k.jpg", read)
    assert time.monotonic() - start < 1.0
    assert 2 <= read.calls <= 3


def test_is_transient_matches_classify() -> None:
    assert is_transient(TRANSIENT["socket timeout"]) and not is_transient(MISSING["file"])


def test_an_error_ray_wrapped_is_still_found() -> None:
    from ray.exceptions import RayTaskError

    original = StorageError("cannot read s3://bkt/k.jpg: the store kept failing")
    wrapped = RayTaskError("decode_batch", "Traceback (most recent call last): ...", original)
    as_cause = wrapped.as_instanceof_cause()  # what the driver receives: a StorageError too
    assert isinstance(as_cause, StorageError) and original in list(causes(as_cause))
    reset = ConnectionResetError(errno.ECONNRESET, "reset")
    assert classify(RayTaskError("read", "...", reset).as_instanceof_cause()) is ReadFailure.TRANSIENT
