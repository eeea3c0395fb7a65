"""Pieces every ``personasync`` command shares: options, config loading, failing cleanly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import NoReturn

import typer

from sync.app import ResolveProblem
from sync.config import AppConfig
from sync.config_loader import DEFAULT_CONFIG_PATH, ConfigError, load_config
from sync.exit_codes import ExitCode

CONFIG_OPTION = typer.Option(
    DEFAULT_CONFIG_PATH, "--config", "-c", help="Path to the TOML config file.", show_default=True
)


def fail(message: str, code: ExitCode) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(int(code))


@contextmanager
def config_problems(config_path: Path, redact: Callable[[str], str]) -> Iterator[None]:
    """A config or warehouse problem becomes a ``problem  FILE: KEY: MESSAGE`` line and exit 2."""
    try:
        yield
    except ResolveProblem as exc:
        fail(redact(f"problem  {config_path}: {exc.key}: {exc.message}"), ExitCode.CONFIG)


def load(config_path: Path) -> AppConfig:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        fail(exc.render(), ExitCode.CONFIG)


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"--as-of: not a date in YYYY-MM-DD form: {text!r}", ExitCode.CONFIG)


AS_OF_OPTION = typer.Option(
    None,
    "--as-of",
    help="Evaluate relative-day rules as of this date (YYYY-MM-DD) instead of now.",
    show_default=False,
)


def clock(as_of: str | None) -> datetime:
    if as_of is None:
        return datetime.now(timezone.utc)
    return datetime.combine(parse_date(as_of), time.min, tzinfo=timezone.utc)
