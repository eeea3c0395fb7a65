"""How fast this machine is, as one figure: the best of five runs of a fixed workload shaped
like a sync's own (rows into SQLite, a grouped sort, each row read back and hashed in
Python).

Runs of different sessions land on different machines of the same class: the 10M steady
syncs of one session ran a quarter slower than another's, though an A/B of the two commits
on one machine showed no difference. This figure, taken when a run starts, tells a slower
machine from slower code. It reads high when something else is using the machine, which
is worth knowing too.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time

ROWS = 100_000
REPEATS = 5


def seconds() -> float:
    """The workload's best wall time, in seconds."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        _workload()
        best = min(best, time.perf_counter() - start)
    return round(best, 3)


def _workload() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE customers (key TEXT PRIMARY KEY, email TEXT, spend INTEGER)")
    rows = ((f"c{i:07d}", f"user{i * 7919 % ROWS}@example.com", i * 31 % 1000) for i in range(ROWS))
    conn.executemany("INSERT INTO customers VALUES (?, ?, ?)", rows)
    conn.execute("SELECT email, sum(spend) FROM customers GROUP BY email ORDER BY 2, 1").fetchall()
    for key, email, spend in conn.execute("SELECT key, email, spend FROM customers"):
        hashlib.blake2b(f"{key}|{email}|{spend}".encode(), digest_size=8).digest()
    conn.close()
