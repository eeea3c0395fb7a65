"""Split the joint query's rows (:mod:`sync.joint_query`) back into the plain path's streams.

The rows arrive grouped by key: a fetched customer's resolver row repeated once per ledger
row it has (or once, with NULL ledger columns), and a vanished customer's ledger rows with
NULL resolver columns. Three consumers read them lazily, each at its own pace, in key
order: the resolver (resolver rows), the diff (ledger rows) and the verified-keys recorder
(each fetched key's row digest and raw phone). Whichever asks first pulls the next group
and leaves the others' parts queued; the queues hold at most the groups one consumer is
ahead of another (the resolver's chunk), so memory stays bounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from personas.query import KEY, PHONE
from sync.changes import Acknowledged
from sync.joint_query import LEDGER_COLUMNS
from sync.ledger import split_tags


@dataclass(frozen=True, slots=True)
class FetchedKey:
    """What the recorder needs of a fetched customer's source row."""

    key: str
    row_digest: str
    raw_phone: str | None


class JointRows:
    """One pass over the joint query's rows, read as three streams."""

    def __init__(self, rows: Iterable[Sequence[Any]], width: int) -> None:
        """``width``: how many resolver columns lead each row (then the digest, whether the
        customer was verified, then the ledger)."""
        self._rows = iter(rows)
        self._width = width
        self._pending: Sequence[Any] | None = None
        self._source: deque[Sequence[Any]] = deque()
        self._ledger: deque[Acknowledged] = deque()
        self._fetched: deque[FetchedKey] = deque()
        self._done = False
        # Customers fetched although verified (for another row digest), and their ledger rows
        # per destination: [rows, with tags, with tags or suppressed]. The plan counts the
        # verified customers left in the warehouse as these totals' complement.
        self.verified_fetched = 0
        self.verified_ledger: dict[str, list[int]] = {}

    def source_rows(self) -> Iterator[Sequence[Any]]:
        """Resolver rows, one per source row (a key the source repeats comes as often)."""
        return self._drain(self._source)

    def ledger_rows(self) -> Iterator[Acknowledged]:
        return self._drain(self._ledger)

    def fetched(self) -> Iterator[FetchedKey]:
        return self._drain(self._fetched)

    def _drain(self, queue: deque[Any]) -> Iterator[Any]:
        while True:
            if queue:
                yield queue.popleft()
            elif not self._pull():
                return

    def _pull(self) -> bool:
        """Read the next key's group of rows into the queues; False at the end."""
        if self._done:
            return False
        first = self._pending if self._pending is not None else next(self._rows, None)
        self._pending = None
        if first is None:
            self._done = True
            return False
        group = [first]
        key = first[KEY]
        if key is not None:  # a NULL key is the resolver's to report, one row at a time
            for row in self._rows:
                if row[KEY] != key:
                    self._pending = row
                    break
                group.append(row)
        digest_index = self._width
        ledger: dict[tuple[str, str], Acknowledged] = {}  # by (destination, address): once each
        for row in group:
            if row[digest_index + 2] is not None:
                acknowledged = self._acknowledged(row)
                ledger.setdefault((acknowledged.destination, acknowledged.address), acknowledged)
        if first[digest_index] is not None:  # fetched from the source (else: gone from it)
            # A key the source repeats S times comes S x max(1, ledger rows) times.
            repeats = max(1, len(group) // max(1, len(ledger)))
            resolver_row = tuple(first[:digest_index])
            self._source.extend([resolver_row] * repeats)
            if first[digest_index + 1] and key is not None:
                self._count_verified(ledger.values())
            if key is not None:
                phone = first[PHONE]
                self._fetched.append(
                    FetchedKey(str(key), str(first[digest_index]), None if phone is None else str(phone))
                )
        self._ledger.extend(ledger.values())
        return True

    def _count_verified(self, ledger: Iterable[Acknowledged]) -> None:
        self.verified_fetched += 1
        for row in ledger:
            counts = self.verified_ledger.setdefault(row.destination, [0, 0, 0])
            counts[0] += 1
            counts[1] += bool(row.tags)
            counts[2] += bool(row.tags) or row.suppressed

    def _acknowledged(self, row: Sequence[Any]) -> Acknowledged:
        start = self._width + 2
        values = dict(zip(LEDGER_COLUMNS, row[start : start + len(LEDGER_COLUMNS)], strict=True))
        return Acknowledged(
            values["destination"],
            str(row[KEY]),
            values["address"],
            values["email"],
            values["phone"],
            split_tags(values["tags"]),
            bool(values["suppressed"]),
            values["failed_fingerprint"],
        )
