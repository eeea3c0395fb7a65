"""Warehouse access: read-only engines, streamed reads, and what a source's columns are.

Everything goes through SQLAlchemy, so any dialect with a SQLAlchemy package works;
SQLite (the embedded default), PostgreSQL and DuckDB are tested.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, SQLAlchemyError

from personas.query import split_table_name
from sync.ports import SourceError

ColumnKind = Literal["number", "text", "date", "datetime", "boolean", "unknown"]

_DIALECT_EXTRAS = {"postgresql": "postgres", "duckdb": "duckdb"}


class WarehouseError(SourceError):
    """The warehouse cannot be reached or read. The message is meant for the operator."""


@dataclass(frozen=True)
class SourceColumns:
    """Columns of a table or query, in order, with a coarse type usable for rule checks."""

    kinds: dict[str, ColumnKind]

    @property
    def names(self) -> list[str]:
        return list(self.kinds)


def create_warehouse_engine(url: URL | str, *, read_only: bool = True) -> Engine:
    """An engine for ``url``; read-only where the dialect allows it.

    SQLite and DuckDB open the file read-only (and refuse to create a missing file);
    PostgreSQL sessions start with ``default_transaction_read_only``. Other dialects
    rely on the credentials being read-only.
    """
    url = make_url(url)
    backend = url.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend in ("sqlite", "duckdb"):
        _require_existing_file(url)
    if read_only:
        if backend == "sqlite" and url.database and url.database != ":memory:":
            database = url.database
            if not database.startswith("file:"):
                database = "file:" + quote(database)
            url = url.set(database=database, query={**url.query, "mode": "ro", "uri": "true"})
        elif backend == "postgresql":
            # Keep any options the URL already carries (e.g. a search_path).
            existing = url.query.get("options", "")
            existing = existing if isinstance(existing, str) else " ".join(existing)
            connect_args["options"] = f"{existing} -c default_transaction_read_only=on".strip()
        elif backend == "duckdb" and url.database not in (None, "", ":memory:"):
            connect_args["read_only"] = True
    try:
        return sa.create_engine(url, connect_args=connect_args)
    except NoSuchModuleError:
        extra = _DIALECT_EXTRAS.get(backend)
        how = f"pip install 'personasync[{extra}]'" if extra else "install its SQLAlchemy dialect package"
        raise WarehouseError(f"no SQLAlchemy dialect '{url.drivername}' is installed ({how})") from None
    except ImportError as exc:
        raise WarehouseError(f"the database driver for '{url.drivername}' is not installed: {exc}") from None


def _require_existing_file(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    if not Path(database).exists():
        raise WarehouseError(f"database file not found: {database}")


def check_connection(engine: Engine) -> None:
    """Run ``SELECT 1``; raise :class:`WarehouseError` with the driver's reason if it fails."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise WarehouseError(f"cannot connect: {driver_message(exc)}") from None


def driver_message(exc: SQLAlchemyError) -> str:
    """The database's own words, without SQLAlchemy's SQL echo and background link."""
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(original).strip()
    text = text.split("\n[SQL:", 1)[0].split("\n(Background on this error", 1)[0]
    return " ".join(text.split())


def stream_rows(
    conn: Connection, statement: sa.Executable, *, batch_size: int = 10_000
) -> Iterator[sa.Row[Any]]:
    """Rows of ``statement`` fetched ``batch_size`` at a time (server-side cursor where supported),
    so memory stays bounded whatever the table size."""
    # Options for this statement only: Connection.execution_options() would change the
    # connection for every later statement (a server-side cursor for each, on PostgreSQL).
    options = {"stream_results": True, "yield_per": batch_size}
    result = conn.execute(statement, execution_options=options)
    for partition in result.partitions():
        yield from partition


def stream_tuples(
    conn: Connection, statement: sa.Executable, *, batch_size: int = 10_000
) -> Iterator[Sequence[Any]]:
    """Like :func:`stream_rows`, but each row is the database driver's own tuple: no
    SQLAlchemy ``Row`` is made (a third of the cost of reading a million rows) and no result
    type processing is done, so a Boolean column reads as the driver gives it (0 / 1 on SQLite).

    The rows are read through the result's own fetch strategy, never straight from the DBAPI
    cursor: a buffering strategy (streamed results) may already hold rows it fetched ahead,
    and they come first.
    """
    options = {"stream_results": True, "max_row_buffer": batch_size}  # this statement only
    result = conn.execute(statement, execution_options=options)
    try:
        # Both looked up on every batch: the result swaps its strategy and drops its cursor
        # once the rows run out, which may be during a batch that still returns rows.
        while rows := result.cursor_strategy.fetchmany(result, result.cursor, batch_size):
            yield from rows
    finally:
        result.close()


# --- describing sources -----------------------------------------------------------------


