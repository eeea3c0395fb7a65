"""The state store: recorded, idempotent migrations; a newer schema is refused; the identity
cache round-trips and keeps namespaces apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from sync.state import (
    MIGRATIONS,
    SCHEMA_MIGRATIONS,
    SqlIdentityCache,
    StateError,
    create_state_engine,
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
