"""`gleam index build --skip-if-busy`: a live build's lease is a logged skip with exit 0 (a schedule that
overlaps itself pages nobody); without the flag it stays BusyError, exit 6. The lease is looked at before
the corpus, the encoder or Ray, so none of them exists here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gleam import storage
from gleam.index.layout import IndexLocation
from gleam.index.lease import acquire, release
from gleam_cli.main import app


@pytest.fixture
def build_args(tmp_path: Path) -> list[str]:
    """A build whose corpus does not exist: anything past the lease check fails with exit 3."""
    return [
        "index", "build",
        "--set", "name=busy",
        "--set", f"store={tmp_path / 'store'}",
        "--set", f"corpus={tmp_path / 'no-corpus'}",
        "--set", "encoder=models:/gleam-c@champion",
        "--set", "tracking.enabled=false",
    ]  # fmt: skip


@pytest.fixture
def lease_uri(tmp_path: Path) -> str:
    return IndexLocation(str(tmp_path / "store"), "busy").lease_uri


def test_a_live_lease_is_a_one_line_skip_with_the_flag_and_exit_6_without(
    build_args: list[str], lease_uri: str
) -> None:
    held = acquire(lease_uri, ttl_s=600)
    try:
        skipped = CliRunner().invoke(app, [*build_args, "--skip-if-busy"])
        assert skipped.exit_code == 0, skipped.output
        assert skipped.output.startswith("skipped: index busy is being built by ")
        assert f"pid {held.pid} on {held.host} (lease until " in skipped.output
        assert skipped.output.count("\n") == 1

        refused = CliRunner().invoke(app, build_args)
        assert refused.exit_code == 6, refused.output
        assert refused.output.startswith("error: another build holds") and f"pid {held.pid}" in refused.output
        assert storage.read_json(lease_uri)["owner"] == held.owner  # neither touched the holder's lease
    finally:
        release(lease_uri, held)


def test_an_expired_lease_is_not_a_reason_to_skip(build_args: list[str], lease_uri: str) -> None:
    """A dead build's lease is taken over by the build: the flag does not hide it (here the build then
    stops at the missing corpus, exit 3)."""
    dead = acquire(lease_uri, ttl_s=0.05)
    time.sleep(0.1)
    result = CliRunner().invoke(app, [*build_args, "--skip-if-busy"])
    assert result.exit_code == 3, result.output
    assert "skipped" not in result.output and "no complete corpus" in result.output
    release(lease_uri, dead)


def test_a_build_that_takes_the_lease_after_the_look_is_a_skip_too(
    build_args: list[str], lease_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look is not the lock: the build's own acquire can still lose the race, and that is a skip too."""
    from gleam.index import job
    from gleam.index.lease import Lease, LeaseHeldError

    winners: list[Lease] = []

    def racing_build(config: object) -> None:
        winners.append(acquire(lease_uri, ttl_s=600))  # another build, just in time
        raise LeaseHeldError(f"another build holds {lease_uri}")

    monkeypatch.setattr(job, "build_index", racing_build)
    skipped = CliRunner().invoke(app, [*build_args, "--skip-if-busy"])
    assert skipped.exit_code == 0, skipped.output
    assert f"pid {winners[0].pid} on {winners[0].host}" in skipped.output
    release(lease_uri, winners[0])

    refused = CliRunner().invoke(app, build_args)
    assert refused.exit_code == 6 and "another build holds" in refused.output
    release(lease_uri, winners[1])
