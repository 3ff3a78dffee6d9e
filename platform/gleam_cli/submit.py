"""`gleam submit` and `gleam jobs list|status|logs|stop`: run a job on a Ray cluster from here.

What travels with a job and how (the config in a working_dir, settings by name, never a secret, never
a relative path) is `gleam.submission`; this module parses the arguments, prints, and picks the exit
code: 0 SUCCEEDED; a FAILED job's own platform exit code (2-6) or 1; 143 STOPPED; 130 when Ctrl-C
ends the waiting (the job keeps running).
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gleam import submission
from gleam_cli.guard import run_guarded

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

Job = Enum("Job", {name: name for name in submission.JOB_COMMANDS}, type=str)  # type: ignore[misc]
EXIT_INTERRUPTED = 130

AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address",
        help=f"job server URL; default: RAY_API_SERVER_ADDRESS or RAY_ADDRESS (http) or "
        f"{submission.DEFAULT_ADDRESS}",
    ),
]
JobIdArgument = Annotated[str, typer.Argument(metavar="ID", help="submission id (gleam jobs list)")]

jobs_app = typer.Typer(no_args_is_help=True, help="Jobs on a Ray cluster: list, status, logs, stop.")


def submit(
    job: Annotated[Job, typer.Argument(help="the job to run")],  # type: ignore[valid-type]
    config: Annotated[Path, typer.Option("--config", "-c", help="local YAML config, uploaded with the job")],
    job_args: Annotated[
        list[str] | None,
        typer.Argument(metavar="JOB_ARGS", help="more arguments for the job, e.g. -- --incremental"),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="override a config field: key.path=value")
    ] = None,
    address: AddressOption = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="pass this variable's value from here (repeatable; never a secret)"),
    ] = None,
    allow_local_paths: Annotated[
        bool,
        typer.Option(
            "--allow-local-paths", help="resolve relative locations here (a head that shares this filesystem)"
        ),
    ] = False,
    no_default_env: Annotated[
        bool,
        typer.Option(
            "--no-default-env",
            help="pass only the --env names; the cluster's environment holds GLEAM_STORE, "
            "MLFLOW_TRACKING_URI, the S3 endpoint (this machine may reach them elsewhere: a port-forward)",
        ),
    ] = False,
    follow: Annotated[bool, typer.Option("--follow", help="stream the job's logs until it ends")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="wait until the job ends")] = False,
    entrypoint_num_cpus: Annotated[
        float | None, typer.Option(help="CPUs reserved for the job's driver")
    ] = None,
) -> None:
    """Submit a job to a Ray cluster's job server; prints its id, then with --follow/--wait its end."""
    plan = run_guarded(
        lambda: submission.plan_submission(
            job.value, config, set_, job_args, env, allow_local_paths, default_env=not no_default_env
        )
    )
    url, client = _connect(address)
    job_id = run_guarded(lambda: submission.submit(client, url, plan, entrypoint_num_cpus))
    typer.echo(f"submitted {job_id} to {url}")
    if plan.env_vars:
        typer.echo(f"env passed: {', '.join(sorted(plan.env_vars))} (values not shown)")
    if plan.not_passed:
        typer.echo(
            f"not passed (the names look secret; the cluster's environment must hold them): "
            f"{', '.join(plan.not_passed)}"
        )
    for where, value in plan.resolved.items():
        typer.echo(f"resolved here: {where}={value}")
    if not (follow or wait):
        typer.echo(f"logs: gleam jobs logs {job_id} --follow --address {url}")
        typer.echo(f"stop: gleam jobs stop {job_id} --address {url}")
        return
    _finish(client, url, job_id, follow, full_message=not follow)


@jobs_app.command("list")
def list_jobs(address: AddressOption = None) -> None:
    """Every job the cluster knows, oldest first: id, status, start and end (UTC), what it runs."""
    url, client = _connect(address)
    jobs = run_guarded(lambda: submission.list_jobs(client, url))
    rows = [("ID", "STATUS", "START", "END", "JOB")]
    for info in jobs:
        ident = info.submission_id or info.job_id or "-"
        rows.append(
            (ident, str(info.status), _time(info.start_time), _time(info.end_time), submission.summary(info))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        typer.echo(
            "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[4]])
        )


@jobs_app.command("status")
def status(job_id: JobIdArgument, address: AddressOption = None) -> None:
    """A job's status, what it runs, when, and its message."""
    url, client = _connect(address)
    info = run_guarded(lambda: submission.job_info(client, url, job_id))
    typer.echo(f"{job_id} {info.status}")
    typer.echo(f"job: {submission.summary(info)}")
    typer.echo(f"start: {_time(info.start_time)}  end: {_time(info.end_time)}")
    if info.driver_exit_code is not None:
        typer.echo(f"exit code: {info.driver_exit_code}")
    if info.message:
        typer.echo(f"message: {_first_line(info.message)}")


@jobs_app.command("logs")
def logs(
    job_id: JobIdArgument,
    follow: Annotated[
        bool, typer.Option(help="stream until the job ends, then exit with its status")
    ] = False,
    address: AddressOption = None,
) -> None:
    """Print a job's logs (its driver's output)."""
    url, client = _connect(address)
    if follow:
        _finish(client, url, job_id, follow=True, full_message=False)
    else:
        typer.echo(run_guarded(lambda: submission.job_logs(client, url, job_id)), nl=False)


@jobs_app.command("stop")
def stop(
    job_id: JobIdArgument,
    wait: Annotated[bool, typer.Option("--wait", help="wait until the job has ended")] = False,
    address: AddressOption = None,
) -> None:
    """Stop a running job (its driver gets SIGTERM, then a kill); a job that has ended is left as it is."""
    url, client = _connect(address)
    if not run_guarded(lambda: submission.stop_job(client, url, job_id)):
        info = run_guarded(lambda: submission.job_info(client, url, job_id))
        typer.echo(f"{job_id} is not running ({info.status}): nothing to stop")
        return
    typer.echo(f"stop requested for {job_id}")
    if wait:
        try:
            info = run_guarded(lambda: submission.wait_for_end(client, url, job_id))
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        typer.echo(f"{job_id} {info.status}")


def _connect(address: str | None) -> tuple[str, JobSubmissionClient]:
    url = run_guarded(lambda: submission.job_server_address(address))
    return url, run_guarded(lambda: submission.connect(url))


def _finish(client: JobSubmissionClient, url: str, job_id: str, follow: bool, full_message: bool) -> None:
    """Follow or wait until the job ends, print how it ended, exit with its code."""
    try:
        if follow:
            info = run_guarded(lambda: submission.follow_logs(client, url, job_id, _write))
        else:
            info = run_guarded(lambda: submission.wait_for_end(client, url, job_id))
    except KeyboardInterrupt:
        typer.echo(
            f"\nstopped {'following' if follow else 'waiting'}; {job_id} keeps running "
            f"(stop it with: gleam jobs stop {job_id} --address {url})",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    typer.echo(_ending(job_id, info, full_message))
    raise typer.Exit(submission.exit_code(info))


def _ending(job_id: str, info: JobDetails, full_message: bool) -> str:
    line = f"{job_id} {info.status}"
    if str(info.status) == "SUCCEEDED":
        return line
    if info.driver_exit_code is not None:
        line += f" (exit code {info.driver_exit_code})"
    message = (info.message or "").strip()
    return f"{line}: {message if full_message else _first_line(message)}" if message else line


def _write(chunk: str) -> None:
    typer.echo(chunk, nl=False)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _time(epoch_ms: int | None) -> str:
    if not epoch_ms:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
