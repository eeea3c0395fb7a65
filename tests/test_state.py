"""The state store: recorded, idempotent migrations; a newer schema is refused; the identity
cache round-trips and keeps namespaces apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sync.changes import Change, ChangeKind
from sync.ledger import Ledger, RecordOutcome, Status
from sync.pending_identities import PendingIdentities
from sync.state import (
    IDENTITY_CACHE,
    MEMBERSHIPS,
    MIGRATIONS,
    OUTCOMES,
    SCHEMA_MIGRATIONS,
    SqlIdentityCache,
    StateError,
    create_state_engine,
    insert_rows,
    key_in,
    migrate,
)


def test_migrations_are_recorded_once(tmp_path: Path) -> None:
    engine = create_state_engine(make_url(f"sqlite:///{tmp_path / 'state.db'}"))
    assert migrate(engine) == MIGRATIONS[-1].version
    assert migrate(engine) == MIGRATIONS[-1].version
    with engine.connect() as conn:
        versions = conn.scalars(sa.select(SCHEMA_MIGRATIONS.c.version)).all()
    assert versions == [m.version for m in MIGRATIONS]


def test_a_store_from_a_newer_personasync_is_refused(tmp_path: Path) -> None:
    engine = create_state_engine(make_url(f"sqlite:///{tmp_path / 'state.db'}"))
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(SCHEMA_MIGRATIONS.insert().values(version=999, name="future", applied_at="2030-01-01"))
    with pytest.raises(StateError, match="schema version 999"):
        migrate(engine)


def test_missing_state_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="does not exist"):
        create_state_engine(make_url(f"sqlite:///{tmp_path / 'nope' / 'state.db'}"))


def test_identity_cache_round_trip_by_namespace(tmp_path: Path) -> None:
    engine = create_state_engine(make_url(f"sqlite:///{tmp_path / 'state.db'}"))
    migrate(engine)
    cache = SqlIdentityCache(engine)
    cache.store("phone:US", {"(415) 555-0100": "+14155550100", "12": ""})
    cache.store("phone:US", {"12": ""})  # storing again is harmless
    assert cache.lookup("phone:US", ["(415) 555-0100", "12", "unknown"]) == {
        "(415) 555-0100": "+14155550100",
        "12": "",
    }
    assert cache.lookup("phone:GB", ["(415) 555-0100"]) == {}


HASH_INDEXES = {
    "ix_verified_email": "email_h",
    "ix_verified_phone": "phone_h",
    "ix_verified_digits": "digits_h",
}


def _indexes_on_verified_keys(conn: sa.Connection) -> set[str]:
    dialect = conn.dialect.name
    if dialect == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'verified_keys'"
    elif dialect == "postgresql":
        query = (
            "SELECT indexname FROM pg_indexes "
            "WHERE tablename = 'verified_keys' AND schemaname = current_schema()"
        )
    else:
        query = "SELECT index_name FROM duckdb_indexes() WHERE table_name = 'verified_keys'"
    return {name for (name,) in conn.exec_driver_sql(query)}


def _state_engine_on(warehouse_url: str) -> sa.Engine:
    url = make_url(warehouse_url)
    schema = {"sqlite": None, "postgresql": url.query.get("options", "").partition("=")[2], "duckdb": "state"}
    engine = create_state_engine(url, schema[url.get_backend_name()])
    migrate(engine)
    return engine


def test_a_store_made_by_version_4_loses_its_indexes_on_identifier_hashes(warehouse_url: str) -> None:
    """Migration 4 indexed the three identifier hashes of verified keys; a first sync spent
    most of its recording time keeping them. Migration 5 drops them, in the store's schema,
    and keeps the verified customers."""
    engine = _state_engine_on(warehouse_url)
    with engine.begin() as conn:  # the store as migration 4 left it, with a verified customer
        for name, column in HASH_INDEXES.items():
            conn.exec_driver_sql(f"CREATE INDEX {name} ON verified_keys ({column})")
        conn.execute(SCHEMA_MIGRATIONS.delete().where(SCHEMA_MIGRATIONS.c.version == 5))
        conn.exec_driver_sql(
            "INSERT INTO verified_keys (key, row_digest, config, email_h) VALUES ('c1', 'd', 'cfg', 7)"
        )
        assert set(HASH_INDEXES) <= _indexes_on_verified_keys(conn)

    assert migrate(engine) == 5
    with engine.connect() as conn:
        assert not set(HASH_INDEXES) & _indexes_on_verified_keys(conn)
        assert conn.exec_driver_sql("SELECT key, email_h FROM verified_keys").all() == [("c1", 7)]
    engine.dispose()


def test_statements_on_a_postgresql_state_store_are_planned_with_their_parameters(
    postgres_schema_url: str,
) -> None:
    """psycopg prepares a statement run five times, and PostgreSQL would then keep one
    generic plan, made while a first sync's tables are nearly empty: a full scan of the
    ledger for every batch as it fills. Every execution must get a plan of its own."""
    engine = create_state_engine(make_url(postgres_schema_url))
    migrate(engine)
    m = MEMBERSHIPS
    lookup = sa.select(m.c.key).where(
        m.c.destination == "email", m.c.key.in_(sa.bindparam("keys", expanding=True))
    )
    with engine.connect() as conn:
        for run in range(12):
            conn.execute(lookup, {"keys": [str(run), str(run + 1)]}).all()
        prepared = conn.exec_driver_sql(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE position('memberships' in statement) > 0"
        ).all()
    engine.dispose()
    assert prepared, "psycopg no longer prepares repeated statements: this test proves nothing"
    assert all(generic == 0 and custom > 0 for generic, custom in prepared), prepared


def test_rows_written_to_the_state_store_read_back_as_written(warehouse_url: str) -> None:
    """DuckDB takes rows as one list per column (see ``insert_rows``): every value, NULLs,
    booleans, quotes and numbered ids must come back as SQLite and PostgreSQL keep them."""
    engine = _state_engine_on(warehouse_url)
    outcomes = [
        {"run_id": 1, "destination": "email", "key": f"k{i}", "address": f"o'{i}@x.com", "change": "add_tag",
         "tag": None if i % 2 else "vip", "status": "applied", "reason": None, "attempts": 1, "at": "2026"}
        for i in range(5)
    ]  # fmt: skip
    cached = [
        {"digest": d, "namespace": "phone:US", "raw": f"+1 415 555 010{d}", "normalised": "x"} for d in (1, 2)
    ]
    with engine.begin() as conn:
        insert_rows(conn, OUTCOMES, outcomes)
        insert_rows(conn, IDENTITY_CACHE, cached, skip_existing=True)
    with engine.begin() as conn:  # another run wrote one of them meanwhile: skipped, not an error
        insert_rows(conn, IDENTITY_CACHE, [{**cached[0], "normalised": "y"}], skip_existing=True)
    with engine.connect() as conn:
        stored = conn.execute(sa.select(OUTCOMES).order_by(OUTCOMES.c.id)).mappings().all()
        cache = conn.execute(sa.select(IDENTITY_CACHE.c.raw, IDENTITY_CACHE.c.normalised)).all()
    engine.dispose()
    assert [{k: v for k, v in row.items() if k != "id"} for row in stored] == outcomes
    assert len({row["id"] for row in stored}) == 5
    assert sorted(cache) == [("+1 415 555 0101", "x"), ("+1 415 555 0102", "x")]


def test_a_list_of_keys_selects_and_deletes_exactly_those_rows(warehouse_url: str) -> None:
    """``key_in`` (DuckDB: one list parameter) matches text and integer keys exactly as an
    ``IN`` list does, quotes and all, and an empty list matches nothing."""
    engine = _state_engine_on(warehouse_url)
    keys = ["plain", "o'brien", 'say "hi"', "naïve", "a,b", "%_"]
    rows = [
        {"destination": "email", "key": k, "address": f"{n}@x.com", "tags": "vip", "suppressed": False,
         "reasons": "", "fingerprint": "f", "run_id": 1, "changed_at": "2026"}
        for n, k in enumerate([*keys, "other", "o'brien2"])
    ]  # fmt: skip
    cached = [
        {"digest": d, "namespace": "n", "raw": str(d), "normalised": "x"} for d in (-(2**63), 0, 7, 2**63 - 1)
    ]
    m, c = MEMBERSHIPS, IDENTITY_CACHE
    with engine.begin() as conn:
        insert_rows(conn, m, rows)
        insert_rows(conn, c, cached)
    with engine.begin() as conn:
        dialect = conn.dialect.name
        found = set(conn.scalars(sa.select(m.c.key).where(key_in(m.c.key, keys, dialect))))
        digests = set(
            conn.scalars(sa.select(c.c.digest).where(key_in(c.c.digest, [-(2**63), 2**63 - 1], dialect)))
        )
        nothing = conn.scalars(sa.select(m.c.key).where(key_in(m.c.key, [], dialect))).all()
        conn.execute(m.delete().where(key_in(m.c.key, keys[:2], dialect)))
        left = set(conn.scalars(sa.select(m.c.key)))
    engine.dispose()
    assert found == set(keys)
    assert digests == {-(2**63), 2**63 - 1}
    assert nothing == []
    assert left == {*keys[2:], "other", "o'brien2"}


def test_numbers_held_during_a_run_reach_the_cache_when_flushed(warehouse_url: str) -> None:
    """A run holds the numbers it normalised until its reading is done (see
    ``sync.pending_identities``), then writes them all, a range of digests at a time; a
    number already cached keeps its row."""
    engine = _state_engine_on(warehouse_url)
    SqlIdentityCache(engine).store("phone:US", {"(415) 555-0100": "+14155550100"})
    numbers = {f"(415) 555-01{n:02d}": f"+141555501{n:02d}" for n in range(40)}
    with PendingIdentities(rows_per_transaction=7) as pending:
        held = SqlIdentityCache(engine, pending)
        held.store("phone:US", {**numbers, "(415) 555-0100": "changed meanwhile"})
        held.store("phone:GB", {"07700 900123": "+447700900123"})
        extremes = [-(2**63), -1, 0, 2**63 - 1]  # the first and last digest of the ranges
        pending.add([{"digest": d, "namespace": "edge", "raw": str(d), "normalised": "x"} for d in extremes])
        assert held.lookup("phone:US", numbers) == {"(415) 555-0100": "+14155550100"}  # not yet written
        pending.flush(engine)
        assert pending.count == 0
        pending.flush(engine)  # nothing held: nothing to do
    with engine.connect() as conn:
        edges = conn.execute(sa.select(IDENTITY_CACHE.c.digest).where(IDENTITY_CACHE.c.namespace == "edge"))
        assert sorted(digest for (digest,) in edges) == extremes
    engine.dispose()
    assert held.lookup("phone:US", numbers) == numbers
    assert held.lookup("phone:GB", ["07700 900123"]) == {"07700 900123": "+447700900123"}


def _estimated_rows(conn: sa.Connection, destination: str) -> int:
    """How many ledger rows PostgreSQL's planner thinks ``destination`` has."""
    plan = conn.exec_driver_sql(
        "EXPLAIN (FORMAT JSON) SELECT * FROM memberships WHERE destination = %s", (destination,)
    ).scalar_one()
    return int(plan[0]["Plan"]["Plan Rows"])


