"""The one warehouse query per run, built as a SQLAlchemy Core value (no I/O here).

It returns, per customer and ordered by key (as text, in binary order: see :class:`key_text`),
only what the resolver needs: the key, the
raw email, phone and phone country, the consent columns, one never-NULL boolean per persona (the rules
compiled to SQL), one EXISTS per suppression source matched on the key, and whether
another customer with a lower key has the same email. Suppression sources matched on
email or phone are read separately (:func:`suppression_values_query`) because matching
them needs the same normalisation as the customer's identifiers, which SQL cannot do for
phone numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from personas.compile import RuleScope, compile_rule
from personas.config import ResolverSettings, SuppressionConfig
from personas.model import CHANNELS, Channel


def split_table_name(table: str) -> tuple[str | None, str]:
    """``"schema.table"`` -> ``("schema", "table")``; ``"table"`` -> ``(None, "table")``."""
    schema, _, name = table.rpartition(".")
    return (schema or None), name


def from_table_or_query(
    table: str | None, query: str | None, columns: list[str], alias: str
) -> sa.FromClause:
    """A selectable over a config's ``table`` or ``query`` exposing ``columns``."""
    if table is not None:
        schema, name = split_table_name(table)
        return sa.table(name, *(sa.column(c) for c in columns), schema=schema).alias(alias)
    assert query is not None  # the config model guarantees one of the two
    text = sa.text(query.strip().rstrip(";"))
    return text.columns(*(sa.column(c) for c in columns)).subquery(alias)


class key_text(FunctionElement[str]):
    """A key as text that sorts in binary (code point) order, the order Python sorts ``str``.

    The sync engine merges the warehouse's stream with the state store's, both ordered by
    key, so both must agree with Python on what "ordered" means: integers sorted as text
    ("10" < "9"), and no locale collation. PostgreSQL needs ``COLLATE "C"`` for that;
    SQLite, DuckDB, Snowflake and BigQuery compare strings by code point by default.
    """

    type = sa.String()
    name = "key_text"
    inherit_cache = True


@compiles(key_text)
def _key_text_default(element: key_text, compiler: SQLCompiler, **kw: object) -> str:
    (argument,) = element.clauses
    return compiler.process(sa.cast(argument, sa.String), **kw)


@compiles(key_text, "postgresql")
def _key_text_postgresql(element: key_text, compiler: SQLCompiler, **kw: object) -> str:
    (argument,) = element.clauses
    return compiler.process(sa.collate(sa.cast(argument, sa.String), "C"), **kw)


class same_key(FunctionElement[Any]):
    """``listed = key`` for a suppression source matched on the customer key.

    SQLite compares values by storage class: in loosely typed tables the key 1 and the
    listed '1' are different, and a do-not-contact entry would silently miss (fail open).
    On SQLite the listed value is compared with the key as stored, as text and as a number;
    an ``IN`` over one column keeps the suppression table's index usable. Typed warehouses
    compare as they are (PostgreSQL refuses integer = text outright, which stops the run).
    """

    # No Boolean type: SQLAlchemy would render ``... = 1`` after it on SQLite, which hides the
    # IN from the planner and scans the suppression table once per customer.
    type = sa.types.NullType()
    name = "same_key"
    inherit_cache = True


@compiles(same_key)
def _same_key_default(element: same_key, compiler: SQLCompiler, **kw: object) -> str:
    listed, key = element.clauses
    return compiler.process(listed == key, **kw)


@compiles(same_key, "sqlite")
def _same_key_sqlite(element: same_key, compiler: SQLCompiler, **kw: object) -> str:
    listed, key = element.clauses
    forms = [key, sa.cast(key, sa.Text), sa.cast(key, sa.Numeric)]
    return compiler.process(listed.in_(forms), **kw)


@dataclass(frozen=True)
class ResolverQuery:
    """The statement and where each value sits in its rows."""

    statement: sa.Select[Any]
    consent_index: Mapping[Channel, int]
    persona_index: tuple[int, ...]  # one per persona, in config order
    key_suppression_index: Mapping[int, int]  # suppression position in config -> row index
    duplicate_email_index: int | None


KEY, EMAIL, PHONE, PHONE_COUNTRY = 0, 1, 2, 3


