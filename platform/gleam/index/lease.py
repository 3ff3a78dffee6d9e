"""A lease in the store that keeps two builds of one index from running at once.

Scheduled rebuilds run unattended, so a second build started while one runs (a slow build overlapping
the next tick, a manual run during a scheduled one) must stop at once and say why rather than race
on CURRENT. The lease is a small JSON object created with an exclusive write (hard link locally, a
conditional PUT on S3), renewed by a heartbeat while the build runs and removed at the end. A build that
died leaves a lease that expires after `ttl_s` without renewal; the next build takes it over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from gleam import storage
from gleam.errors import BusyError

log = logging.getLogger(__name__)


class LeaseHeldError(BusyError, RuntimeError):
    """Another live build holds the lease."""


@dataclass(frozen=True)
class Lease:
    owner: str
    host: str
    pid: int
    acquired: float
    expires: float
    ttl_s: float

    def describe(self) -> str:
        return (
            f"held by pid {self.pid} on {self.host} since {_utc(self.acquired)}, "
            f"expires {_utc(self.expires)} unless renewed"
        )


@contextmanager
def hold_lease(uri: str, ttl_s: float = 600.0, renew_every_s: float | None = None) -> Iterator[Lease]:
    """Hold the lease at `uri` for the duration of the block, renewing it in the background."""
    lease = acquire(uri, ttl_s)
    stop = threading.Event()
    interval = renew_every_s if renew_every_s is not None else max(ttl_s / 3, 0.5)
    heartbeat = threading.Thread(target=_renew_loop, args=(uri, lease, interval, stop), daemon=True)
    heartbeat.start()
    try:
        yield lease
    finally:
        stop.set()
        heartbeat.join()
        release(uri, lease)


def acquire(uri: str, ttl_s: float) -> Lease:
    """Take the lease or raise LeaseHeldError; an expired lease is taken over (once, atomically)."""
    for _ in range(2):
        lease = _new_lease(ttl_s)
        if storage.create_exclusive(uri, _encode(lease)):
            return lease
        current = read(uri)
        if current is None:
            continue  # released between our attempt and the read: try again
        if current.expires > time.time():
            raise LeaseHeldError(
                f"another build holds {uri}: {current.describe()}. Wait for it, or delete the lease "
                "if that build is known to be dead"
            )
        log.warning("taking over the expired lease %s (%s)", uri, current.describe())
        if read(uri) == current:  # still the stale one, not a lease someone just took over
            storage.delete(uri)
    raise LeaseHeldError(f"another build took the expired lease {uri} first")


def read(uri: str) -> Lease | None:
    """The lease, or None when there is none. A store that fails to answer raises StorageError: taking
    that for "no lease" would stop a build's heartbeat (or let a second build in) on a network blip."""
    try:
        return Lease(**storage.read_json(uri))
    except storage.NotFoundError:
        return None


def release(uri: str, lease: Lease) -> None:
    """Remove the lease if it is still ours (never someone else's that took over an expired one)."""
    current = read(uri)
    if current is not None and current.owner == lease.owner:
        storage.delete(uri)


def renew(uri: str, lease: Lease) -> Lease | None:
    """Push the expiry forward; None (and a warning) when the lease is no longer ours."""
    current = read(uri)
    if current is None or current.owner != lease.owner:
        log.warning("lost the lease %s: %s", uri, current.describe() if current else "it was removed")
        return None
    renewed = Lease(**{**asdict(current), "expires": time.time() + current.ttl_s})
    storage.write_bytes(uri, _encode(renewed))
    return renewed


def _renew_loop(uri: str, lease: Lease, interval: float, stop: threading.Event) -> None:
    current: Lease | None = lease
    while current is not None and not stop.wait(interval):
        try:
            current = renew(uri, current)
        except storage.StorageError as exc:  # a blip in the store must not kill the build
            log.warning("could not renew the lease %s: %s", uri, exc)


def _new_lease(ttl_s: float) -> Lease:
    now = time.time()
    return Lease(uuid.uuid4().hex, socket.gethostname(), os.getpid(), now, now + ttl_s, ttl_s)


def _encode(lease: Lease) -> bytes:
    import json

    return json.dumps(asdict(lease), sort_keys=True).encode()


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")
