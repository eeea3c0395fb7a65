"""Customers verified in sync: written down by one run, skipped in the warehouse by the next.

A row ``(key, row_digest, config)`` of :data:`~sync.state.VERIFIED_KEYS` means: every
destination of a run with config digest ``config`` holds exactly what a source row with
``row_digest`` asks for, given the email and phone suppression lists recorded in
:data:`~sync.state.LISTED_IDENTIFIERS`. :mod:`sync.joint_query` skips such a customer while
its row keeps the digest. The statement stays true because:

1. everything else that decides a customer's outcome is in the config digest
   (:func:`config_digest`: the config, the destinations' names, channels and tag names,
   the identifier libraries' versions, the duplicate emails only Python finds);
2. a run deletes the row of every customer it plans (changed, new or gone) before it
   sends anything;
3. a row is written only for a customer verified: every destination unchanged when
   planned, or, after applying, the ledger holding exactly the expected fingerprints;
4. a change to a suppression list deletes the rows of the customers whose email or phone
   it lists or unlists, before the new lists are recorded.

Deleting a row is always safe (the customer is just fetched again), so every run may;
writing rows and lists is left to the unsharded, sending run, which holds the whole
lock. A dry run, a shard and ``--full-resync`` only delete.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from personas.identity import phone_digits
from personas.model import Assignment
from sync.batches import batches
from sync.joint_rows import FetchedKey
from sync.membership import Membership
from sync.state import (
    LISTED_IDENTIFIERS,
    MEMBERSHIPS,
    VERIFIED_KEYS,
    insert_rows,
    keep_statistics,
    key_batch,
    key_in,
    stable_hash,
)

KINDS: Final = ("email", "phone")  # what a suppression list can match on, besides the key
FORMAT: Final = 1  # of the digests: a new format forgets every verified customer
MISMATCH: Final = "\x00"  # a ledger state no expectation equals

Guard = Callable[[Connection], None]


def config_digest(parts: Mapping[str, Any]) -> str:
    """The digest of everything besides the source row that decides what is sent."""
    text = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def expected_state(desired: Membership) -> str:
    """What a destination's ledger must show for ``desired`` to count as unchanged (the same
    test as :func:`sync.changes.unchanged`): nothing, or one row with its fingerprint."""
    return desired.fingerprint if desired.tags or desired.suppressed else ""


def forget_verified(state: Engine) -> None:
    """Forget every verified customer: the ledger is about to change in a way not followed
    customer by customer (a saved plan applied)."""
    with state.begin() as conn:
        conn.execute(VERIFIED_KEYS.delete())


class ListedEntries:
    """The suppression lists as :meth:`VerifiedKeys.refresh_lists` compares them: one entry
    per (kind, normalised identifier, bitmask of the sources listing it), as stable 64-bit
    hashes in ascending order, each with its kind and its identifier's stable hash beside
    it (17 bytes an entry). :class:`~sync.listed_identifiers.ListedIdentifiers` builds
    them; an entry is the stable hash of (kind, the identifier's stable hash, bitmask).
    """

    def __init__(self, entries: array[int], values: array[int], kinds: array[int]) -> None:
        """Parallel arrays, ascending by ``entries``, without repeats; ``kinds``: positions
        in :data:`KINDS`."""
        self.entries, self.values, self.kinds = entries, values, kinds

    @classmethod
    def empty(cls) -> ListedEntries:
        return cls(array("q"), array("q"), array("b"))


class VerifiedKeys:
    """The verified keys of one state store, for one run's config and destinations."""

    def __init__(self, state: Engine, config: str, destinations: Sequence[str], writes: bool) -> None:
        """``writes``: this run may write verified keys and lists (the unsharded sending run)."""
        self._state = state
        self.batch = key_batch(state.dialect.name)  # customers per statement
        self.config = config
        self.destinations = list(destinations)
        self.writes = writes

    def any_recorded(self) -> bool:
        """Some customer is verified for this config (for none, skipping can skip nobody)."""
        v = VERIFIED_KEYS
        with self._state.connect() as conn:
            return (
                conn.execute(sa.select(v.c.key).where(v.c.config == self.config).limit(1)).first() is not None
            )

    def refresh_lists(self, listed: ListedEntries) -> int:
        """Forget the customers whose identifiers a suppression list gained or lost since the
        lists were recorded, and, for a writing run, record the lists. Returns how many
        customers were forgotten.

        The recorded entries are read in entry order and merged with ``listed`` (sorted the
        same way), so neither side is held as a set of Python objects."""
        t = LISTED_IDENTIFIERS
        added = array("q")  # positions in ``listed``
        removed = array("q")  # entries
        touched: dict[str, array[int]] = {kind: array("q") for kind in KINDS}
        entries = listed.entries
        with self._state.connect() as conn:
            position = 0
            stored = sa.select(t.c.entry, t.c.kind, t.c.value_h).order_by(t.c.entry)
            streamed = {"stream_results": True, "yield_per": 10_000}
            for entry, kind, value_h in conn.execute(stored, execution_options=streamed):
                while position < len(entries) and entries[position] < entry:
                    added.append(position)
                    position += 1
                if position < len(entries) and entries[position] == entry:
                    position += 1
                    continue
                removed.append(entry)
                touched[kind].append(value_h)
            added.extend(range(position, len(entries)))
            anyone_verified = conn.execute(sa.select(VERIFIED_KEYS.c.key).limit(1)).first() is not None
        for position in added:
            touched[KINDS[listed.kinds[position]]].append(listed.values[position])
        forgotten = 0
        dialect = self._state.dialect.name
        with self._state.begin() as conn:
            if anyone_verified and (touched["email"] or touched["phone"]):  # a first run has nobody
                forgotten = _forget_identifiers(conn, touched)
            if self.writes:
                for batch in batches(removed, self.batch):
                    conn.execute(t.delete().where(key_in(t.c.entry, batch, dialect)))
                for batch in batches(added, self.batch):
                    rows = [
                        {"entry": entries[p], "kind": KINDS[listed.kinds[p]], "value_h": listed.values[p]}
                        for p in batch
                    ]  # a run whose lock was taken over may record the same entries
                    insert_rows(conn, t, rows, skip_existing=True)
        keep_statistics(self._state, LISTED_IDENTIFIERS, VERIFIED_KEYS)
        return forgotten

    def recorder(self, fetched: Iterator[FetchedKey]) -> Recorder:
        return Recorder(self, fetched)

    # --- used by Recorder -------------------------------------------------------------------
    def rewrite(self, forget: Sequence[str], record: Sequence[list[Any]], guard: Guard | None) -> None:
        """Delete the rows of the keys ``forget`` and write ``record``'s (candidates: key,
        digest, email_h, phone_h, digits_h, ...), in one transaction under ``guard``."""
        v = VERIFIED_KEYS
        with self._state.begin() as conn:
            if guard is not None:
                guard(conn)
            keys = sorted({*forget, *(c[0] for c in record)})
            conn.execute(v.delete().where(key_in(v.c.key, keys, conn.dialect.name)))
            rows = [
                {
                    "key": c[0],
                    "row_digest": c[1],
                    "config": self.config,
                    "email_h": c[2],
                    "phone_h": c[3],
                    "digits_h": c[4],
                }
                for c in record
            ]
            insert_rows(conn, v, rows)
        keep_statistics(self._state, v)

    def ledger_states(self, keys: Sequence[str]) -> dict[tuple[str, str], str]:
        """(key, destination) -> the state the ledger shows (see :func:`expected_state`)."""
        m = MEMBERSHIPS
        query = sa.select(m.c.key, m.c.destination, m.c.fingerprint, m.c.failed_fingerprint).where(
            m.c.destination.in_(self.destinations), key_in(m.c.key, keys, self._state.dialect.name)
        )
        states: dict[tuple[str, str], str] = {}
        with self._state.connect() as conn:
            for key, destination, fingerprint, failed in conn.execute(query):
                ident = (key, destination)
                states[ident] = MISMATCH if ident in states or failed is not None else fingerprint
        return states


class Recorder:
    """Follows one run's plan and keeps the verified keys true (see the module docstring).

    Candidates (one per planned customer) are spooled to a temporary file, so a first run
    over millions of customers records them in bounded memory.
    """

    def __init__(self, keys: VerifiedKeys, fetched: Iterator[FetchedKey]) -> None:
        self._keys = keys
        self._fetched = fetched
        self._destinations = keys.destinations
        self._file: IO[str] = tempfile.TemporaryFile(  # noqa: SIM115 - closed by close()
            "w+", encoding="utf-8", prefix="personasync-verified-"
        )

    def planned(
        self, key: str, assignment: Assignment | None, expected: Sequence[str], unchanged: bool
    ) -> None:
        """A customer the run planned: ``expected`` per destination (see
        :func:`expected_state`); ``unchanged``: nothing to send to any destination."""
        found = None
        if assignment is not None:
            for fetched in self._fetched:
                if fetched.key == key:
                    found = fetched
                    break
        if found is None or assignment is None:
            self._file.write(json.dumps([key, None]) + "\n")  # gone, or not verifiable: forget only
            return
        hashes = [
            stable_hash(assignment.email) if assignment.email is not None else None,
            stable_hash(assignment.phone) if assignment.phone is not None else None,
            stable_hash(phone_digits(found.raw_phone)) if found.raw_phone is not None else None,
        ]
        self._file.write(json.dumps([key, found.row_digest, *hashes, unchanged, *expected]) + "\n")

    def before_apply(self, guard: Guard | None = None) -> None:
        """Before anything is sent: forget every planned customer; record the unchanged ones
        (a writing run)."""
        for batch in batches(self._candidates(), self._keys.batch):
            unchanged = [c for c in batch if c[1] is not None and c[5]] if self._keys.writes else []
            self._keys.rewrite([c[0] for c in batch], unchanged, guard)

    def after_apply(self, guard: Guard | None = None) -> None:
        """After applying (a writing run): record every changed customer whose ledger now shows
        exactly what was planned for it on every destination."""
        if not self._keys.writes:
            return
        changed = (c for c in self._candidates() if c[1] is not None and not c[5])
        for batch in batches(changed, self._keys.batch):
            states = self._keys.ledger_states([c[0] for c in batch])
            verified = [
                c
                for c in batch
                if all(
                    states.get((c[0], d), "") == want
                    for d, want in zip(self._destinations, c[6:], strict=True)
                )
            ]
            if verified:
                self._keys.rewrite([], verified, guard)

    def close(self) -> None:
        self._file.close()

    def _candidates(self) -> Iterator[list[Any]]:
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            yield json.loads(line)


TOUCHED: Final = sa.Table(  # the identifiers a list change touched, for one scan
    "personasync_touched",
    sa.MetaData(),
    sa.Column("kind", sa.String(5), primary_key=True),
    sa.Column("value_h", sa.BigInteger, primary_key=True),
    prefixes=["TEMPORARY"],
)


def _forget_identifiers(conn: Connection, touched: Mapping[str, Sequence[int]]) -> int:
    """Delete the verified customers whose email or phone hash is ``touched`` (kind -> hashes),
    in one scan of the table: the hashes go into a temporary table, since the table has no
    index on them (see :data:`~sync.state.VERIFIED_KEYS`). Returns how many."""
    v, t = VERIFIED_KEYS, TOUCHED
    t.create(conn)  # inside the transaction: gone with it, also if the delete fails
    for kind, values in touched.items():
        for batch in batches(sorted(set(values)), key_batch(conn.dialect.name)):
            insert_rows(conn, t, [{"kind": kind, "value_h": h} for h in batch])

    def hashes(kind: str) -> sa.Select[tuple[int]]:
        return sa.select(t.c.value_h).where(t.c.kind == kind)

    listed = sa.or_(
        v.c.email_h.in_(hashes("email")), v.c.phone_h.in_(hashes("phone")), v.c.digits_h.in_(hashes("phone"))
    )
    forgotten = conn.execute(v.delete().where(listed)).rowcount or 0
    t.drop(conn)
    return forgotten
