"""The ``sync``, ``apply``, ``runs`` and ``destinations`` commands (registered in ``sync/cli.py``)."""

from __future__ import annotations

import json
import signal
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import typer

from sync import app as api
from sync import render, render_sync
from sync.apply import NoProgress, Progress
from sync.cli_common import AS_OF_OPTION, CONFIG_OPTION, clock, config_problems, fail, load
from sync.config import AppConfig
from sync.engine import SyncOptions, SyncSummary
from sync.exit_codes import ExitCode
from sync.lock import LockHeld
from sync.ports import DestinationError, SetupStatus
from sync.progress import BarProgress, LogProgress, setup_logging
from sync.redact import Redactor, secrets_in
from sync.shard import Shard, ShardError
from sync.spool import PlanError

OUTPUT_FORMAT = typer.Option("text", "--format", help="'text' for people, 'json' for scripts.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar or log lines (warnings still show).")
LOG_FORMAT = typer.Option("text", "--log-format", help="Log lines on stderr as 'text' or 'json'.")


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(f"{option}: expected one of {', '.join(choices)}; got {value!r}", ExitCode.CONFIG)


def _progress(quiet: bool, output_format: str) -> AbstractContextManager[Progress]:
    if quiet:
        return nullcontext(NoProgress())
    if sys.stderr.isatty() and output_format == "text":
        return BarProgress()
    return nullcontext(LogProgress())


def _exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM (Kubernetes, systemd, Airflow stopping a task) into a normal exit, so the
    run is recorded as failed and its lock released instead of left to go stale."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def _start(config: Path, output_format: str, log_format: str, quiet: bool) -> tuple[AppConfig, Redactor]:
    """What every command that sends starts with: options checked, config loaded, logging
    redacted, SIGTERM turned into a clean exit."""
    _check_choice("--format", output_format, ("text", "json"))
    _check_choice("--log-format", log_format, ("text", "json"))
    app_config = load(config)
    redact = Redactor(secrets_in(app_config))
    setup_logging(log_format, quiet, redact)
    _exit_cleanly_on_sigterm()
    return app_config, redact


def sync_command(
    config: Path = CONFIG_OPTION,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Plan and print; send nothing, record nothing (caches aside)."
    ),
    destination: list[str] = typer.Option(
        [], "--destination", "-d", help="Only this destination (repeatable); default: all."
    ),
    output_format: str = OUTPUT_FORMAT,
    plan_out: Path = typer.Option(
        None, "--plan-out", help="Save the plan to this file, for `personasync apply`.", show_default=False
    ),
    full_resync: bool = typer.Option(
        False,
        "--full-resync",
        help="Re-send every desired tag and suppression (drift repair).",
    ),
    allow_large_changes: bool = typer.Option(
        False, "--allow-large-changes", help="Go ahead even when a guardrail would block the run."
    ),
    recheck_all: bool = typer.Option(
        False,
        "--recheck-all",
        help="Plan every customer in personasync, none skipped in the warehouse as verified in sync.",
    ),
    retry_failed: bool = typer.Option(
        False,
        "--retry-failed",
        help="Also re-send changes that failed permanently for unchanged data.",
    ),
    shard: str = typer.Option(
        None,
        "--shard",
        help="Only the customers of shard I of N (I from 0, e.g. 2/8), under that shard's lock and "
        "with 1/N of each vendor's rate limit: N workers together do one sync.",
        show_default=False,
    ),
    as_of: str = AS_OF_OPTION,
    quiet: bool = QUIET,
    log_format: str = LOG_FORMAT,
) -> None:
    """Send persona tags and suppressions to the destinations: only what changed since the
    last acknowledged state. Exit codes: 0 ok, 1 some records failed, 2 config, 3 guardrail,
    4 lock held, 5 destination unusable."""
    try:
        chosen_shard = Shard.parse(shard) if shard is not None else None
    except ShardError as exc:
        fail(f"problem  {exc}", ExitCode.CONFIG)
    app_config, redact = _start(config, output_format, log_format, quiet)
    options = SyncOptions(
        dry_run=dry_run,
        full_resync=full_resync,
        allow_large_changes=allow_large_changes,
        retry_failed=retry_failed,
        plan_out=plan_out,
        shard=chosen_shard,
        recheck_all=recheck_all,
    )
    try:
        with config_problems(config, redact), _progress(quiet or dry_run, output_format) as progress:
            summary = api.sync(
                app_config, clock=clock(as_of), destinations=destination, options=options, progress=progress
            )
    except LockHeld as exc:
        fail(redact(f"locked   {exc}"), ExitCode.LOCKED)
    _finish(summary, output_format, redact, plan_out)


def apply_command(
    plan_file: Path = typer.Argument(..., help="A plan saved by `sync --dry-run --plan-out FILE`."),
    config: Path = CONFIG_OPTION,
    output_format: str = OUTPUT_FORMAT,
    allow_large_changes: bool = typer.Option(
        False, "--allow-large-changes", help="Apply a plan that a guardrail blocked."
    ),
    quiet: bool = QUIET,
    log_format: str = LOG_FORMAT,
) -> None:
    """Apply exactly the changes of a saved plan; refuses if the state changed since it was made."""
    app_config, redact = _start(config, output_format, log_format, quiet)
    try:
        with _progress(quiet, output_format) as progress:
            summary = api.apply_plan(
                app_config, plan_file, allow_large_changes=allow_large_changes, progress=progress
            )
    except (PlanError, api.ResolveProblem) as exc:
        fail(redact(f"problem  {exc}"), ExitCode.CONFIG)
    except LockHeld as exc:
        fail(redact(f"locked   {exc}"), ExitCode.LOCKED)
    _finish(summary, output_format, redact, None)


