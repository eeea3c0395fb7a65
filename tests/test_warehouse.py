"""Warehouse access on SQLite, PostgreSQL and DuckDB: read-only, streamed, described."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from connectors.demo_data import CUSTOMERS
from connectors.warehouse import (
    WarehouseCatalog,
    WarehouseError,
    check_connection,
    create_warehouse_engine,
    describe_query,
    describe_table,
    kind_from_type_name,
    stream_rows,
)
from tests.conftest import SMALL_DEMO


def test_read_only_engine_refuses_writes(demo_warehouse_url: str) -> None:
    engine = create_warehouse_engine(demo_warehouse_url, read_only=True)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar() == SMALL_DEMO.customers
            with pytest.raises(DBAPIError):
                conn.execute(sa.text("DELETE FROM customers"))
    finally:
        engine.dispose()
    check = sa.create_engine(demo_warehouse_url)
    with check.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar() == SMALL_DEMO.customers
    check.dispose()


def test_stream_rows_returns_every_row_in_order_in_small_batches(demo_warehouse_url: str) -> None:
    engine = create_warehouse_engine(demo_warehouse_url)
    statement = sa.select(CUSTOMERS.c.customer_id, CUSTOMERS.c.email).order_by(CUSTOMERS.c.customer_id)
    with engine.connect() as conn:
        keys = [row.customer_id for row in stream_rows(conn, statement, batch_size=7)]
    engine.dispose()
    assert keys == list(range(1, SMALL_DEMO.customers + 1))


def test_describe_table_reports_columns_and_kinds(demo_warehouse_url: str) -> None:
    engine = create_warehouse_engine(demo_warehouse_url)
    with engine.connect() as conn:
        columns = describe_table(conn, "customers")
    engine.dispose()
    assert columns.names == [c.name for c in CUSTOMERS.columns]
    assert columns.kinds["customer_id"] == "number"
    assert columns.kinds["lifetime_value"] == "number"
    assert columns.kinds["email"] == "text"
    assert columns.kinds["signup_date"] == "date"
    assert columns.kinds["email_opt_in"] in ("boolean", "number")  # SQLite has no real BOOLEAN


def test_describe_missing_table_is_a_clear_error(demo_warehouse_url: str) -> None:
    engine = create_warehouse_engine(demo_warehouse_url)
    with engine.connect() as conn, pytest.raises(WarehouseError, match="table 'customer' not found"):
        describe_table(conn, "customer")
    with engine.connect() as conn:
        assert "customers" in WarehouseCatalog(conn).table_names(None)
    engine.dispose()


def test_describe_query_names_its_columns(demo_warehouse_url: str) -> None:
    engine = create_warehouse_engine(demo_warehouse_url)
    query = """
        SELECT c.customer_id, c.email, count(o.order_id) AS order_rows
        FROM customers c LEFT JOIN orders o ON o.customer_id = c.customer_id
        GROUP BY c.customer_id, c.email;
    """
    with engine.connect() as conn:
        columns = describe_query(conn, query)
    engine.dispose()
    assert columns.names == ["customer_id", "email", "order_rows"]
    if not demo_warehouse_url.startswith("sqlite"):  # SQLite does not type query results
        assert columns.kinds["order_rows"] == "number"
        assert columns.kinds["email"] == "text"


def test_failing_query_reports_the_database_reason(demo_warehouse_url: str) -> None:
    engine = create_warehouse_engine(demo_warehouse_url)
    with engine.connect() as conn, pytest.raises(WarehouseError) as error:
        describe_query(conn, "SELECT nope FROM nowhere")
    engine.dispose()
    message = str(error.value)
    assert message.startswith("the query failed in the warehouse:")
    assert "nowhere" in message
    assert "[SQL:" not in message


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(WarehouseError, match="database file not found"):
        create_warehouse_engine(f"sqlite:///{missing}")
    assert not missing.exists()


def test_unreachable_postgres_names_the_reason_not_the_password() -> None:
    pytest.importorskip("psycopg")
    engine = create_warehouse_engine("postgresql+psycopg://someone:pw-s3cret-99@127.0.0.1:1/nothing")
    with pytest.raises(WarehouseError) as error:
        check_connection(engine)
    assert "cannot connect" in str(error.value)
    assert "pw-s3cret-99" not in str(error.value)


def test_missing_dialect_suggests_the_extra(tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match="no SQLAlchemy dialect 'nosuchdb'"):
        create_warehouse_engine("nosuchdb://host/db")


@pytest.mark.parametrize(
    ("type_name", "kind"),
    [
        ("VARCHAR(20)", "text"),
        ("int8", "number"),
        ("NUMERIC(12, 2)", "number"),
        ("TIMESTAMP WITH TIME ZONE", "datetime"),
        ("date", "date"),
        ("BOOLEAN", "boolean"),
        ("DOUBLE", "number"),
        ("uuid", "text"),
        ("BLOB", "unknown"),
    ],
)
def test_type_names_map_to_kinds(type_name: str, kind: str) -> None:
    assert kind_from_type_name(type_name) == kind
