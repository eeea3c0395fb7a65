"""The CLI is documented: every command has help text and appears in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from sync.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _command_paths(group: object, prefix: str = "personasync") -> list[str]:
    """Every command and sub-command, e.g. ``personasync personas preview``."""
    paths = []
    for name, command in getattr(group, "commands", {}).items():
        path = f"{prefix} {name}"
        paths.append(path)
        paths.extend(_command_paths(command, path))
    return paths


COMMANDS = _command_paths(typer.main.get_group(cli))


def test_there_are_commands() -> None:
    assert "personasync validate" in COMMANDS and "personasync demo" in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_in_the_readme(command: str) -> None:
    assert f"`{command}" in README, f"README.md does not document `{command}`"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    args = [*command.split()[1:], "--help"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0
    assert len(result.output.strip().splitlines()) > 3


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("personasync ")
