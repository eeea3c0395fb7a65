"""``personas explain KEY``: every persona's rule tree evaluated for one customer.

Each node of each rule tree is compiled to its own SQL column, so the warehouse evaluates
the clauses with exactly the semantics of a real run; the referenced column values come
back alongside. Building the query and reading the answer are pure; the caller runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from personas.compile import RuleScope, compile_rule
from personas.config import ResolverSettings
from personas.model import Assignment
from personas.query import from_table_or_query
from personas.rules import AllRule, AnyRule, Comparison, NotRule, Rule, SqlRule


@dataclass(frozen=True)
class RuleResult:
    """One node of a rule tree and whether it matched this customer."""

    path: str
    label: str
    matched: bool
    values: Mapping[str, object]  # column -> this customer's value, for comparisons
    children: tuple[RuleResult, ...]


@dataclass(frozen=True)
class PersonaExplanation:
    name: str
    negative: bool
    matched: bool
    outcome: str  # what happened to this persona for the customer, in words
    rules: RuleResult


def _label(rule: Rule) -> str:
    if isinstance(rule, AllRule):
        return "all of"
    if isinstance(rule, AnyRule):
        return "any of"
    if isinstance(rule, NotRule):
        return "not"
    if isinstance(rule, SqlRule):
        return f"sql: {rule.sql}"
    value = "" if rule.value is None else f" {rule.value!r}"
    return f"{rule.column} {rule.op}{value}"


def _children(rule: Rule, path: str) -> list[tuple[Rule, str]]:
    if isinstance(rule, AllRule):
        return [(r, f"{path}.all[{i}]") for i, r in enumerate(rule.all)]
    if isinstance(rule, AnyRule):
        return [(r, f"{path}.any[{i}]") for i, r in enumerate(rule.any)]
    if isinstance(rule, NotRule):
        return [(rule.negated, f"{path}.not")]
    return []


def _walk(rule: Rule, path: str) -> list[tuple[Rule, str]]:
    nodes = [(rule, path)]
    for child, child_path in _children(rule, path):
        nodes.extend(_walk(child, child_path))
    return nodes


def explain_statement(
    settings: ResolverSettings, kinds: Mapping[str, str], now: datetime, key: str
) -> sa.Select[Any]:
    """One row for customer ``key``: a boolean per rule node (``n<i>``) and every column the
    rules name. Rules compile exactly as in a run."""
    src = from_table_or_query(settings.source.table, settings.source.query, list(kinds), "src")
    scope = RuleScope(source=src, kinds=kinds, now=now)
    selected: list[ColumnElement[Any]] = []
    columns: set[str] = set()
    for i, persona in enumerate(settings.personas):
        for rule, path in _walk(persona.rules, f"personas[{i}].rules"):
            selected.append(compile_rule(rule, scope, path).label(f"n{len(selected)}"))
            if isinstance(rule, Comparison):
                columns.add(rule.column)
    selected.extend(src.c[column].label(f"c_{column}") for column in sorted(columns))
    return sa.select(*selected).where(sa.cast(src.c[settings.source.key], sa.String) == key)


def read_explanation(
    settings: ResolverSettings, mapping: Mapping[str, object], assignment: Assignment
) -> list[PersonaExplanation]:
    """Each persona's evaluated tree and outcome, from :func:`explain_statement`'s row."""
    values = {name[2:]: value for name, value in mapping.items() if name.startswith("c_")}
    position = 0
    explained = []
    winner = assignment.personas[0] if assignment.personas else None
    for i, persona in enumerate(settings.personas):
        nodes = _walk(persona.rules, f"personas[{i}].rules")
        matched = [bool(mapping[f"n{position + j}"]) for j in range(len(nodes))]
        position += len(nodes)
        by_path = dict(zip((path for _, path in nodes), matched, strict=True))
        tree = _tree(persona.rules, f"personas[{i}].rules", by_path, values)
        explained.append(
            PersonaExplanation(
                name=persona.name,
                negative=persona.negative,
                matched=tree.matched,
                outcome=_outcome(persona.name, persona.negative, tree.matched, assignment, winner, settings),
                rules=tree,
            )
        )
    return explained


def _tree(rule: Rule, path: str, matched: Mapping[str, bool], values: Mapping[str, object]) -> RuleResult:
    shown = {rule.column: values.get(rule.column)} if isinstance(rule, Comparison) else {}
    return RuleResult(
        path=path,
        label=_label(rule),
        matched=matched[path],
        values=shown,
        children=tuple(_tree(child, sub, matched, values) for child, sub in _children(rule, path)),
    )


def _outcome(
    name: str,
    negative: bool,
    matched: bool,
    assignment: Assignment,
    winner: str | None,
    settings: ResolverSettings,
) -> str:
    if not matched:
        return "rules did not match"
    if negative:
        return "matched: negative persona, no persona is tagged and its channels are suppressed"
    if assignment.negative:
        return f"matched, but overridden by negative persona {assignment.negative[0]!r}"
    if name in assignment.holdouts:
        return "matched, but in the holdout group: not sent anywhere"
    if name in assignment.personas:
        return "assigned"
    holder = winner or (assignment.holdouts[0] if assignment.holdouts else None)
    if settings.assignment.mode == "first_match" and holder:
        return f"matched, but {holder!r} comes first (first_match)"
    return "matched"