def test_a_ledger_grown_within_one_run_is_planned_at_its_size_on_postgresql(postgres_schema_url: str) -> None:
    """PostgreSQL plans from what ANALYZE last learned of a table. A first sync grows the
    ledger from nothing within one run; planned as if it were still nearly empty, each
    lookup of a batch of keys read every ledger row of the destination instead of looking
    the keys up (0.41 s a statement at 1.8M rows, and growing; 27 ms once analysed). The
    ledger analyses itself as it grows, whether autovacuum is on or not."""
    engine = create_state_engine(make_url(postgres_schema_url))
    migrate(engine)
    with engine.begin() as conn:  # whatever the server's settings: only the ledger may analyse
        for table in (MEMBERSHIPS, OUTCOMES):
            conn.exec_driver_sql(f"ALTER TABLE {table.name} SET (autovacuum_enabled = false)")
    ledger = Ledger(engine)
    run = ledger.start_run("sync", "host-a", 1)
    for start in range(0, 30_000, 2_000):
        ledger.commit(run, "email", [_tag_added(f"c{i:06d}") for i in range(start, start + 2_000)])
    with engine.connect() as conn:
        estimated = _estimated_rows(conn, "email")
    engine.dispose()
    assert 20_000 <= estimated <= 40_000, f"the planner expects {estimated:,} of 30,000 ledger rows"


def _tag_added(key: str) -> RecordOutcome:
    address = f"{key}@example.com"
    change = Change(ChangeKind.ADD_TAG, key, address, address, None, "f" * 16, tag="vip")
    return RecordOutcome(change, Status.APPLIED)
