"""The build lease on a real filesystem and a real S3 endpoint: exclusive, renewed, expiring, released."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gleam import storage
from gleam.index import lease as lease_module
from gleam.index.lease import LeaseHeldError, acquire, hold_lease, read, release


@pytest.fixture(params=["local", "s3"])
def lease_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "indexes" / "x" / "LEASE")
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/indexes/x/LEASE"


def test_exclusive_create_has_one_winner_among_racing_writers(lease_uri: str) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def attempt(n: int) -> None:
        barrier.wait()
        results.append(storage.create_exclusive(lease_uri, f"writer {n}".encode()))

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]
    winner = results.index(True)
    assert storage.read_text(lease_uri).startswith("writer ")
    del winner


def test_a_held_lease_refuses_a_second_build_with_who_holds_it(lease_uri: str) -> None:
    first = acquire(lease_uri, ttl_s=60)
    with pytest.raises(LeaseHeldError, match=f"pid {first.pid} on {first.host}"):
        acquire(lease_uri, ttl_s=60)
    release(lease_uri, first)
    assert not storage.exists(lease_uri)
    again = acquire(lease_uri, ttl_s=60)
    assert again.owner != first.owner
    release(lease_uri, again)


def test_an_expired_lease_is_taken_over(lease_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    dead = acquire(lease_uri, ttl_s=0.2)  # a build that died without releasing
    time.sleep(0.3)
    taken = acquire(lease_uri, ttl_s=60)
    assert read(lease_uri) == taken and taken.owner != dead.owner
    assert "taking over the expired lease" in caplog.text
    release(lease_uri, dead)  # the dead build's late release must not remove the new holder's lease
    assert read(lease_uri) == taken
    release(lease_uri, taken)


def test_the_heartbeat_keeps_a_long_build_s_lease_alive(lease_uri: str) -> None:
    with hold_lease(lease_uri, ttl_s=0.6, renew_every_s=0.1) as held:
        time.sleep(1.2)  # twice the ttl: without renewal it would have expired
        current = read(lease_uri)
        assert current is not None and current.owner == held.owner and current.expires > time.time()
        with pytest.raises(LeaseHeldError):
            acquire(lease_uri, ttl_s=60)
    assert not storage.exists(lease_uri)  # released on exit


def test_the_lease_is_released_when_the_build_fails(lease_uri: str) -> None:
    with pytest.raises(RuntimeError, match="boom"), hold_lease(lease_uri, ttl_s=30):
        raise RuntimeError("boom")
    assert not storage.exists(lease_uri)


def test_renew_notices_a_lost_lease(lease_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    mine = acquire(lease_uri, ttl_s=0.1)
    time.sleep(0.2)
    other = acquire(lease_uri, ttl_s=60)
    assert lease_module.renew(lease_uri, mine) is None
    assert "lost the lease" in caplog.text
    assert read(lease_uri) == other
