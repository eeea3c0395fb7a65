"""The steady-day query: the resolver's rows joined, in the warehouse, to the sync state.

On a steady day 98 % of customers did not change, yet the plain path fetches every
customer and every ledger row into Python to find that out. When the state store's
tables can be read from the warehouse connection (a SQLite state file ATTACHed to a
SQLite warehouse, or ``[state] location = "warehouse"``), this one query returns only:

- the resolver row of every customer *not* verified in sync with this row (its digest
  differs from :data:`~sync.state.VERIFIED_KEYS`' or there is none), with that customer's
  ledger rows, one output row per ledger row (or one with NULL ledger columns);
- the ledger rows of customers gone from the source (resolver columns NULL).

ordered by key (binary), destination, address: exactly what the plain path's two streams
would give for these customers. :mod:`sync.joint_rows` splits it back into the two.

The row digest is computed by the warehouse from the resolver's own output columns (raw
identifiers, consent values, persona and suppression flags, duplicate-email flag), and
compared there with the digest it computed on the run that verified the customer: no
hash has to agree between Python and SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from personas.config import ResolverSettings
from personas.query import ResolverQuery, from_table_or_query, key_text
from sync.state import MEMBERSHIPS, VERIFIED_KEYS

ATTACHED_SCHEMA: Final = "personasync_state"  # the state file's name inside a SQLite warehouse connection
NULL_MARK: Final = "\x01"  # a NULL column in the digest text (no value casts to it)
SEPARATOR: Final = "\x1f"
LEDGER_COLUMNS: Final = (
    "destination",
    "address",
    "email",
    "phone",
    "tags",
    "suppressed",
    "failed_fingerprint",
)


class row_digest(FunctionElement[str]):
    """The digest of a resolver row: its columns as text, NULL-marked and joined, hashed
    with the warehouse's MD5 where it has one (SQLite keeps the text: it has no hash)."""

    type = sa.Text()
    name = "row_digest"
    inherit_cache = True


def _row_text(element: row_digest) -> ColumnElement[Any]:
    parts = [sa.func.coalesce(sa.cast(column, sa.Text), NULL_MARK) for column in element.clauses]
    text: ColumnElement[Any] = parts[0]
    for part in parts[1:]:
        text = text + sa.literal(SEPARATOR, sa.Text) + part
    return text


@compiles(row_digest)
def _row_digest_default(element: row_digest, compiler: SQLCompiler, **kw: object) -> str:
    return compiler.process(_row_text(element), **kw)


@compiles(row_digest, "postgresql")
@compiles(row_digest, "duckdb")
@compiles(row_digest, "snowflake")
def _row_digest_md5(element: row_digest, compiler: SQLCompiler, **kw: object) -> str:
    return compiler.process(sa.func.md5(_row_text(element)), **kw)


@compiles(row_digest, "bigquery")
def _row_digest_bigquery(element: row_digest, compiler: SQLCompiler, **kw: object) -> str:
    return compiler.process(sa.func.to_hex(sa.func.md5(_row_text(element))), **kw)


def state_tables(schema: str | None) -> tuple[sa.Table, sa.Table]:
    """(memberships, verified keys) as the warehouse connection names them."""
    if schema is None:
        return MEMBERSHIPS, VERIFIED_KEYS
    metadata = sa.MetaData()
    return MEMBERSHIPS.to_metadata(metadata, schema=schema), VERIFIED_KEYS.to_metadata(
        metadata, schema=schema
    )


def attach_state(conn: Connection, state: Engine) -> str | None:
    """Make the state store readable from the warehouse connection ``conn``; the schema to
    name its tables with, or None when the two cannot be joined (then nothing is skipped).

    A SQLite state file is ATTACHed to a SQLite warehouse (the warehouse itself stays
    read-only; the state file is only read through this connection, and its WAL journal lets
    the state engine write meanwhile).
    """
    if conn.dialect.name != "sqlite" or state.dialect.name != "sqlite":
        return None
    path = state.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    attached = {row[1] for row in conn.exec_driver_sql("PRAGMA database_list")}
    if ATTACHED_SCHEMA not in attached:
        conn.exec_driver_sql(f"ATTACH DATABASE ? AS {ATTACHED_SCHEMA}", (path,))
    return ATTACHED_SCHEMA


