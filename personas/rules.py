"""The persona rule language: a tree of ``all`` / ``any`` / ``not`` over column comparisons.

A rule in TOML is one of::

    { all = [RULE, ...] }          every child matches
    { any = [RULE, ...] }          at least one child matches
    { not = RULE }                 the child does not match
    { column = "c", op = ">=", value = 5 }
    { sql = "boolean SQL expression" }   escape hatch for dialect-specific logic

This module only describes and validates the tree; turning it into SQL is the
resolver's job, so the same tree runs on every warehouse dialect.
"""

from __future__ import annotations

import difflib
from datetime import date, datetime
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

ComparisonOp = Literal[
    "=",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "in",
    "not_in",
    "between",
    "is_null",
    "not_null",
    "within_days",
    "older_than_days",
    "contains",
    "starts_with",
]
COMPARISON_OPS: Final[tuple[str, ...]] = get_args(ComparisonOp)

# Spellings people reach for, mapped to the op we spell differently.
_OP_SYNONYMS: Final[dict[str, str]] = {
    "==": "=",
    "eq": "=",
    "equals": "=",
    "<>": "!=",
    "ne": "!=",
    "neq": "!=",
    "gt": ">",
    "gte": ">=",
    "ge": ">=",
    "lt": "<",
    "lte": "<=",
    "le": "<=",
    "not in": "not_in",
    "nin": "not_in",
    "is null": "is_null",
    "null": "is_null",
    "is not null": "not_null",
    "notnull": "not_null",
    "startswith": "starts_with",
    "like": "contains",
}

Scalar = bool | int | float | str | datetime | date

ORDERING_OPS: Final[frozenset[str]] = frozenset({">", ">=", "<", "<=", "between"})
DAY_OPS: Final[frozenset[str]] = frozenset({"within_days", "older_than_days"})
TEXT_OPS: Final[frozenset[str]] = frozenset({"contains", "starts_with"})


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The closest valid spelling of ``word`` among ``choices``, if one is close enough."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if matches:
        return matches[0]
    lowered = {c.lower(): c for c in choices}
    return lowered.get(word.lower())


class _RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Comparison(_RuleModel):
    """``{ column, op, value }``: compare one source column with a literal value."""

    column: str = Field(min_length=1, description="Column of the source model.")
    op: ComparisonOp = Field(description="Comparison operator.")
    value: Scalar | list[Scalar] | None = Field(
        default=None, description="Literal to compare with; its shape depends on op."
    )

    @field_validator("op", mode="before")
    @classmethod
    def _known_op(cls, op: Any) -> Any:
        if not isinstance(op, str) or op in COMPARISON_OPS:
            return op
        hint = _OP_SYNONYMS.get(op.strip().lower()) or suggest(op, COMPARISON_OPS)
        did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
        raise ValueError(f"unknown op {op!r}{did_you_mean}; valid ops: {', '.join(COMPARISON_OPS)}")

    @model_validator(mode="after")
    def _value_fits_op(self) -> Comparison:
        problem = _value_problem(self.op, self.value)
        if problem:
            raise ValueError(f"op {self.op!r} {problem}")
        return self


def _value_problem(op: str, value: object) -> str | None:
    """Why ``value`` cannot be used with ``op``, or None when it can."""
    if op in ("is_null", "not_null"):
        return None if value is None else "takes no value"
    if value is None:
        hint = ' (use op = "is_null")' if op == "=" else ""
        return f"needs a value{hint}"
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            return 'needs a non-empty list of values, e.g. value = ["a", "b"]'
        return None
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            return "needs a list of exactly two values [low, high]"
        low, high = value
        try:
            if low > high:
                return f"has low {low!r} greater than high {high!r}"
        except TypeError:
            return "needs two values of the same type"
        return None
    if isinstance(value, list):
        return 'takes a single value, not a list (use op = "in" for a list)'
    if op in DAY_OPS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return "needs a whole number of days >= 0"
        return None
    if op in TEXT_OPS and not isinstance(value, str):
        return "needs a text value"
    if op in ORDERING_OPS and isinstance(value, bool):
        return 'cannot order booleans; use op = "="'
    return None


class SqlRule(_RuleModel):
    """``{ sql = "..." }``: a boolean SQL expression over the source columns, passed through as is."""

    sql: str = Field(min_length=1, description="Boolean SQL expression in the warehouse dialect.")


class AllRule(_RuleModel):
    all: list[Rule] = Field(min_length=1, description="Every child rule must match.")


class AnyRule(_RuleModel):
    any: list[Rule] = Field(min_length=1, description="At least one child rule must match.")


class NotRule(_RuleModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    negated: Rule = Field(alias="not", description="The child rule must not match.")


_TAG_BY_KEY: Final[dict[str, str]] = {
    "all": "rule:all",
    "any": "rule:any",
    "not": "rule:not",
    "sql": "rule:sql",
}
_TAG_BY_CLASS: Final[dict[type[BaseModel], str]] = {
    AllRule: "rule:all",
    AnyRule: "rule:any",
    NotRule: "rule:not",
    SqlRule: "rule:sql",
    Comparison: "rule:compare",
}


def _rule_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return _TAG_BY_CLASS.get(type(value))
    if not isinstance(value, dict):
        return None
    for key, tag in _TAG_BY_KEY.items():
        if key in value:
            return tag
    return "rule:compare"


Rule = Annotated[
    Annotated[AllRule, Tag("rule:all")]
    | Annotated[AnyRule, Tag("rule:any")]
    | Annotated[NotRule, Tag("rule:not")]
    | Annotated[SqlRule, Tag("rule:sql")]
    | Annotated[Comparison, Tag("rule:compare")],
    Discriminator(
        _rule_kind,
        custom_error_type="invalid_rule",
        custom_error_message=(
            "a rule must be a table: { all = [...] }, { any = [...] }, { not = {...} }, "
            '{ column = ..., op = ..., value = ... } or { sql = "..." }'
        ),
    ),
]

for _model in (AllRule, AnyRule, NotRule):
    _model.model_rebuild()


def has_sql(rule: Rule) -> bool:
    """Whether the tree holds a raw ``sql`` rule, which only the warehouse can check."""
    if isinstance(rule, SqlRule):
        return True
    if isinstance(rule, AllRule):
        return any(has_sql(r) for r in rule.all)
    if isinstance(rule, AnyRule):
        return any(has_sql(r) for r in rule.any)
    if isinstance(rule, NotRule):
        return has_sql(rule.negated)
    return False
