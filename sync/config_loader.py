"""Read a ``personasync.toml`` into an :class:`AppConfig`, or explain every problem with it.

Order of work: parse TOML, replace ``${VAR}`` from the environment, make relative paths
relative to the config file, validate. Each problem becomes one line naming the file,
the dotted key (``destinations[1].path``) and what is wrong; values read from the
environment are never repeated in a message, since they are often credentials.
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from personas.rules import suggest
from sync.config import AppConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("personasync.toml")
DEFAULT_STATE_FILE = "personasync-state.db"

_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{([^}]*)\}?")


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    message: str


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


_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*:)[^@\s]+@")


def mask_url_passwords(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``, wherever it appears."""
    return _URL_PASSWORD.sub(r"\1***@", text)


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
        problems.extend(p for p in _problems_from(exc, from_env) if p.key not in missing_env_keys)
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


def dotted_key(loc: tuple[str | int, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


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
    if isinstance(state, dict) and "url" not in state:
        state["url"] = f"sqlite:///{base / DEFAULT_STATE_FILE}"
    for destination in data.get("destinations", []) if isinstance(data.get("destinations"), list) else []:
        if isinstance(destination, dict) and isinstance(destination.get("path"), str):
            destination["path"] = str(base / destination["path"])


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


# --- turning pydantic errors into readable problems -------------------------------------

_TYPE_NAMES = {"bool", "int", "float", "str", "date", "datetime", "none"}


def _problems_from(exc: ValidationError, from_env: set[str]) -> list[ConfigProblem]:
    by_key: dict[str, list[ErrorDetails]] = {}
    for error in exc.errors():
        key = dotted_key(_clean_loc(error["loc"]))
        by_key.setdefault(key, []).append(error)
    problems = []
    for key, errors in by_key.items():
        if len(errors) > 1 and all(e["type"] not in ("extra_forbidden", "missing") for e in errors):
            problems.append(ConfigProblem(key, "has a value of the wrong type"))
            continue
        for error in errors:
            problems.append(ConfigProblem(key, _message(error, key, from_env)))
    return problems


def _message(error: ErrorDetails, key: str, from_env: set[str]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        unknown = str(error["loc"][-1])
        valid = _valid_keys_at(error["loc"][:-1])
        hint = suggest(unknown, valid) if valid else None
        did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
        listing = f"; valid keys: {', '.join(valid)}" if valid and not hint else ""
        return f"unknown key {unknown!r}{did_you_mean}{listing}"
    if kind == "missing":
        return "missing required key"
    if kind in ("value_error", "assertion_error"):
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind == "string_pattern_mismatch":
        rule = "must be lower-case letters, digits, '_' or '-', starting with a letter"
        return rule + _got(error, key, from_env)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a table: a [section] or { key = value, ... }"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    message = error["msg"]
    if message.startswith("Input should be"):
        message = "must be" + message[len("Input should be") :]
    # Text is echoed only where it is a choice among names; elsewhere it may be a credential.
    shows_text = kind in ("literal_error", "enum")
    return message + (
        _got(error, key, from_env) if shows_text or not isinstance(error.get("input"), str) else ""
    )


def _got(error: ErrorDetails, key: str, from_env: set[str]) -> str:
    value = error.get("input")
    if key in from_env or not isinstance(value, (str, int, float, bool)):
        return ""
    text = repr(value)
    return f" (got {text[:60]}{'...' if len(text) > 60 else ''})"


def _clean_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop the union-member labels pydantic adds (``rule:all``, ``file``, ``int``...)."""
    return _walk(loc)[0]


def _valid_keys_at(loc: tuple[str | int, ...]) -> list[str]:
    model = _model_for(_unwrap(_walk(loc)[1]))
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _walk(loc: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], Any]:
    """Follow ``loc`` through the config model: the key a user wrote, and the type found there."""
    annotation: Any = AppConfig
    cleaned: list[str | int] = []
    for part in loc:
        if isinstance(part, str):
            member = _tagged_member(annotation, part)
            if member is not None:
                annotation = member
                continue
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            cleaned.append(part)
            annotation = _list_item(annotation)
            continue
        model = _model_for(annotation)
        field = _field(model, part) if model is not None else None
        if field is not None:
            cleaned.append(part)
            annotation = field.annotation
        else:
            annotation = None
            if part not in _TYPE_NAMES and "[" not in part:
                cleaned.append(part)
    return tuple(cleaned), annotation


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if _is_union(annotation):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _list_item(annotation: Any) -> Any:
    if get_origin(annotation) is list:
        return get_args(annotation)[0]
    return None


def _model_for(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _field(model: type[BaseModel], part: str) -> Any:
    for name, field in model.model_fields.items():
        if part in (name, field.alias):
            return field
    return None


def _tagged_member(annotation: Any, label: str) -> Any:
    """The member of a tagged union that pydantic labelled ``label`` in an error location."""
    while get_origin(annotation) is Annotated and not _tags(annotation):
        annotation = get_args(annotation)[0]
    candidates = get_args(annotation) if _is_union(annotation) else (annotation,)
    for member in candidates:
        if label in _tags(member):
            return get_args(member)[0]
    return None


def _tags(annotation: Any) -> set[str]:
    if get_origin(annotation) is not Annotated:
        return set()
    return {m.tag for m in get_args(annotation)[1:] if isinstance(getattr(m, "tag", None), str)}
