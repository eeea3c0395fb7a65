"""Numbers a run newly normalised, kept aside while it reads, written to the identity cache
after.

While a run plans, one long read of the state store stays open (the ledger walk, or the
joint query reading the state file attached to a SQLite warehouse). A SQLite store in WAL
mode cannot checkpoint past the oldest open read, so every page a write touches meanwhile
is appended to the WAL again: writing a first run's numbers batch by batch into the cache's
index of random digests cost some 4 KB of WAL per number, and a first sync of 10M
customers had grown the WAL to 17.8 GB, and counting, when it was stopped.

So a run's new numbers go to a private SQLite file (no journal), and when the reading is
done :meth:`PendingIdentities.flush` writes them in digest order, in a few transactions:
each page of the cache's index is then written about once.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from sqlalchemy.engine import Engine

from sync.state import IDENTITY_CACHE, insert_rows, keep_statistics

ROWS_PER_TRANSACTION: Final = 500_000  # a SQLite store: about this many per transaction
BATCH: Final = 10_000  # other stores: rows per insert and transaction
_SCHEMA: Final = "personasync_pending"


class PendingIdentities:
    """Identity-cache rows held in a temporary file until :meth:`flush`; use as a context
    manager (the file goes on exit, written or not)."""

    def __init__(self, rows_per_transaction: int = ROWS_PER_TRANSACTION) -> None:
        self._rows_per_transaction = rows_per_transaction
        self._folder = tempfile.TemporaryDirectory(prefix="personasync-identities-")
        self._path = Path(self._folder.name) / "pending.db"
        self._db = sqlite3.connect(self._path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE rows (digest INTEGER, namespace TEXT, raw TEXT, normalised TEXT)")
        self._db.execute("BEGIN")
        self.count = 0

    def __enter__(self) -> PendingIdentities:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rows as :data:`~sync.state.IDENTITY_CACHE` takes them."""
        self._db.executemany(
            "INSERT INTO rows VALUES (?, ?, ?, ?)",
            [(r["digest"], r["namespace"], r["raw"], r["normalised"]) for r in rows],
        )
        self.count += len(rows)

    def flush(self, state: Engine) -> None:
        """Write every row held into ``state``'s identity cache (a row already there, from
        this run or another, is kept), and hold none."""
        if not self.count:
            return
        self._db.execute("COMMIT")
        if state.dialect.name == "sqlite":
            self._flush_attached(state)
        else:
            for batch in self._in_digest_order():
                with state.begin() as conn:
                    insert_rows(conn, IDENTITY_CACHE, batch, skip_existing=True)
            keep_statistics(state, IDENTITY_CACHE)
        self._db.execute("DELETE FROM rows")
        self._db.execute("BEGIN")
        self.count = 0

    def close(self) -> None:
        self._db.close()
        self._folder.cleanup()

    def _flush_attached(self, state: Engine) -> None:
        """INSERT ... SELECT from the file attached to a state connection, a range of
        digests per transaction, each in digest order."""
        ranges = max(1, -(-self.count // self._rows_per_transaction))
        width = 2**64 // ranges
        insert = (
            f"INSERT OR IGNORE INTO {IDENTITY_CACHE.name} (digest, namespace, raw, normalised) "
            f"SELECT digest, namespace, raw, normalised FROM {_SCHEMA}.rows "
            "WHERE digest BETWEEN ? AND ? ORDER BY digest"
        )
        with state.connect() as conn:
            conn.exec_driver_sql(f"ATTACH DATABASE ? AS {_SCHEMA}", (str(self._path),))
            conn.commit()
            try:
                for i in range(ranges):
                    low = -(2**63) + i * width
                    high = 2**63 - 1 if i == ranges - 1 else low + width - 1
                    conn.exec_driver_sql(insert, (low, high))
                    conn.commit()
            finally:
                conn.rollback()
                conn.exec_driver_sql(f"DETACH DATABASE {_SCHEMA}")
                conn.commit()

    def _in_digest_order(self) -> Iterator[list[dict[str, Any]]]:
        cursor = self._db.execute("SELECT digest, namespace, raw, normalised FROM rows ORDER BY digest")
        while batch := cursor.fetchmany(BATCH):
            yield [{"digest": d, "namespace": n, "raw": r, "normalised": v} for d, n, r, v in batch]
