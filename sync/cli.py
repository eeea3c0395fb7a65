"""The ``personasync`` command line: parse, load config, call one library function, render.

Every command exits with a code from :mod:`sync.exit_codes`; no traceback reaches the
operator for a problem they can fix (bad config, unreachable warehouse).
"""

from __future__ import annotations

import importlib.metadata
import json
from datetime import datetime, time, timezone
from pathlib import Path

import typer

from connectors import demo_data
from sync import app as api
from sync import cli_sync, render, render_sync
from sync.cli_common import AS_OF_OPTION, CONFIG_OPTION, config_problems
from sync.cli_common import clock as _clock
from sync.cli_common import fail as _fail
from sync.cli_common import load as _load
from sync.cli_common import parse_date as _parse_date
from sync.config import AppConfig
from sync.config_loader import ConfigError
from sync.engine import SyncOptions, SyncSummary
from sync.exit_codes import ExitCode
from sync.lock import LockHeld
from sync.redact import Redactor, secrets_in
from sync.validate import Check

cli = typer.Typer(
    name="personasync",
    help=(
        "Reverse ETL for CRM personas: assign customers in your warehouse to personas and "
        "sync persona tags and suppressions to email, SMS and CRM tools, sending only changes."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"personasync {version()}")
        raise typer.Exit()


def version() -> str:
    try:
        return importlib.metadata.version("personasync")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


@cli.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Reverse ETL for CRM personas."""


def _render_checks(checks: list[Check], redact: Redactor, config_path: Path) -> None:
    """``ok`` lines as a table; ``problem`` lines name the file and key, like config errors."""
    width = max((len(c.key) for c in checks if c.ok), default=0)
    for check in checks:
        if check.ok:
            typer.echo(redact(f"ok       {check.key.ljust(width)}  {check.message}"))
        else:
            typer.echo(redact(f"problem  {config_path}: {check.key}: {check.message}"), err=True)


@cli.command()
def validate(config: Path = CONFIG_OPTION) -> None:
    """Check the config, then that the warehouse has every table and column it names.

    Connects read-only. Prints one ok/problem line per check; exits 2 on any problem.
    """
    app_config = _load(config)
    redact = Redactor(secrets_in(app_config))
    checks = [_summary_check(config, app_config), *api.validate_config(app_config)]
    _render_checks(checks, redact, config)
    if not all(c.ok for c in checks):
        raise typer.Exit(int(ExitCode.CONFIG))


def _summary_check(path: Path, config: AppConfig) -> Check:
    return Check(
        True,
        "config",
        f"{path}: {len(config.personas)} personas, {len(config.suppressions)} suppression sources, "
        f"{len(config.destinations)} destinations",
    )


@cli.command()
def demo(
    directory: Path = typer.Option(
        Path("personasync-demo"), "--dir", help="Folder for the demo warehouse and config."
    ),
    customers: int = typer.Option(10_000, "--customers", min=1, help="Number of synthetic customers."),
    seed: int = typer.Option(42, "--seed", help="Random seed; the same seed gives the same data."),
    as_of: str = typer.Option(
        None,
        "--as-of",
        help="Date the data is relative to (YYYY-MM-DD); default today (UTC).",
        show_default=False,
    ),
    force: bool = typer.Option(False, "--force", help="Regenerate the warehouse even if it is up to date."),
    mutate: bool = typer.Option(
        False, "--mutate", help="First change a few hundred customers, so the sync shows a small diff."
    ),
) -> None:
    """Build a demo SQLite warehouse with synthetic customers, write its config, validate it,
    and sync it into two local file destinations (CSV files under outbox/)."""
    day = _parse_date(as_of) if as_of else datetime.now(timezone.utc).date()
    typer.echo(f"Building the demo warehouse in {directory} ({customers:,} customers, seed {seed}) ...")
    try:
        result = api.build_demo(directory, customers=customers, seed=seed, as_of=day, force=force)
    except ConfigError as exc:
        _fail(exc.render(), ExitCode.CONFIG)
    state = "generated" if result.generated else "up to date, reused"
    typer.echo(f"warehouse  {result.warehouse} ({state}; data as of {result.spec.as_of})")
    typer.echo(f"config     {result.config_path}")
    _render_checks(result.checks, Redactor(), result.config_path)
    if not all(c.ok for c in result.checks):
        raise typer.Exit(int(ExitCode.CONFIG))
    config = _load(result.config_path)
    clock = datetime.combine(result.spec.as_of, time.min, tzinfo=timezone.utc)
    console = render.wide_console()
    if mutate:
        mutation = demo_data.mutate_sqlite_demo(result.warehouse)
        typer.echo(f"\nMutation {mutation.round}: changed {mutation.customers} customers in the warehouse")
        for label, keys in mutation.changed.items():
            typer.echo(f"  {len(keys):>4}  {label} (e.g. key {keys[0]})")
    elif result.generated:
        typer.echo("")
        try:
            render.preview_table(api.preview(config, clock), console)
        except api.ResolveProblem as exc:
            _fail(f"problem  {result.config_path}: {exc.key}: {exc.message}", ExitCode.CONFIG)
    first_sync = not api.run_history(config, 1)
    typer.echo("\nSyncing into the file destinations ...")
    if first_sync:
        typer.echo(
            "(first sync: customers without consent are suppressed, more than the 20 % guardrail allows; "
            "the demo allows it, a real first sync stops and asks for --allow-large-changes)"
        )
    try:
        summary = api.sync(config, clock=clock, options=SyncOptions(allow_large_changes=first_sync))
    except api.ResolveProblem as exc:
        _fail(f"problem  {result.config_path}: {exc.key}: {exc.message}", ExitCode.CONFIG)
    except LockHeld as exc:
        _fail(f"locked   {exc}", ExitCode.LOCKED)
    render_sync.sync_summary(summary.as_json(), console)
    config_arg = f"--config {result.config_path}"
    as_of_arg = f"--as-of {result.spec.as_of}"
    example = _example_key(summary) or "1"
    typer.echo(
        f"\nFiles: {directory / 'outbox'}\n"
        f"Next: personasync demo --mutate --dir {directory} {as_of_arg}   (change customers, sync the diff)\n"
        f"      personasync sync --dry-run {config_arg} {as_of_arg}\n"
        f"      personasync runs list {config_arg}\n"
        f"      personasync personas explain {example} {config_arg} {as_of_arg}"
    )
    if summary.exit_code is not ExitCode.OK:
        raise typer.Exit(int(summary.exit_code))


def _example_key(summary: SyncSummary) -> str | None:
    for plan in summary.plans:
        for changes in plan["samples"].values():
            if changes:
                return str(changes[0]["key"])
    return None


personas_cli = typer.Typer(
    help="See which personas customers get, and why, without sending anything.", no_args_is_help=True
)
cli.add_typer(personas_cli, name="personas")

FORMAT_OPTION = typer.Option("table", "--format", help="'table' for people, 'json' for scripts.")


def _check_format(output_format: str) -> None:
    if output_format not in ("table", "json"):
        _fail(f"--format: expected 'table' or 'json', got {output_format!r}", ExitCode.CONFIG)


@personas_cli.command("preview")
def personas_preview(
    config: Path = CONFIG_OPTION, output_format: str = FORMAT_OPTION, as_of: str = AS_OF_OPTION
) -> None:
    """Count members, holdouts and per-channel eligibility for every persona.

    Runs the resolver query in the warehouse (read-only); sends nothing.
    """
    _check_format(output_format)
    app_config = _load(config)
    redact = Redactor(secrets_in(app_config))
    with config_problems(config, redact):
        result = api.preview(app_config, _clock(as_of))
    if output_format == "json":
        typer.echo(json.dumps(result.as_json(), indent=2))
    else:
        render.preview_table(result, render.wide_console())


@personas_cli.command("explain")
def personas_explain(
    key: str = typer.Argument(..., help="The customer's key, as in the source's key column."),
    config: Path = CONFIG_OPTION,
    output_format: str = FORMAT_OPTION,
    as_of: str = AS_OF_OPTION,
) -> None:
    """Show, for one customer, each persona's rules with their values, the winner and why.

    Also shows the holdout status and, per channel, consent and suppression reasons.
    """
    _check_format(output_format)
    app_config = _load(config)
    redact = Redactor(secrets_in(app_config))
    with config_problems(config, redact):
        result = api.explain(app_config, _clock(as_of), key)
    if output_format == "json":
        typer.echo(json.dumps(render.explanation_json(result), indent=2))
    else:
        render.explanation_tree(result, render.wide_console())


cli.command("sync")(cli_sync.sync_command)
cli.command("apply")(cli_sync.apply_command)
cli.add_typer(cli_sync.runs_cli, name="runs")
cli.add_typer(cli_sync.destinations_cli, name="destinations")


def main() -> None:
    cli()
