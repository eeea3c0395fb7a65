"""A small real world for sync tests: a demo SQLite warehouse, the example config, a state
store, and stateful in-memory destinations standing in for an email tool and an SMS tool."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connectors.demo_data import DemoSpec, write_sqlite_demo
from sync import app
from sync.config import AppConfig, database_url
from sync.config_loader import load_config
from sync.engine import SyncOptions, SyncSummary, Target
from sync.ledger import Ledger
from sync.membership import DestinationSpec, membership
from sync.plan import Limits
from sync.state import create_state_engine
from tests.fakes.memory_destination import MemoryDestination

AS_OF = date(2026, 11, 1)
CLOCK = datetime(2026, 11, 1, tzinfo=timezone.utc)
LEDGER_TABLES = ("memberships", "runs", "record_outcomes", "ledger_meta", "locks")


@dataclass
class World:
    folder: Path
    config: AppConfig
    destinations: dict[str, MemoryDestination] = field(default_factory=dict)

    @property
    def warehouse(self) -> Path:
        return self.folder / "warehouse.db"

    def targets(self) -> list[Target]:
        chosen = []
        for d in self.config.destinations:
            if d.name in self.destinations:
                chosen.append(
                    Target(
                        self.destinations[d.name],
                        DestinationSpec(d.name, d.channel, d.naming()),
                        Limits(d.max_remove_percent, d.max_suppress_percent),
                    )
                )
        return chosen

    def sync(self, **options: Any) -> SyncSummary:
        return app.sync(self.config, clock=CLOCK, options=SyncOptions(**options), targets=self.targets())

    def sql(self, statement: str, *params: Any) -> None:
        """Change the warehouse (the resolver itself only ever reads it)."""
        with sqlite3.connect(self.warehouse) as conn:
            conn.execute(statement, params)

    def desired(self, name: str) -> tuple[dict[str, frozenset[str]], set[str]]:
        """What destination ``name`` should hold now: address -> tags, and suppressed addresses."""
        return self._desired(name, by_key=False)

    def desired_by_key(self, name: str) -> tuple[dict[str, frozenset[str]], set[str]]:
        """As :meth:`desired`, by customer key: key -> tags, and suppressed keys."""
        return self._desired(name, by_key=True)

    def _desired(self, name: str, by_key: bool) -> tuple[dict[str, frozenset[str]], set[str]]:
        spec = next(t.spec for t in self.targets() if t.spec.name == name)
        tagged: dict[str, frozenset[str]] = {}
        suppressed: set[str] = set()
        with app.open_resolution(self.config, CLOCK) as run:
            for assignment in run.assignments():
                wanted = membership(assignment, spec)
                if wanted.address is None:
                    continue
                who = assignment.key if by_key else wanted.address
                if wanted.tags:
                    tagged[who] = wanted.tags
                if wanted.suppressed:
                    suppressed.add(who)
        return tagged, suppressed

    def failure_reasons(self, run_id: int | None, by_key: bool = False) -> dict[str, str]:
        """A run's failed records: address (or key) -> the destination's reason."""
        details = app.run_details(self.config, run_id or 0, failure_limit=1000)
        assert details is not None
        return {(f.key if by_key else f.address): f.reason or "" for f in details.failures}

    def ledger_rows(self, name: str) -> list[Any]:
        engine = self.state_engine()
        try:
            with engine.connect() as conn:
                return list(Ledger(engine).acknowledged(conn, [name]))
        finally:
            engine.dispose()

    def state_engine(self) -> sa.Engine:
        url, schema = self.config.state_store()
        return create_state_engine(database_url(url), schema)

    def ledger_dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every ledger table, to prove a dry run changed nothing."""
        engine = self.state_engine()
        try:
            with engine.connect() as conn:
                existing = set(sa.inspect(conn).get_table_names())
                return {
                    table: sorted(conn.execute(sa.text(f"SELECT * FROM {table}")).all(), key=repr)
                    for table in LEDGER_TABLES
                    if table in existing
                }
        finally:
            engine.dispose()


def make_world(
    folder: Path,
    customers: int = 300,
    batch_size: int = 50,
    state_url: str | None = None,
    extra_config: str = "",
) -> World:
    """The demo warehouse and config; ``extra_config`` is TOML appended to the config (e.g. a
    CRM destination)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_sqlite_demo(folder / "warehouse.db", DemoSpec(customers=customers, seed=5, as_of=AS_OF))
    text = app.demo_config_text()
    if state_url is not None:
        text = text.replace('url = "sqlite:///personasync-state.db"', f'url = "{state_url}"')
    (folder / "personasync.toml").write_text(text + extra_config, encoding="utf-8")
    config = load_config(folder / "personasync.toml")
    return World(
        folder,
        config,
        {
            "email_outbox": MemoryDestination("email_outbox", batch_size),
            "sms_outbox": MemoryDestination("sms_outbox", batch_size),
        },
    )


def assert_in_sync(world: World) -> None:
    """Every destination holds exactly the desired state, and the ledger claims no more than it holds."""
    for name, destination in world.destinations.items():
        tagged, suppressed = world.desired(name)
        assert destination.tagged() == tagged, name
        assert destination.suppressed() >= suppressed, name
        assert_ledger_not_ahead(world, name)


def assert_ledger_not_ahead(world: World, name: str) -> None:
    destination = world.destinations[name]
    for row in world.ledger_rows(name):
        contact = destination.contacts.get(row.address)
        assert contact is not None, f"ledger claims {row.address} on {name}, destination has never seen it"
        assert row.tags <= contact.tags, f"ledger claims tags {row.tags - contact.tags} on {row.address}"
        assert contact.suppressed or not row.suppressed, f"ledger claims {row.address} is suppressed"
