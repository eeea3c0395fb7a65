"""Read a ``personasync.toml`` into an :class:`AppConfig`, or explain every problem with it.

Order of work: parse TOML, replace ``${VAR}`` from the environment, make relative paths
relative to the config file, validate. Each problem becomes one line naming the file,
the dotted key (``destinations[1].path``) and what is wrong (``sync/config_errors.py``).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sync.config import AppConfig
from sync.config_errors import ConfigProblem, dotted_key, problems_from
from sync.redact import mask_url_passwords

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("personasync.toml")
DEFAULT_STATE_FILE = "personasync-state.db"

_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{([^}]*)\}?")


class ConfigError(Exception):
    """The config cannot be used. Carries one problem per line, each naming file and key."""

    def __init__(self, path: Path, problems: list[ConfigProblem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = []
        for problem in self.problems:
            where = f"{self.path}: {problem.key}: " if problem.key else f"{self.path}: "
            lines.append(mask_url_passwords(where + problem.message))
        return "\n".join(lines)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> AppConfig:
    """Load and validate ``path``. Raises :class:`ConfigError` listing every problem."""
    env = os.environ if environ is None else environ
    raw = _read_toml(path)
    problems: list[ConfigProblem] = []
    from_env: set[str] = set()
    data = _interpolate(raw, (), env, problems, from_env)
    _resolve_relative_paths(data, path.resolve().parent)
    missing_env_keys = {p.key for p in problems}
    try:
        config = AppConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(p for p in problems_from(exc, from_env) if p.key not in missing_env_keys)
        raise ConfigError(path, problems) from None
    if problems:
        raise ConfigError(path, problems)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            path,
            [
                ConfigProblem(
                    "", "file not found (pass --config PATH, or run `personasync demo` to create one)"
                )
            ],
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [ConfigProblem("", f"cannot read file: {exc}")]) from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
        return data
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [ConfigProblem("", f"invalid TOML: {exc}")]) from None


def _interpolate(
    value: Any,
    loc: tuple[str | int, ...],
    env: Mapping[str, str],
    problems: list[ConfigProblem],
    from_env: set[str],
) -> Any:
    """Replace ``${VAR}`` in every string; ``$$`` is a literal ``$``."""
    if isinstance(value, dict):
        return {k: _interpolate(v, (*loc, k), env, problems, from_env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*loc, i), env, problems, from_env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name is None:
            problems.append(
                ConfigProblem(
                    dotted_key(loc),
                    f"malformed reference {match.group(0)!r}: write ${{NAME}} (or $$ for a literal $)",
                )
            )
            return ""
        if name not in env:
            problems.append(ConfigProblem(dotted_key(loc), f"environment variable {name} is not set"))
            return ""
        from_env.add(dotted_key(loc))
        return env[name]

    return _ENV_REFERENCE.sub(replace, value)


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> None:
    """Relative SQLite/DuckDB files and destination folders are relative to the config file."""
    for section in ("warehouse", "state"):
        block = data.get(section)
        if isinstance(block, dict) and isinstance(block.get("url"), str):
            block["url"] = _absolute_file_url(block["url"], base)
    state = data.setdefault("state", {})
    if isinstance(state, dict) and "url" not in state and state.get("location") != "warehouse":
        state["url"] = f"sqlite:///{base / DEFAULT_STATE_FILE}"
    for destination in data.get("destinations", []) if isinstance(data.get("destinations"), list) else []:
        if isinstance(destination, dict) and isinstance(destination.get("path"), str):
            destination["path"] = str(base / destination["path"])
        if isinstance(destination, dict) and isinstance(destination.get("refresh_token_file"), str):
            destination["refresh_token_file"] = str(base / destination["refresh_token_file"])


def _absolute_file_url(url: str, base: Path) -> str:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url  # validation reports it
    database = parsed.database
    if parsed.get_backend_name() not in ("sqlite", "duckdb") or not database:
        return url
    if database == ":memory:" or database.startswith("file:") or Path(database).is_absolute():
        return url
    return parsed.set(database=str(base / database)).render_as_string(hide_password=False)
