"""``[state] location = "warehouse"``: the state store in a schema of the warehouse itself.

On PostgreSQL and DuckDB, the diff of a steady day then runs as one query in the
warehouse. Each day is planned both ways (skipping verified customers, and with
``--recheck-all``); the saved plans must be the same text, and after applying, each
destination must hold exactly the desired state.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.demo_data import DemoSpec, load_demo
from sync import app
from sync.config_loader import ConfigError, load_config
from tests.fakes.memory_destination import MemoryDestination
from tests.sync_world import AS_OF, World, assert_in_sync
from tests.test_verified_keys import CUSTOMERS, apply_day, changes, same_plan_both_ways

STATE_SECTION = """[state]
location = "warehouse"
schema = "{schema}"
lock_timeout_minutes = 120
"""


@pytest.fixture(params=["postgres", "duckdb"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = str(
        request.getfixturevalue({"postgres": "postgres_schema_url", "duckdb": "duckdb_url"}[request.param])
    )
    writer = sa.create_engine(url)
    load_demo(writer, DemoSpec(customers=CUSTOMERS, seed=5, as_of=AS_OF))
    writer.dispose()
    schema = f"personasync_state_{uuid.uuid4().hex[:8]}"
    text = app.demo_config_text()
    start, end = text.index("[state]"), text.index("[source]")
    text = text[:start] + STATE_SECTION.format(schema=schema) + "\n" + text[end:]
    text = text.replace('url = "sqlite:///warehouse.db"', f'url = "{url}"', 1)
    (tmp_path / "personasync.toml").write_text(text, encoding="utf-8")
    config = load_config(tmp_path / "personasync.toml")
    destinations = {name: MemoryDestination(name, 50) for name in ("email_outbox", "sms_outbox")}
    yield World(tmp_path, config, destinations)
    if request.param == "postgres":
        admin = sa.create_engine(url, poolclass=sa.NullPool)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def change(world: World, statement: str, **params: Any) -> None:
    """Change the warehouse as its loaders would (personasync itself only reads the data)."""
    engine = sa.create_engine(world.config.warehouse.url.get_secret_value(), poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)
    engine.dispose()


def test_state_in_the_warehouse_skips_verified_customers_and_plans_as_a_full_recheck(
    world: World, tmp_path: Path
) -> None:
    first = apply_day(world)
    assert first.skipped_verified == 0
    assert_in_sync(world)
    quiet = same_plan_both_ways(world, tmp_path)
    assert quiet.skipped_verified == CUSTOMERS

    # A list change alone (no row of this customer changes today) must reach the plan.
    tagged = next(
        r for r in world.ledger_rows("email_outbox") if r.tags and not r.suppressed and int(r.key) > 100
    )
    other = next(r for r in world.ledger_rows("email_outbox") if r.tags and r.key != tagged.key)
    change(
        world,
        "INSERT INTO email_unsubscribes VALUES (:email, DATE '2026-11-01')",
        email=tagged.address.upper(),
    )
    change(world, "DELETE FROM customers WHERE CAST(customer_id AS VARCHAR) = :key", key=other.key)
    change(world, "UPDATE customers SET sms_opt_in = 'opted_in' WHERE customer_id < 20")
    change(world, "UPDATE customers SET email = 'new.' || email WHERE customer_id BETWEEN 30 AND 34")
    day1 = same_plan_both_ways(world, tmp_path)
    assert 0 < day1.skipped_verified < CUSTOMERS
    assert changes(day1, "email_outbox", "suppress") >= 1
    assert changes(day1, "email_outbox", "remove_tag") >= 1
    apply_day(world)
    assert_in_sync(world)

    change(world, "UPDATE customers SET email = substr(email, 5) WHERE customer_id BETWEEN 30 AND 34")
    same_plan_both_ways(world, tmp_path)
    apply_day(world)
    assert_in_sync(world)
    # Everyone left is verified again, but for customers still holding a suppression on an
    # address they left (we never lift one we cannot re-check): two rows on one destination,
    # never "unchanged", so always planned, both ways.
    rows = Counter((r.key, name) for name in world.destinations for r in world.ledger_rows(name))
    two_addresses = {key for (key, _), count in rows.items() if count > 1}
    assert two_addresses  # the movers' old addresses
    assert same_plan_both_ways(world, tmp_path).skipped_verified == CUSTOMERS - 1 - len(two_addresses)


def test_state_in_a_sqlite_warehouse_is_refused_with_the_reason(tmp_path: Path) -> None:
    text = app.demo_config_text()
    start, end = text.index("[state]"), text.index("[source]")
    text = text[:start] + STATE_SECTION.format(schema="personasync") + "\n" + text[end:]
    (tmp_path / "personasync.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "personasync.toml")
    assert "needs a warehouse with schemas (postgresql, duckdb); this one is sqlite" in str(error.value)


def test_a_state_url_beside_location_warehouse_is_refused(tmp_path: Path) -> None:
    text = app.demo_config_text().replace('location = "separate"', 'location = "warehouse"')
    (tmp_path / "personasync.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "personasync.toml")
    assert "leave it unset with location = 'warehouse'" in str(error.value)