def _finish(summary: SyncSummary, output_format: str, redact: Redactor, plan_out: Path | None) -> None:
    data = summary.as_json()
    if output_format == "json":
        typer.echo(redact(json.dumps(data, indent=2)))
    else:
        console = render.wide_console()
        render_sync.sync_summary(data, console)
        if summary.message:
            console.print(redact(summary.message))
        if plan_out is not None:
            console.print(f"Plan saved to {plan_out}; apply it with: personasync apply {plan_out}")
    raise typer.Exit(int(summary.exit_code))


runs_cli = typer.Typer(help="Run history: what each sync did, and why records failed.", no_args_is_help=True)


@runs_cli.command("list")
def runs_list(
    config: Path = CONFIG_OPTION,
    limit: int = typer.Option(20, "--limit", min=1, help="How many of the latest runs."),
    output_format: str = OUTPUT_FORMAT,
) -> None:
    """The latest runs, newest first: status, duration, changes applied, failures, requests."""
    _check_choice("--format", output_format, ("text", "json"))
    app_config = load(config)
    with config_problems(config, Redactor(secrets_in(app_config))):
        runs = api.run_history(app_config, limit)
    if output_format == "json":
        typer.echo(json.dumps([render_sync.run_record_json(r) for r in runs], indent=2))
    elif not runs:
        typer.echo("No runs yet.")
    else:
        render_sync.run_list(runs, render.wide_console())


@runs_cli.command("show")
def runs_show(
    run_id: int = typer.Argument(..., help="The run's number, from `personasync runs list`."),
    config: Path = CONFIG_OPTION,
    output_format: str = OUTPUT_FORMAT,
    failures: int = typer.Option(50, "--failures", min=0, help="How many failed records to list."),
) -> None:
    """One run: counts per destination and change, failed records with reasons, moves between
    personas, duration and requests."""
    _check_choice("--format", output_format, ("text", "json"))
    app_config = load(config)
    with config_problems(config, Redactor(secrets_in(app_config))):
        details = api.run_details(app_config, run_id, failures)
    if details is None:
        fail(f"no run {run_id} in the state store (see `personasync runs list`)", ExitCode.CONFIG)
    if output_format == "json":
        data: Any = render_sync.run_details_json(details)
        typer.echo(json.dumps(data, indent=2))
    else:
        render_sync.run_details(details, render.wide_console())


destinations_cli = typer.Typer(
    help="The configured destinations: are they reachable and set up?", no_args_is_help=True
)


@destinations_cli.command("check")
def destinations_check(
    config: Path = CONFIG_OPTION,
    destination: list[str] = typer.Option(
        [], "--destination", "-d", help="Only this destination (repeatable); default: all."
    ),
    output_format: str = OUTPUT_FORMAT,
) -> None:
    """Verify each destination's credentials and that the lists, audiences and properties it
    names exist. Reads only; sends nothing. Exits 5 if any destination has a problem."""
    _check_choice("--format", output_format, ("text", "json"))
    app_config = load(config)
    redact = Redactor(secrets_in(app_config))
    with config_problems(config, redact):
        checks = api.check_destinations(app_config, destination)
    if output_format == "json":
        rows = [
            {"destination": c.name, "type": c.type, "channel": c.channel, "ok": c.ok, "problem": c.problem}
            for c in checks
        ]
        typer.echo(redact(json.dumps(rows, indent=2)))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            line = f"{c.name.ljust(width)}  {c.type}, {c.channel}"
            if c.ok:
                typer.echo(redact(f"ok       {line}"))
            else:
                typer.echo(redact(f"problem  {line}: {c.problem}"), err=True)
    if not all(c.ok for c in checks):
        raise typer.Exit(int(ExitCode.DESTINATION_FATAL))


@destinations_cli.command("setup")
def destinations_setup(
    config: Path = CONFIG_OPTION,
    destination: str = typer.Option(..., "--destination", "-d", help="The destination to set up."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be created; change nothing."),
) -> None:
    """Create what a destination needs in the vendor's account: HubSpot's tag property and
    its options. For Salesforce, whose fields only an admin or the Metadata API can create,
    print the exact change to make. Exits 5 while something is left for a person to do."""
    app_config = load(config)
    redact = Redactor(secrets_in(app_config))
    with config_problems(config, redact):
        try:
            result = api.setup_destination(app_config, destination, dry_run)
        except DestinationError as exc:
            fail(redact(str(exc)), ExitCode.DESTINATION_FATAL)
    for step in result.steps:
        line = f"{step.status.value:<9} {step.what}"
        typer.echo(redact(line), err=step.status is SetupStatus.MANUAL)
    if dry_run and any(step.status is SetupStatus.WOULD_DO for step in result.steps):
        typer.echo("dry run: nothing was changed; run again without --dry-run to make these changes")
    if not result.complete:
        raise typer.Exit(int(ExitCode.DESTINATION_FATAL))
