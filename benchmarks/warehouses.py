"""The SQLite demo warehouse copied into DuckDB or PostgreSQL, for ``resolve`` on those
engines. The tables come from the demo's own schema (``DEMO_METADATA``); rows are bulk
loaded (DuckDB from CSV, PostgreSQL with COPY), since row-by-row inserts through SQLAlchemy
would take longer than the benchmark at a million customers.

PostgreSQL needs ``PERSONASYNC_BENCH_POSTGRES_URL`` (falling back to the tests'
``PERSONASYNC_TEST_POSTGRES_URL``); the warehouse goes into a fresh schema, dropped after.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from connectors.demo_data import DATA_TABLES, DEMO_METADATA

POSTGRES_ENV = ("PERSONASYNC_BENCH_POSTGRES_URL", "PERSONASYNC_TEST_POSTGRES_URL")
NULL = r"\N"


def _rows(sqlite_path: Path, table: str) -> Iterator[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        cursor = conn.execute(f"SELECT * FROM {table}")
        while chunk := cursor.fetchmany(50_000):
            yield from chunk
    finally:
        conn.close()


def _load(url: str | sa.URL, copy: Callable[[Any, sa.Table], None], *, refill: bool = False) -> None:
    """Create the demo's tables at ``url`` (or, with ``refill``, empty the existing ones) and
    fill each with ``copy(dbapi_cursor, table)``."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        if not refill:
            DEMO_METADATA.create_all(engine)
        raw = engine.raw_connection()
        try:
            for table in DATA_TABLES:
                if refill:
                    raw.cursor().execute(f"TRUNCATE {table.name}")
                copy(raw.cursor(), table)
            raw.commit()
            if engine.dialect.name == "postgresql":
                # A warehouse has its statistics (autovacuum, or the loading job, gathers
                # them); this server may run without autovacuum.
                for table in DATA_TABLES:
                    raw.cursor().execute(f"ANALYZE {table.name}")
                raw.commit()
        finally:
            raw.close()
    finally:
        engine.dispose()


def to_duckdb(sqlite_path: Path, target: Path, *, refill: bool = False) -> str:
    """Copy the warehouse into a DuckDB file (with ``refill``, into its existing tables,
    keeping anything else in the file); its SQLAlchemy URL."""

    def copy(cursor: Any, table: sa.Table) -> None:
        staging = target.with_suffix(f".{table.name}.csv")
        with staging.open("w", newline="") as out:
            writer = csv.writer(out)
            for row in _rows(sqlite_path, table.name):
                writer.writerow(NULL if v is None else v for v in row)
        cursor.execute(f"COPY {table.name} FROM '{staging}' (HEADER false, NULLSTR '{NULL}')")
        staging.unlink()

    if not refill:
        target.unlink(missing_ok=True)
    url = f"duckdb:///{target}"
    _load(url, copy, refill=refill)
    return url


def postgres_url() -> str | None:
    return next((os.environ[name] for name in POSTGRES_ENV if os.environ.get(name)), None)


def _postgres_copy(sqlite_path: Path) -> Callable[[Any, sa.Table], None]:
    def copy(cursor: Any, table: sa.Table) -> None:
        booleans = [i for i, c in enumerate(table.columns) if isinstance(c.type, sa.Boolean)]
        with cursor.copy(f"COPY {table.name} FROM STDIN") as rows:
            for row in _rows(sqlite_path, table.name):
                values = list(row)
                for i in booleans:  # SQLite keeps booleans as 0/1
                    values[i] = None if values[i] is None else bool(values[i])
                rows.write_row(values)

    return copy


def refill_postgres(sqlite_path: Path, url: str) -> None:
    """Replace the rows of the warehouse at ``url`` with the SQLite warehouse's."""
    _load(url, _postgres_copy(sqlite_path), refill=True)


@contextmanager
def in_postgres(sqlite_path: Path, admin_url: str, *, drop: tuple[str, ...] = ()) -> Iterator[str]:
    """The warehouse in a fresh schema of ``admin_url``'s database; a URL whose search_path
    is that schema. The schema (and the schemas ``drop``) are dropped on the way out."""
    copy = _postgres_copy(sqlite_path)
    schema = f"personasync_bench_{uuid.uuid4().hex[:10]}"
    url = make_url(admin_url).update_query_dict({"options": f"-csearch_path={schema}"})
    admin = sa.create_engine(admin_url, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        _load(url, copy)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            for name in (schema, *drop):
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()
