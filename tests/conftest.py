"""Shared fixtures: the same warehouse test runs on SQLite, PostgreSQL and DuckDB.

PostgreSQL tests need ``PERSONASYNC_TEST_POSTGRES_URL`` (e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); without it they are skipped with
that reason. When it is set, a failure to connect fails the tests instead of skipping them.
Each test works in a fresh schema of that database, dropped when the test ends, so every
warehouse fixture starts empty on all three databases.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest
import responses
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from typer.testing import CliRunner, Result

from connectors.demo_data import DemoSpec, load_demo
from sync.cli import cli
from tests.fakes.sleeps import Sleeps

POSTGRES_URL_ENV = "PERSONASYNC_TEST_POSTGRES_URL"
WAREHOUSES = ("sqlite", "postgres", "duckdb")
SMALL_DEMO = DemoSpec(customers=400, seed=7, as_of=date(2026, 11, 22))


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_URL_ENV} (see README, 'Running the tests')")
    return url


@pytest.fixture
def postgres_schema_url(postgres_admin_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped when the test ends."""
    url = postgres_admin_url
    schema = f"personasync_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield (
            make_url(url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture
def duckdb_url(tmp_path: Path) -> str:
    pytest.importorskip("duckdb_engine", reason="DuckDB tests need the duckdb extra")
    return f"duckdb:///{quote(str(tmp_path / 'warehouse.duckdb'))}"


@pytest.fixture(params=WAREHOUSES)
def warehouse_url(request: pytest.FixtureRequest) -> str:
    """A writable, empty warehouse of each kind, as a SQLAlchemy URL."""
    fixture = {"sqlite": "sqlite_url", "postgres": "postgres_schema_url", "duckdb": "duckdb_url"}
    return str(request.getfixturevalue(fixture[request.param]))


@pytest.fixture
def warehouse_engine(warehouse_url: str) -> Iterator[Engine]:
    """A writable engine on each warehouse kind; disposed after the test."""
    engine = sa.create_engine(warehouse_url)
    yield engine
    engine.dispose()


@pytest.fixture
def demo_warehouse_url(warehouse_url: str) -> str:
    """Each warehouse kind loaded with the small demo data set; the URL, with no engine left open
    (DuckDB refuses a read-only connection while a writable one holds the file)."""
    engine = sa.create_engine(warehouse_url)
    try:
        load_demo(engine, SMALL_DEMO)
    finally:
        engine.dispose()
    return warehouse_url


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Every HTTP call in the test goes to the vendor fakes registered on this mock."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def run_cli(*args: str) -> tuple[Result, str]:
    """``personasync ARGS`` in this process: the result and everything it printed, having
    checked that it ended without a traceback (an exit code, never a crash)."""
    result = CliRunner().invoke(cli, list(args))
    output = result.output
    # This typer's `output` interleaves stdout and stderr; add stderr if a runner keeps it apart.
    stderr = getattr(result, "stderr", "")
    if stderr and stderr not in output:
        output += stderr
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result, output


@pytest.fixture
def vendor_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake vendor credentials of ``tests/cli_vendors.py`` in the environment, as in
    production (a ``personasync`` child process inherits them)."""
    from tests.cli_vendors import CREDENTIALS

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
