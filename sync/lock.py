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

    def __init__(self, engine: Engine, owner: str) -> None:
        self._engine = engine
        self.owner = owner

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
            .where(LOCKS.c.name == LOCK_NAME, LOCKS.c.owner == self.owner)
            .values(heartbeat_at=now_text())
        )
        if updated.rowcount == 0:
            raise LockLost(_holder(conn))

    def release(self) -> None:
        with self._engine.begin() as conn:
            conn.execute(LOCKS.delete().where(LOCKS.c.name == LOCK_NAME, LOCKS.c.owner == self.owner))


@contextmanager
def run_lock(engine: Engine, stale_after: timedelta) -> Iterator[RunLock]:
    """Hold the state store's run lock for the ``with`` block; raises :class:`LockHeld`."""
    lock = acquire(engine, stale_after)
    try:
        yield lock
    finally:
        lock.release()


def acquire(engine: Engine, stale_after: timedelta) -> RunLock:
    owner = str(uuid.uuid4())
    for _ in range(2):  # a second try after clearing a stale lock
        stamp = now_text()
        row = {
            "name": LOCK_NAME,
            "owner": owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": stamp,
            "heartbeat_at": stamp,
        }
        try:
            with engine.begin() as conn:
                conn.execute(LOCKS.insert().values(**row))
            return RunLock(engine, owner)
        except IntegrityError:
            holder = current_holder(engine)
            if holder is None:
                continue  # released in between
            if not _is_stale(holder, stale_after):
                raise LockHeld(holder) from None
            log.warning(
                "taking over a stale lock (no heartbeat for over %s): %s", stale_after, holder.describe()
            )
            with engine.begin() as conn:
                conn.execute(LOCKS.delete().where(LOCKS.c.name == LOCK_NAME, LOCKS.c.owner == holder.owner))
    holder = current_holder(engine)
    assert holder is not None
    raise LockHeld(holder)


def current_holder(engine: Engine) -> LockHolder | None:
    with engine.connect() as conn:
        return _holder(conn)


def _holder(conn: Connection) -> LockHolder | None:
    row = conn.execute(sa.select(LOCKS).where(LOCKS.c.name == LOCK_NAME)).mappings().one_or_none()
    if row is None:
        return None
    return LockHolder(row["owner"], row["host"], row["pid"], row["started_at"], row["heartbeat_at"])


def _is_stale(holder: LockHolder, stale_after: timedelta) -> bool:
    heartbeat = datetime.fromisoformat(holder.heartbeat_at)
    return datetime.now(timezone.utc) - heartbeat > stale_after
