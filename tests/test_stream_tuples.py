"""``stream_tuples``: every row once, in order, whatever the batch size (a buffering fetch
strategy may hold rows it fetched ahead: they must come first, not be lost), with the values
``stream_rows`` reads; and the demo resolves the same from driver tuples as from ``Row``s."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
import tomllib

from connectors.demo_data import CUSTOMERS
from connectors.warehouse import create_warehouse_engine, stream_rows, stream_tuples
from personas.model import Assignment
from sync import app
from sync.app import demo_config_text
from sync.config import AppConfig
from tests.conftest import SMALL_DEMO

CLOCK = datetime(2026, 11, 22, tzinfo=timezone.utc)

BATCH = 7


@pytest.mark.parametrize("rows", [0, 1, BATCH - 1, BATCH, BATCH + 1, 2 * BATCH, 2 * BATCH + 1, 3 * BATCH - 1])
def test_stream_tuples_returns_every_row_once_in_order(demo_warehouse_url: str, rows: int) -> None:
    engine = create_warehouse_engine(demo_warehouse_url)
    statement = (
        sa.select(CUSTOMERS.c.customer_id, CUSTOMERS.c.email).order_by(CUSTOMERS.c.customer_id).limit(rows)
    )
    with engine.connect() as conn:
        streamed = list(stream_tuples(conn, statement, batch_size=BATCH))
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(CUSTOMERS)).scalar() == SMALL_DEMO.customers
        )
    engine.dispose()
    assert [row[0] for row in streamed] == list(range(1, rows + 1))
    assert all(type(row) is tuple for row in streamed)


@pytest.mark.parametrize("batch_size", [1, BATCH, SMALL_DEMO.customers - 1, SMALL_DEMO.customers, 10_000])
def test_stream_tuples_reads_the_values_stream_rows_reads(demo_warehouse_url: str, batch_size: int) -> None:
    engine = create_warehouse_engine(demo_warehouse_url)
    statement = sa.select(CUSTOMERS.c.customer_id, CUSTOMERS.c.email, CUSTOMERS.c.phone).order_by(
        CUSTOMERS.c.customer_id
    )
    with engine.connect() as conn:
        as_rows = [tuple(row) for row in stream_rows(conn, statement)]
        as_tuples = list(stream_tuples(conn, statement, batch_size=batch_size))
    engine.dispose()
    assert len(as_tuples) == SMALL_DEMO.customers
    assert as_tuples == as_rows


def test_the_demo_resolves_the_same_from_driver_tuples_as_from_rows(
    demo_warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Driver tuples skip SQLAlchemy's result processing (a Boolean is 0 / 1 on SQLite): the
    # resolver reads those columns for their truth only, so nothing it decides may change.
    text = demo_config_text()
    config = AppConfig.model_validate(
        {
            **tomllib.loads(text),
            "warehouse": {"url": demo_warehouse_url},
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        }
    )

    def resolved() -> list[Assignment]:
        with app.open_resolution(config, CLOCK) as run:
            return list(run.assignments())

    from_tuples = resolved()
    monkeypatch.setattr(app, "stream_tuples", stream_rows)
    from_rows = resolved()
    assert len(from_tuples) == SMALL_DEMO.customers
    assert from_tuples == from_rows
    assert {a.channels["email"].eligible for a in from_tuples} == {True, False}
