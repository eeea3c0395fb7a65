"""The joint query's rows become the diff's input without reading ahead of the resolver."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

from sync.joint_query import LEDGER_COLUMNS
from sync.joint_rows import JointRows

WIDTH = 4  # resolver columns in these rows: key, email, phone, phone country


def row(key: str, fetched: bool = True, destination: str | None = None) -> tuple[Any, ...]:
    resolver = (key, f"{key}@example.com", None, None) if fetched else (key, None, None, None)
    ledger: tuple[Any, ...] = (None,) * len(LEDGER_COLUMNS)
    if destination is not None:
        ledger = (destination, f"{key}@example.com", f"{key}@example.com", None, "persona:x", False, None)
    return (*resolver, "digest" if fetched else None, False, *ledger)


class Counted:
    """The query's rows, counting how many were read."""

    def __init__(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self.rows, self.read = rows, 0

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        for item in self.rows:
            self.read += 1
            yield item


def assignments(joint: JointRows) -> Iterator[Any]:
    """A resolver's part: one assignment per source row, read one at a time."""
    for source in joint.source_rows():
        yield SimpleNamespace(key=source[0])


def test_a_first_sync_without_ledger_rows_reads_only_as_far_as_the_resolver() -> None:
    rows = Counted([row(f"{i:06d}") for i in range(100_000)])
    joint = JointRows(rows, WIDTH, keep_fetched=False)
    walk = joint.aligned(assignments(joint))
    first = [next(walk) for _ in range(5)]
    assert [a.key for a in first] == ["000000", "000001", "000002", "000003", "000004"]
    assert rows.read <= 6  # the rows behind those five, and one to see where the fifth ends


def test_vanished_customers_come_in_key_order_with_their_ledger_rows() -> None:
    rows = [
        row("a", destination="email"),
        row("b", fetched=False, destination="email"),
        row("b", fetched=False, destination="sms"),
        row("c"),
        row("d", fetched=False, destination="email"),
    ]
    joint = JointRows(rows, WIDTH)
    walk = list(joint.aligned(assignments(joint)))
    assert [(a.key, a.assignment is not None, len(a.acknowledged)) for a in walk] == [
        ("a", True, 1),
        ("b", False, 2),
        ("c", True, 0),
        ("d", False, 1),
    ]
