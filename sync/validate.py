"""``personasync validate``: does the config match the warehouse it points at?

Pure checks over a :class:`~sync.ports.Catalog`: every table and query referenced by the
config is described once, every column the config names must exist in it, and every
persona's rules must compile against the source's column kinds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from personas.compile import RuleError, RuleScope, compile_rule
from personas.config import SourceConfig, SuppressionConfig
from personas.query import from_table_or_query
from personas.rules import has_sql, suggest
from sync.config import AppConfig
from sync.ports import Catalog, SourceError


@dataclass(frozen=True)
class Check:
    """One line of the validation report."""

    ok: bool
    key: str
    message: str


def source_column_references(config: AppConfig) -> Iterator[tuple[str, str]]:
    """``(config key, column)`` for every column the config expects in the source model."""
    source = config.source
    yield "source.key", source.key
    if source.email:
        yield "source.email", source.email
    if source.phone:
        yield "source.phone", source.phone
    if source.phone_country:
        yield "source.phone_country", source.phone_country
    for channel in ("email", "sms", "crm"):
        consent = getattr(config.consent, channel)
        if consent is not None:
            yield f"consent.{channel}.column", consent.column


def check_references(
    references: list[tuple[str, str]], columns: Mapping[str, str], where: str
) -> list[Check]:
    """A problem for each referenced column missing from ``columns``, with a did-you-mean."""
    available = list(columns)
    problems = []
    for key, column in references:
        if column in columns:
            continue
        hint = suggest(column, available)
        did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
        problems.append(Check(False, key, f"column {column!r} not found in {where}{did_you_mean}"))
    return problems


def check_persona_rules(
    config: AppConfig, columns: Mapping[str, str], now: datetime, catalog: Catalog
) -> list[Check]:
    """Compile every persona's rules against the source's columns: missing columns and
    values of the wrong type (a text compared with ``>`` to a number column) are problems.
    Rules holding raw ``sql`` are also planned by the warehouse, which alone can check them."""
    source = config.source
    src = from_table_or_query(source.table, source.query, list(columns), "src")
    scope = RuleScope(source=src, kinds=columns, now=now)
    problems = []
    for i, persona in enumerate(config.personas):
        path = f"personas[{i}].rules"
        try:
            expression = compile_rule(persona.rules, scope, path)
        except RuleError as exc:
            problems.append(Check(False, exc.path, f"{exc.message} (persona {persona.name!r})"))
            continue
        if has_sql(persona.rules):
            try:
                catalog.probe(sa.select(expression))
            except SourceError as exc:
                problems.append(
                    Check(False, path, f"the warehouse rejects the rule: {exc} (persona {persona.name!r})")
                )
    return problems


def origin_key(prefix: str, item: SourceConfig | SuppressionConfig) -> str:
    """The config key naming where ``item`` reads from: ``source.table``, ``suppressions[1].query``."""
    return f"{prefix}.table" if item.table is not None else f"{prefix}.query"


def describe(catalog: Catalog, item: SourceConfig | SuppressionConfig) -> tuple[str, Mapping[str, str]]:
    """The columns of a config item's table or query, and a label for messages."""
    if item.table is not None:
        return f"table '{item.table}'", catalog.describe_table(item.table)
    assert item.query is not None  # the config model guarantees one of the two
    return "the query", catalog.describe_query(item.query)


def validate_against(config: AppConfig, catalog: Catalog, now: datetime) -> list[Check]:
    """Every check of the config against the warehouse, problems and successes alike;
    ``now`` is the clock relative-day rules are compiled against."""
    checks: list[Check] = []
    try:
        where, columns = describe(catalog, config.source)
    except SourceError as exc:
        key = origin_key("source", config.source)
        checks.append(Check(False, key, _with_table_hint(str(exc), config.source, catalog)))
    else:
        problems = check_references(list(source_column_references(config)), columns, f"source {where}")
        problems += check_persona_rules(config, columns, now, catalog)
        checks.extend(problems)
        if not problems:
            checks.append(
                Check(True, "source", f"{where}: {len(columns)} columns; every referenced column exists")
            )
    for i, suppression in enumerate(config.suppressions):
        key = f"suppressions[{i}]"
        try:
            where, columns = describe(catalog, suppression)
        except SourceError as exc:
            checks.append(
                Check(False, origin_key(key, suppression), _with_table_hint(str(exc), suppression, catalog))
            )
            continue
        problems = check_references([(f"{key}.column", suppression.column)], columns, where)
        checks.extend(problems)
        if not problems:
            checks.append(
                Check(
                    True,
                    key,
                    f"{suppression.reason}: {where}, "
                    f"matching {suppression.match_on} on {suppression.column!r}",
                )
            )
    return checks


def _with_table_hint(message: str, item: SourceConfig | SuppressionConfig, catalog: Catalog) -> str:
    if item.table is None or not message.endswith("not found"):
        return message
    schema, _, name = item.table.rpartition(".")
    try:
        hint = suggest(name, catalog.table_names(schema or None))
    except SourceError:
        hint = None
    return f"{message} (did you mean {hint!r}?)" if hint else message