def table_names(conn: Connection, schema: str | None = None) -> list[str]:
    """Tables and views visible in ``schema`` (or the default schema)."""
    if conn.dialect.name == "duckdb":
        rows = conn.execute(
            sa.text(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = coalesce(:schema, current_schema()) ORDER BY table_name"
            ),
            {"schema": schema},
        )
        return [r[0] for r in rows]
    inspector = sa.inspect(conn)
    return sorted(set(inspector.get_table_names(schema)) | set(inspector.get_view_names(schema)))


def describe_table(conn: Connection, table: str) -> SourceColumns:
    """Columns of ``table``; raises :class:`WarehouseError` when the table does not exist."""
    schema, name = split_table_name(table)
    try:
        if conn.dialect.name == "duckdb":
            # duckdb-engine's reflection queries pg_catalog tables DuckDB lacks; ask directly.
            rows = conn.execute(
                sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = coalesce(:schema, current_schema()) AND table_name = :name "
                    "ORDER BY ordinal_position"
                ),
                {"schema": schema, "name": name},
            ).all()
            kinds = {r[0]: kind_from_type_name(r[1]) for r in rows}
        else:
            kinds = {
                c["name"]: kind_from_sqlalchemy_type(c["type"])
                for c in sa.inspect(conn).get_columns(name, schema)
            }
    except sa.exc.NoSuchTableError:
        kinds = {}
    except SQLAlchemyError as exc:
        raise WarehouseError(f"cannot read the columns of table '{table}': {driver_message(exc)}") from None
    if not kinds:
        raise WarehouseError(f"table '{table}' not found")
    return SourceColumns(kinds)


def describe_query(conn: Connection, query: str) -> SourceColumns:
    """Columns of the result of ``query``, found by running it with ``LIMIT 0``."""
    probe = (
        sa.select(sa.literal_column("*"))
        .select_from(sa.text(f"({strip_query(query)}) AS personasync_probe"))
        .limit(0)
    )
    try:
        result = conn.execute(probe)
        names = list(result.keys())
        description = result.cursor.description if result.cursor is not None else None
        result.close()
    except SQLAlchemyError as exc:
        raise WarehouseError(f"the query failed in the warehouse: {driver_message(exc)}") from None
    kinds = {name: "unknown" for name in names}
    for name, column in zip(names, description or (), strict=False):
        kinds[name] = _kind_from_cursor_type(conn, column[1])
    return SourceColumns(kinds)  # type: ignore[arg-type]


def strip_query(query: str) -> str:
    """A query with trailing semicolons and whitespace removed, ready to be nested."""
    return query.strip().rstrip(";").strip()


def _kind_from_cursor_type(conn: Connection, type_code: Any) -> ColumnKind:
    if type_code is None:
        return "unknown"  # SQLite does not type query results
    if isinstance(type_code, int) and conn.dialect.name == "postgresql":
        info = conn.connection.dbapi_connection.adapters.types.get(type_code)  # type: ignore[union-attr]
        return kind_from_type_name(info.name) if info is not None else "unknown"
    return kind_from_type_name(str(type_code))


def kind_from_sqlalchemy_type(column_type: Any) -> ColumnKind:
    if isinstance(column_type, sa.Boolean):
        return "boolean"
    if isinstance(column_type, sa.DateTime):
        return "datetime"
    if isinstance(column_type, sa.Date):
        return "date"
    if isinstance(column_type, (sa.Integer, sa.Numeric, sa.Float)):
        return "number"
    if isinstance(column_type, sa.String):
        return "text"
    return kind_from_type_name(str(column_type))


_KIND_PATTERNS: list[tuple[re.Pattern[str], ColumnKind]] = [
    (re.compile(r"^(bool|boolean)$"), "boolean"),
    (re.compile(r"timestamp|datetime"), "datetime"),
    (re.compile(r"^date$"), "date"),
    (re.compile(r"int|numeric|decimal|double|float|real|number|serial|money"), "number"),
    (re.compile(r"char|text|string|uuid|name|enum"), "text"),
]


def kind_from_type_name(type_name: str) -> ColumnKind:
    """Classify a database type name (``VARCHAR(20)``, ``int8``, ``TIMESTAMP WITH TIME ZONE``...)."""
    name = type_name.strip().lower()
    for pattern, kind in _KIND_PATTERNS:
        if pattern.search(name):
            return kind
    return "unknown"


class WarehouseCatalog:
    """:class:`sync.ports.Catalog` over one open warehouse connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def describe_table(self, table: str) -> dict[str, str]:
        return dict(describe_table(self._conn, table).kinds)

    def describe_query(self, query: str) -> dict[str, str]:
        return dict(describe_query(self._conn, query).kinds)

    def table_names(self, schema: str | None) -> list[str]:
        try:
            return table_names(self._conn, schema)
        except SQLAlchemyError as exc:
            raise WarehouseError(driver_message(exc)) from None

    def probe(self, statement: sa.Select[Any]) -> None:
        """Run ``statement`` with ``LIMIT 0``: the warehouse checks it without returning rows."""
        try:
            self._conn.execute(statement.limit(0)).close()
        except SQLAlchemyError as exc:
            self._conn.rollback()
            raise WarehouseError(driver_message(exc)) from None
