"""Turn pydantic validation errors into one readable problem per config key.

Pydantic reports locations with the labels of union members (``rule:all``, ``file``,
``int``); these are dropped by following the location through the config model, which
also tells which keys were valid where an unknown one was written (for did-you-mean).
Values are echoed only where they cannot be credentials.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from personas.rules import suggest
from sync.config import AppConfig


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    message: str


def dotted_key(loc: tuple[str | int, ...]) -> str:
    """``("destinations", 1, "path")`` -> ``destinations[1].path``."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


_TYPE_NAMES = {"bool", "int", "float", "str", "date", "datetime", "none"}


def problems_from(exc: ValidationError, from_env: set[str]) -> list[ConfigProblem]:
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
    return message + _got(error, key, from_env, show_text=kind in ("literal_error", "enum"))


def _got(error: ErrorDetails, key: str, from_env: set[str], show_text: bool = True) -> str:
    """`` (got 5)``: the offending value, unless it came from the environment or is text
    outside a choice among names (elsewhere text may be a credential)."""
    value = error.get("input")
    if key in from_env or not isinstance(value, (str, int, float, bool)):
        return ""
    if isinstance(value, str) and not show_text:
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
