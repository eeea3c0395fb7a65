"""One run at a time per state store: a lock row with its owner, host, pid and start time.

A row (rather than a database advisory lock) works the same on SQLite and PostgreSQL and
says who holds it. The holder refreshes ``heartbeat_at`` after every committed batch; a
lock whose heartbeat is older than the configured timeout belongs to a run that died
(killed pod, power loss) and is taken over, with a warning naming the old holder.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from sync.ledger import now_text
from sync.shard import Shard
from sync.state import LOCKS

LOCK_NAME: Final = "sync"
log = logging.getLogger("personasync")


@dataclass(frozen=True)
class LockHolder:
    owner: str
    host: str
    pid: int
    started_at: str
    heartbeat_at: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started_at}, last heartbeat {self.heartbeat_at}"


class LockHeld(Exception):
    """Another run holds the lock."""

    def __init__(self, holder: LockHolder | None, message: str = "") -> None:
        self.holder = holder
        described = holder.describe() if holder is not None else "a run that has since finished"
        super().__init__(message or f"another run holds the lock on the state store: {described}")


class LockLost(LockHeld):
    """Another run took this run's lock over, judging it stale: this run must stop sending."""

    def __init__(self, holder: LockHolder | None) -> None:
        taker = holder.describe() if holder is not None else "a run that has since finished"
        super().__init__(
            holder,
            f"this run's lock was taken over as stale by another run ({taker}); stopped after its "
            "last recorded batch. Set [state] lock_timeout_minutes above the longest quiet spell "
            "of a run (a long Retry-After or bulk job wait)",
        )


class RunLock:
    """A held lock; :meth:`heartbeat` keeps it fresh."""

    def __init__(self, engine: Engine, owner: str, name: str = LOCK_NAME) -> None:
        self._engine = engine
        self.owner = owner
        self.name = name

    def heartbeat(self) -> None:
        """Refresh the lock; raises :class:`LockLost` if another run has taken it over (this
        run went quiet for longer than the lock timeout), so the two never send side by side."""
        with self._engine.begin() as conn:
            self.confirm(conn)

    def confirm(self, conn: Connection) -> None:
        """Refresh the lock inside ``conn``'s transaction, or raise :class:`LockLost` (rolling
        back whatever the transaction wrote): a write guarded this way lands only while this
        run still holds the lock, so a run that took the lock over sees it."""
        updated = conn.execute(
            LOCKS.update()
            .where(LOCKS.c.name == self.name, LOCKS.c.owner == self.owner)
            .values(heartbeat_at=now_text())
        )
        if updated.rowcount == 0:
            raise LockLost(_holder(conn, self.name))

    def release(self) -> None:
        with self._engine.begin() as conn:
            conn.execute(LOCKS.delete().where(LOCKS.c.name == self.name, LOCKS.c.owner == self.owner))


@contextmanager
def run_lock(engine: Engine, stale_after: timedelta, shard: Shard | None = None) -> Iterator[RunLock]:
    """Hold the state store's run lock (or one shard's) for the ``with`` block; raises
    :class:`LockHeld`."""
    lock = acquire(engine, stale_after, shard)
    try:
        yield lock
    finally:
        lock.release()


def lock_name(shard: Shard | None) -> str:
    return LOCK_NAME if shard is None else f"{LOCK_NAME} shard {shard}"


def _shard_of(name: str) -> Shard | None:
    return Shard.parse(name.removeprefix(f"{LOCK_NAME} shard ")) if name != LOCK_NAME else None


def acquire(engine: Engine, stale_after: timedelta, shard: Shard | None = None) -> RunLock:
    """Take the run lock: the whole store's, or one shard's. Shards of one split (0/4, 1/4...)
    run side by side; an unsharded run and any shard, or shards of different splits, could
    touch the same customers and exclude each other."""
    lock = _insert(engine, stale_after, lock_name(shard))
    try:
        _refuse_overlapping(engine, lock, shard, stale_after)
    except BaseException:  # LockHeld, or SIGTERM's SystemExit arriving meanwhile: not left behind
        lock.release()
        raise
    return lock


def _refuse_overlapping(engine: Engine, lock: RunLock, shard: Shard | None, stale_after: timedelta) -> None:
    with engine.connect() as conn:
        others = conn.execute(sa.select(LOCKS).where(LOCKS.c.name != lock.name)).mappings().all()
    for row in others:
        if shard is not None and not shard.overlaps(_shard_of(row["name"])):
            continue
        holder = LockHolder(row["owner"], row["host"], row["pid"], row["started_at"], row["heartbeat_at"])
        if not _is_stale(holder, stale_after):
            raise LockHeld(holder)
        log.warning("taking over a stale lock (no heartbeat for over %s): %s", stale_after, holder.describe())
        with engine.begin() as conn:
            conn.execute(LOCKS.delete().where(LOCKS.c.name == row["name"], LOCKS.c.owner == holder.owner))


def _insert(engine: Engine, stale_after: timedelta, name: str) -> RunLock:
    owner = str(uuid.uuid4())
    for _ in range(2):  # a second try after clearing a stale lock
        stamp = now_text()
        row = {
            "name": name,
            "owner": owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": stamp,
            "heartbeat_at": stamp,
        }
        try:
            with engine.begin() as conn:
                conn.execute(LOCKS.insert().values(**row))
            return RunLock(engine, owner, name)
        except IntegrityError:
            holder = current_holder(engine, name)
            if holder is None:
                continue  # released in between
            if not _is_stale(holder, stale_after):
                raise LockHeld(holder) from None
            log.warning(
                "taking over a stale lock (no heartbeat for over %s): %s", stale_after, holder.describe()
            )
            with engine.begin() as conn:
                conn.execute(LOCKS.delete().where(LOCKS.c.name == name, LOCKS.c.owner == holder.owner))
    holder = current_holder(engine, name)
    assert holder is not None
    raise LockHeld(holder)


def current_holder(engine: Engine, name: str = LOCK_NAME) -> LockHolder | None:
    with engine.connect() as conn:
        return _holder(conn, name)


def _holder(conn: Connection, name: str = LOCK_NAME) -> LockHolder | None:
    row = conn.execute(sa.select(LOCKS).where(LOCKS.c.name == name)).mappings().one_or_none()
    if row is None:
        return None
    return LockHolder(row["owner"], row["host"], row["pid"], row["started_at"], row["heartbeat_at"])


def _is_stale(holder: LockHolder, stale_after: timedelta) -> bool:
    heartbeat = datetime.fromisoformat(holder.heartbeat_at)
    return datetime.now(timezone.utc) - heartbeat > stale_after
