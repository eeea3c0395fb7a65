"""Compile a persona rule tree into one SQLAlchemy boolean expression.

The expression runs inside the warehouse, so no customer row is evaluated in Python.
Semantics, the same on every dialect:

- Two-valued logic: a comparison on a NULL column is *false* (never NULL), so ``not``
  behaves as a marketer expects (``not { country = "US" }`` includes customers with no
  country). Only ``is_null`` / ``not_null`` look at NULLs.
- ``within_days N``: the column is on or after the run's date minus N days;
  ``older_than_days N``: strictly before it. The bound is a parameter computed from the
  run's clock, never a dialect date function.
- ``contains`` / ``starts_with`` ignore case and treat ``%`` and ``_`` literally.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from personas.rules import (
    DAY_OPS,
    ORDERING_OPS,
    TEXT_OPS,
    AllRule,
    AnyRule,
    Comparison,
    NotRule,
    Rule,
    Scalar,
    SqlRule,
    suggest,
)


class RuleError(Exception):
    """A rule cannot run against this source. ``path`` is the dotted config key of the rule."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class RuleScope:
    """What a rule is compiled against: the source's columns, their kinds, and the run's clock."""

    source: sa.FromClause
    kinds: Mapping[str, str]  # column -> number | text | date | datetime | boolean | unknown
    now: datetime  # timezone-aware; the run's clock

    @property
    def today(self) -> date:
        return self.now.astimezone(timezone.utc).date()


def compile_rule(rule: Rule, scope: RuleScope, path: str) -> ColumnElement[bool]:
    """The rule as a boolean SQL expression that is never NULL. Raises :class:`RuleError`."""
    if isinstance(rule, AllRule):
        return sa.and_(*(compile_rule(r, scope, f"{path}.all[{i}]") for i, r in enumerate(rule.all)))
    if isinstance(rule, AnyRule):
        return sa.or_(*(compile_rule(r, scope, f"{path}.any[{i}]") for i, r in enumerate(rule.any)))
    if isinstance(rule, NotRule):
        return sa.not_(compile_rule(rule.negated, scope, f"{path}.not"))
    if isinstance(rule, SqlRule):
        return _never_null(sa.literal_column(f"({rule.sql})", sa.Boolean))
    return _compile_comparison(rule, scope, path)


def _never_null(expression: ColumnElement[bool]) -> ColumnElement[bool]:
    return sa.func.coalesce(expression, sa.false(), type_=sa.Boolean)


def _compile_comparison(rule: Comparison, scope: RuleScope, path: str) -> ColumnElement[bool]:
    if rule.column not in scope.kinds:
        hint = suggest(rule.column, list(scope.kinds))
        did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
        raise RuleError(f"{path}.column", f"column {rule.column!r} not found in the source{did_you_mean}")
    kind = scope.kinds[rule.column]
    problem = type_problem(rule, kind)
    if problem:
        raise RuleError(path, problem)
    column: ColumnElement[object] = scope.source.c[rule.column]
    op, value = rule.op, rule.value
    if op == "is_null":
        return column.is_(None)
    if op == "not_null":
        return column.is_not(None)
    if op in DAY_OPS:
        assert isinstance(value, int)
        bound = _day_bound(scope, kind, value)
        return _never_null(column >= bound if op == "within_days" else column < bound)
    if op in TEXT_OPS:
        assert isinstance(value, str)
        lowered = sa.func.lower(column)
        matcher = lowered.contains if op == "contains" else lowered.startswith
        return _never_null(matcher(value.lower(), autoescape=True))
    if op in ("in", "not_in"):
        assert isinstance(value, list)
        return _never_null(column.in_(value) if op == "in" else column.not_in(value))
    if op == "between":
        assert isinstance(value, list)
        return _never_null(column.between(value[0], value[1]))
    comparisons = {
        "=": column.__eq__, "!=": column.__ne__, ">": column.__gt__,
        ">=": column.__ge__, "<": column.__lt__, "<=": column.__le__,
    }  # fmt: skip
    return _never_null(comparisons[op](value))


def _day_bound(scope: RuleScope, kind: str, days: int) -> date | datetime:
    day = scope.today - timedelta(days=days)
    if kind == "datetime":
        return datetime.combine(day, time.min)
    return day


_VALUE_KINDS: dict[str, tuple[type, ...]] = {
    "number": (int, float),
    "text": (str,),
    "date": (date,),
    "datetime": (date,),
    "boolean": (bool,),
}


def type_problem(rule: Comparison, kind: str) -> str | None:
    """Why ``rule`` cannot apply to a column of ``kind``, or None. Unknown kinds are not checked."""
    if kind == "unknown" or rule.op in ("is_null", "not_null"):
        return None
    if rule.op in DAY_OPS:
        if kind not in ("date", "datetime"):
            return f"op {rule.op!r} needs a date or timestamp column; {rule.column!r} is {kind}"
        return None
    if rule.op in TEXT_OPS and kind != "text":
        return f"op {rule.op!r} needs a text column; {rule.column!r} is {kind}"
    if rule.op in ORDERING_OPS and kind == "boolean":
        return f"op {rule.op!r} cannot order the boolean column {rule.column!r}; use '='"
    values = rule.value if isinstance(rule.value, list) else [rule.value]
    for value in values:
        if not _fits(value, kind):
            return (
                f"compares the {kind} column {rule.column!r} with {type(value).__name__} {value!r}; "
                f"use a {kind} value"
            )
    return None


def _fits(value: Scalar | None, kind: str) -> bool:
    if kind == "boolean" and isinstance(value, int) and value in (0, 1):
        return True  # databases without a real boolean type store 0/1
    if isinstance(value, bool) and kind != "boolean":
        return False
    return isinstance(value, _VALUE_KINDS.get(kind, (object,)))
