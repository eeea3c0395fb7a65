"""Turn the joint query's rows (:mod:`sync.joint_query`) into what the diff walks.

The rows arrive grouped by key: a fetched customer's resolver row repeated once per ledger
row it has (or once, with NULL ledger columns), and a vanished customer's ledger rows with
NULL resolver columns. The resolver reads the resolver rows (a chunk ahead); each group
it passes is queued, and :meth:`JointRows.aligned` pairs each assignment with its group's
ledger rows, putting vanished customers in between: the same ``Aligned`` items
:func:`sync.changes.align` makes from two streams, without its look-ahead for the next
ledger row (which, on a first sync with no ledger rows, would read the whole query ahead).
The queues hold what the resolver's chunk spans (plus any vanished customers in between).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from personas.model import Assignment
from personas.query import KEY, PHONE
from sync.changes import Acknowledged, Aligned
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

    def __init__(self, rows: Iterable[Sequence[Any]], width: int, *, keep_fetched: bool = True) -> None:
        """``width``: how many resolver columns lead each row (then the digest, whether the
        customer was verified, then the ledger). ``keep_fetched``: queue each fetched key for
        :meth:`fetched` (a run that records verified keys reads them; no other may ask)."""
        self._rows = iter(rows)
        self._width = width
        self._keep_fetched = keep_fetched
        self._pending: Sequence[Any] | None = None
        self._source: deque[Sequence[Any]] = deque()
        self._groups: deque[tuple[str | None, bool, tuple[Acknowledged, ...]]] = (
            deque()
        )  # key, fetched, ledger
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

    def fetched(self) -> Iterator[FetchedKey]:
        """Each fetched key's digest and raw phone, in key order (only with ``keep_fetched``)."""
        assert self._keep_fetched
        return self._drain(self._fetched)

    def aligned(self, assignments: Iterable[Assignment]) -> Iterator[Aligned]:
        """Each assignment (made by the resolver from :meth:`source_rows`) with its ledger
        rows, and each vanished customer with theirs, in key order."""
        for assignment in assignments:
            while True:
                key, fetched, ledger = self._groups.popleft()  # queued when the resolver read the row
                if not fetched:
                    assert key is not None
                    yield Aligned(key, None, ledger)
                elif key == assignment.key:
                    yield Aligned(key, assignment, ledger)
                    break
                # else a row the resolver set aside (a NULL, repeated or out-of-order key)
        while self._groups or self._pull():
            key, fetched, ledger = self._groups.popleft()
            if not fetched:
                assert key is not None
                yield Aligned(key, None, ledger)

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
            if key is not None and self._keep_fetched:
                phone = first[PHONE]
                self._fetched.append(
                    FetchedKey(str(key), str(first[digest_index]), None if phone is None else str(phone))
                )
        fetched = first[digest_index] is not None
        self._groups.append((None if key is None else str(key), fetched, tuple(ledger.values())))
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