def build_resolver_query(
    settings: ResolverSettings, kinds: Mapping[str, str], now: datetime, *, only_key: str | None = None
) -> ResolverQuery:
    """The resolver's single SELECT. ``kinds`` are the source's columns and their kinds.

    Raises :class:`~personas.compile.RuleError` when a rule does not fit the source.
    ``only_key`` restricts the result to one customer (for ``personas explain``), after
    duplicate emails are ranked over the whole source.
    """
    source_cfg = settings.source
    src = from_table_or_query(source_cfg.table, source_cfg.query, list(kinds), "src")
    key = src.c[source_cfg.key]
    null = sa.null()
    selected: list[ColumnElement[Any]] = [
        key_text(key).label("k"),
        (src.c[source_cfg.email] if source_cfg.email else null).label("email"),
        (src.c[source_cfg.phone] if source_cfg.phone else null).label("phone"),
        (src.c[source_cfg.phone_country] if source_cfg.phone_country else null).label("phone_country"),
    ]
    consent_index: dict[Channel, int] = {}
    for channel in CHANNELS:
        consent = getattr(settings.consent, channel)
        if consent is not None:
            consent_index[channel] = len(selected)
            selected.append(src.c[consent.column].label(f"consent_{channel}"))
    scope = RuleScope(source=src, kinds=kinds, now=now)
    persona_index = []
    for i, persona in enumerate(settings.personas):
        persona_index.append(len(selected))
        selected.append(compile_rule(persona.rules, scope, f"personas[{i}].rules").label(f"persona_{i}"))
    key_suppression_index = {}
    for i, suppression in enumerate(settings.suppressions):
        if suppression.match_on == "key":
            key_suppression_index[i] = len(selected)
            selected.append(_key_match(suppression, key, i).label(f"suppressed_{i}"))
    duplicate_email_index = None
    if source_cfg.email:
        duplicate_email_index = len(selected)
        selected.append(_duplicate_email(settings, src).label("duplicate_email"))
    statement: sa.Select[Any] = sa.select(*selected)
    if only_key is not None:
        inner = statement.subquery("resolved")
        statement = sa.select(*inner.c).where(inner.c.k == only_key)
    else:
        statement = statement.order_by(key_text(key))
    return ResolverQuery(
        statement=statement,
        consent_index=consent_index,
        persona_index=tuple(persona_index),
        key_suppression_index=key_suppression_index,
        duplicate_email_index=duplicate_email_index,
    )


class ranked_apart(FunctionElement[Any]):
    """A customer's "duplicate email" flag, worked out apart from its row where that is
    cheaper. Clauses: the flag as a window over the row (``row_number() OVER (PARTITION BY
    email group ORDER BY key) > 1``), then the same as ``key IN (keys ranked > 1)``.

    SQLite evaluates a window by sorting every whole row by email group, and hands the rows
    on in that order: a resolver over a million customers spent a third of its time there,
    and the steady-day query (:mod:`sync.joint_query`) then looked each customer up in the
    sync state in random order (2.3 million page reads at 1M). Ranking only (key, email)
    apart sorts narrow rows, and the customers then come in table order. Other databases
    hash-join either way and keep the window, which reads the source once.
    """

    type = sa.types.NullType()  # no Boolean: SQLAlchemy would render "= 1" after an IN on SQLite
    name = "ranked_apart"
    inherit_cache = True


@compiles(ranked_apart)
def _ranked_apart_default(element: ranked_apart, compiler: SQLCompiler, **kw: object) -> str:
    window, _ = element.clauses
    return compiler.process(window, **kw)


@compiles(ranked_apart, "sqlite")
def _ranked_apart_sqlite(element: ranked_apart, compiler: SQLCompiler, **kw: object) -> str:
    _, apart = element.clauses
    return compiler.process(apart, **kw)


def _duplicate_email(settings: ResolverSettings, src: sa.FromClause) -> ColumnElement[Any]:
    """True for a customer whose email group (see :func:`_email_group`) holds a smaller key:
    the first customer of a group keeps the email."""
    source_cfg = settings.source
    assert source_cfg.email
    key, email = src.c[source_cfg.key], src.c[source_cfg.email]
    window = sa.func.row_number().over(partition_by=_email_group(email), order_by=key) > 1
    if source_cfg.table is None:
        return window  # a source query would run twice
    other = from_table_or_query(source_cfg.table, None, [source_cfg.key, source_cfg.email], "ranked_src")
    other_key = other.c[source_cfg.key]
    rank = sa.func.row_number().over(partition_by=_email_group(other.c[source_cfg.email]), order_by=other_key)
    ranked = sa.select(other_key.label("key"), rank.label("rank")).subquery("ranked")
    # NULL keys kept in the ranking (they rank as in the window) but not in the list, so a
    # key outside it is false, not NULL.
    later = sa.select(ranked.c.key).where(ranked.c.rank > 1, ranked.c.key.is_not(None))
    return ranked_apart(window, key.in_(later))