def joint_statement(
    settings: ResolverSettings,
    kinds: Mapping[str, str],
    resolver: ResolverQuery,
    schema: str | None,
    destinations: Sequence[str],
    config_digest: str,
    dialect: str,
) -> sa.Select[Any]:
    """The query described in the module docstring. Its first columns are the resolver
    query's, in the same positions (so the resolver reads its rows unchanged), then
    ``row_digest``, ``was_verified`` (the customer had a verified row, for another row
    digest), then the ledger columns prefixed ``m_``."""
    memberships, verified = state_tables(schema)
    resolved = resolver.statement.order_by(None).subquery("resolved")
    width = len(resolved.c)
    digested = sa.select(*resolved.c, row_digest(*resolved.c).label("row_digest")).subquery("digested")
    # One lookup per customer: verified for another digest (fetched, and counted), or not at all.
    fetched = (
        sa.select(digested, verified.c.key.is_not(None).label("was_verified"))
        .select_from(
            digested.outerjoin(
                verified, sa.and_(verified.c.key == digested.c.k, verified.c.config == config_digest)
            )
        )
        .where(sa.or_(verified.c.key.is_(None), verified.c.row_digest != digested.c.row_digest))
        .subquery("fetched")
    )
    ours = memberships.c.destination.in_(list(destinations))
    ledger = [memberships.c[name].label(f"m_{name}") for name in LEDGER_COLUMNS]
    changed = sa.select(*fetched.c, *ledger).select_from(
        fetched.outerjoin(memberships, sa.and_(memberships.c.key == fetched.c.k, ours))
    )
    gone = sa.select(
        memberships.c.key.label("k"),
        *(sa.null().label(column.name) for column in list(fetched.c)[1 : width + 2]),
        *ledger,
    ).where(ours, ~_in_source(memberships.c.key, settings, kinds, dialect))
    both = sa.union_all(changed, gone).subquery("joint")
    return sa.select(both).order_by(key_text(both.c.k), both.c.m_destination, both.c.m_address)


def verified_statements(
    settings: ResolverSettings,
    kinds: Mapping[str, str],
    schema: str | None,
    destinations: Sequence[str],
    config_digest: str,
    dialect: str,
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """What the plan counts of the customers the joint query leaves out, before taking away
    those it returns after all (their row changed; :class:`~sync.joint_rows.JointRows` counts
    them): (how many verified customers are in the source; per destination, their ledger
    rows, those with tags, those with tags or suppressed)."""
    memberships, verified = state_tables(schema)
    present = _in_source(verified.c.key, settings, kinds, dialect)
    ours = sa.and_(verified.c.config == config_digest, present)
    customers = sa.select(sa.func.count()).select_from(verified).where(ours)
    tagged = memberships.c.tags != ""
    addressed = sa.or_(tagged, memberships.c.suppressed)
    ledger = (
        sa.select(
            memberships.c.destination,
            sa.func.count(),
            sa.func.sum(sa.case((tagged, 1), else_=0)),
            sa.func.sum(sa.case((addressed, 1), else_=0)),
        )
        .select_from(memberships.join(verified, verified.c.key == memberships.c.key))
        .where(ours, memberships.c.destination.in_(list(destinations)))
        .group_by(memberships.c.destination)
    )
    return customers, ledger


def _in_source(
    key: ColumnElement[Any], settings: ResolverSettings, kinds: Mapping[str, str], dialect: str
) -> ColumnElement[bool]:
    """``key`` is a customer's key in the source. SQLite runs ``IN (subquery)`` over one index
    built once (a correlated ``EXISTS`` would scan the source per row, as the cast key has no
    index); PostgreSQL runs ``NOT IN`` (and, with the key cast and collated, ``IN``) row by
    row, but turns ``EXISTS`` into a hash (anti-)join."""
    if dialect == "sqlite":
        return key.in_(_present_keys(settings, kinds))
    source = from_table_or_query(settings.source.table, settings.source.query, list(kinds), "present")
    return sa.exists().where(key_text(source.c[settings.source.key]) == key)


def _present_keys(settings: ResolverSettings, kinds: Mapping[str, str]) -> sa.Select[Any]:
    """Every key in the source, as text (as the resolver query gives it)."""
    source = from_table_or_query(settings.source.table, settings.source.query, list(kinds), "present")
    key = source.c[settings.source.key]
    return sa.select(key_text(key)).where(key.is_not(None))