class unusual_email(FunctionElement[Any]):
    """True for an email the resolver's SQL duplicate check may not group as Python does.

    The SQL groups emails by ``lower(trim(email))``; Python also strips tabs and line breaks,
    lower-cases non-ASCII letters, normalises Unicode and turns punycode domains into
    Unicode. For an email of printable ASCII without ``xn--`` or quotes the two agree, so
    only the rest (rare) need a second look: a character outside printable ASCII, a
    punycode label, a quoted local part.
    """

    type = sa.types.NullType()  # no Boolean: SQLAlchemy would add "= 1" on SQLite
    name = "unusual_email"
    inherit_cache = True


def _unusual_parts(element: unusual_email) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    (email,) = element.clauses
    lowered = sa.func.lower(email)
    return email, sa.or_(lowered.like("%xn--%"), email.like('%"%'))


@compiles(unusual_email)
def _unusual_default(element: unusual_email, compiler: SQLCompiler, **kw: object) -> str:
    email, other = _unusual_parts(element)  # no portable regex: every row gets a second look
    return compiler.process(sa.or_(email.is_not(None), other), **kw)


@compiles(unusual_email, "sqlite")
def _unusual_sqlite(element: unusual_email, compiler: SQLCompiler, **kw: object) -> str:
    email, other = _unusual_parts(element)
    return compiler.process(sa.or_(email.op("GLOB")("*[^ -~]*"), other), **kw)


@compiles(unusual_email, "postgresql")
def _unusual_postgresql(element: unusual_email, compiler: SQLCompiler, **kw: object) -> str:
    email, other = _unusual_parts(element)
    return compiler.process(sa.or_(email.op("~")("[^ -~]"), other), **kw)


@compiles(unusual_email, "duckdb")
def _unusual_duckdb(element: unusual_email, compiler: SQLCompiler, **kw: object) -> str:
    email, other = _unusual_parts(element)
    return compiler.process(sa.or_(sa.func.regexp_matches(email, "[^ -~]"), other), **kw)


@compiles(unusual_email, "snowflake")
def _unusual_snowflake(element: unusual_email, compiler: SQLCompiler, **kw: object) -> str:
    email, other = _unusual_parts(element)
    return compiler.process(sa.or_(sa.func.regexp_like(email, ".*[^ -~].*", "s"), other), **kw)


@compiles(unusual_email, "bigquery")
def _unusual_bigquery(element: unusual_email, compiler: SQLCompiler, **kw: object) -> str:
    email, other = _unusual_parts(element)
    return compiler.process(sa.or_(sa.func.regexp_contains(email, "[^ -~]"), other), **kw)


def unusual_emails_query(settings: ResolverSettings, kinds: Mapping[str, str]) -> sa.Select[Any] | None:
    """(email group as the SQL forms it, email) of every email the SQL may group differently
    from Python (see :class:`unusual_email`); None without an email column."""
    source_cfg = settings.source
    if not source_cfg.email:
        return None
    src = from_table_or_query(source_cfg.table, source_cfg.query, list(kinds), "src")
    email = src.c[source_cfg.email]
    return sa.select(_email_group(email), email).where(email.is_not(None), unusual_email(email))


def email_groups_query(
    settings: ResolverSettings, kinds: Mapping[str, str], groups: Sequence[str]
) -> sa.Select[Any]:
    """(key, email, first in its SQL group) of every customer in the given SQL email groups,
    ranked exactly as the resolver query ranks them."""
    source_cfg = settings.source
    assert source_cfg.email
    src = from_table_or_query(source_cfg.table, source_cfg.query, list(kinds), "src")
    key, email = src.c[source_cfg.key], src.c[source_cfg.email]
    rank = sa.func.row_number().over(partition_by=_email_group(email), order_by=key)
    ranked = (
        sa.select(key_text(key).label("k"), email.label("email"), rank.label("rank"))
        .where(_email_group(email).in_(list(groups)))
        .subquery("ranked")
    )
    return sa.select(ranked.c.k, ranked.c.email, ranked.c.rank == 1)


def _email_group(email: ColumnElement[Any]) -> ColumnElement[Any]:
    return sa.func.lower(sa.func.trim(email))


def _key_match(suppression: SuppressionConfig, key: ColumnElement[object], i: int) -> ColumnElement[bool]:
    listed = from_table_or_query(suppression.table, suppression.query, [suppression.column], f"sup_{i}")
    return sa.exists().where(same_key(listed.c[suppression.column], key))


def suppression_values_query(suppression: SuppressionConfig, i: int) -> sa.Select[tuple[object]]:
    """The identifiers listed by an email- or phone-matched suppression source."""
    listed = from_table_or_query(suppression.table, suppression.query, [suppression.column], f"sup_{i}")
    column = listed.c[suppression.column]
    return sa.select(column).where(column.is_not(None))
