"""The sync ledger in the state store: what destinations acknowledged, runs, record outcomes.

The rule it exists for: **state is what the destination acknowledged, never what we
meant to send.** :meth:`Ledger.commit` is called once per batch, after the destination
answered, and writes the batch's acknowledged changes together with every record's
outcome in one transaction. A crash before it leaves the ledger behind the destination,
never ahead: the next run re-diffs and re-sends, and every change is idempotent.

The one exception is a change whose repetition has a side effect the person notices (an
SMS unsubscribe texts them): such a change is sent **at most once**.
:meth:`Ledger.record_intents` writes it down before it is sent; :meth:`commit` deletes
the intent with its outcome; :meth:`settle_intents`, at the start of the next run, counts
every intent a dead run left behind as sent, so it is never sent again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync.batches import batches
from sync.changes import Acknowledged, Change, ChangeKind
from sync.membership import TAG_SEPARATOR, fingerprint
from sync.spool import decode, encode
from sync.state import (
    INTENTS,
    LEDGER_META,
    MEMBERSHIPS,
    OUTCOMES,
    RUNS,
    insert_rows,
    keep_statistics,
    key_batch,
    key_in,
)

SETTLED: Final = "sent by a run that stopped before recording the answer: counted as sent, never repeated"
STREAM_BATCH: Final = 5_000  # rows fetched at a time when streaming the ledger


class Status(str, Enum):
    APPLIED = "applied"
    FAILED_RETRYABLE = "failed_retryable"  # left for the next run, which retries with the latest data
    FAILED_PERMANENT = "failed_permanent"  # retried when the desired state changes, or --retry-failed


class RunStatus(str, Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    RECORD_FAILURES = "record_failures"  # finished; some records failed
    DESTINATION_FATAL = "destination_fatal"  # a destination refused us or stayed down
    BLOCKED = "blocked"  # a guardrail stopped the run before anything was sent
    FAILED = "failed"  # stopped by an error before or while sending
    INTERRUPTED = "interrupted"  # the process died; found by the next run


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    change: Change
    status: Status
    reason: str | None = None
    attempts: int = 1


@dataclass(frozen=True)
class RunRecord:
    run_id: int
    command: str
    status: str
    started_at: str
    finished_at: str | None
    host: str
    pid: int
    summary: dict[str, Any]


@dataclass(frozen=True)
class FailureRecord:
    destination: str
    key: str
    address: str
    change: str
    tag: str | None
    status: str
    reason: str | None
    attempts: int


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def split_tags(text: str) -> frozenset[str]:
    return frozenset(text.split(TAG_SEPARATOR)) if text else frozenset()


def join_tags(tags: Iterable[str]) -> str:
    return TAG_SEPARATOR.join(sorted(tags))


class Ledger:
    """Reads and writes the ledger tables of one state store."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # --- reading -----------------------------------------------------------------------
    def version(self) -> tuple[str, int]:
        """(store id, version): the version grows with every commit, so a saved plan can tell
        whether the ledger moved since it was made."""
        with self._engine.connect() as conn:
            store_id, version = conn.execute(sa.select(LEDGER_META.c.store_id, LEDGER_META.c.version)).one()
        return str(store_id), int(version)

    def acknowledged(self, conn: Connection, destinations: Sequence[str]) -> Iterator[Acknowledged]:
        """Every ledger row of ``destinations``, ordered by key (binary), then destination and
        address; streamed."""
        m = MEMBERSHIPS
        key_order: sa.ColumnElement[Any] = m.c.key
        if conn.dialect.name == "postgresql":
            key_order = sa.collate(m.c.key, "C")
        query = (
            sa.select(
                m.c.destination,
                m.c.key,
                m.c.address,
                m.c.email,
                m.c.phone,
                m.c.tags,
                m.c.suppressed,
                m.c.failed_fingerprint,
            )
            .where(m.c.destination.in_(list(destinations)))
            .order_by(key_order, m.c.destination, m.c.address)
        )
        result = conn.execution_options(stream_results=True, yield_per=STREAM_BATCH).execute(query)
        for destination, key, address, email, phone, tags, suppressed, failed in result:
            yield Acknowledged(
                destination, key, address, email, phone, split_tags(tags), bool(suppressed), failed
            )

    # --- writing -----------------------------------------------------------------------
    def commit(self, run_id: int, destination: str, outcomes: Sequence[RecordOutcome]) -> None:
        """Record one batch: apply its acknowledged changes to the ledger rows and store every
        record's outcome, in one transaction."""
        if not outcomes:
            return
        at = now_text()
        with self._engine.begin() as conn:
            keys = sorted({o.change.key for o in outcomes})
            rows = self._load(conn, destination, keys)  # every row of these keys, touched or not
            failed: set[tuple[str, str]] = set()
            touched: set[tuple[str, str]] = set()
            for outcome in outcomes:
                change = outcome.change
                ident = (change.key, change.address)
                row = rows.setdefault(ident, _empty_row(destination, change))
                touched.add(ident)
                if outcome.status is Status.APPLIED:
                    _apply(row, change)
                elif outcome.status is Status.FAILED_PERMANENT:
                    failed.add(ident)
                    row["failed_fingerprint"] = change.fingerprint
                    row["failure"] = outcome.reason
            for ident in touched - failed:
                rows[ident]["failed_fingerprint"] = None
                rows[ident]["failure"] = None
            for ident in touched:
                row = rows[ident]
                row["fingerprint"] = fingerprint(row["address"], split_tags(row["tags"]), row["suppressed"])
                row["run_id"] = run_id
                row["changed_at"] = at
            # The keys' rows are replaced as a whole: one DELETE per batch of keys, not one per row.
            m = MEMBERSHIPS
            dialect = conn.dialect.name
            for batch in batches(keys, key_batch(dialect)):
                ours = key_in(m.c.key, batch, dialect)
                conn.execute(m.delete().where(m.c.destination == destination, ours))
            keep = [
                row for row in rows.values() if row["tags"] or row["suppressed"] or row["failed_fingerprint"]
            ]
            insert_rows(conn, m, keep)
            insert_rows(conn, OUTCOMES, [_outcome_row(run_id, destination, o, at) for o in outcomes])
            _delete_intents(conn, destination, [o.change for o in outcomes])
            conn.execute(LEDGER_META.update().values(version=LEDGER_META.c.version + 1))
        keep_statistics(self._engine, MEMBERSHIPS, OUTCOMES)

    def record_intents(
        self,
        run_id: int,
        destination: str,
        changes: Sequence[Change],
        guard: Callable[[Connection], None] | None = None,
    ) -> None:
        """Write down, before sending them, changes that must never be sent twice. ``guard``
        runs in the same transaction first (the run lock's ``confirm``): if it raises, nothing
        is written, so a run that has lost its lock cannot claim a send another run also plans."""
        at = now_text()
        with self._engine.begin() as conn:
            if guard is not None:
                guard(conn)
            conn.execute(
                INTENTS.insert(),
                [
                    {
                        "run_id": run_id,
                        "destination": destination,
                        "key": c.key,
                        "address": c.address,
                        "change": c.kind.value,
                        "payload": encode(c),
                        "at": at,
                    }
                    for c in changes
                ],
            )

    def release_intents(self, destination: str, changes: Sequence[Change]) -> None:
        """Drop intents of changes the destination refused before sending any of them (it
        raised :class:`~sync.ports.DestinationError`): they are planned again next run."""
        with self._engine.begin() as conn:
            _delete_intents(conn, destination, changes)

    def settle_intents(self) -> int:
        """Count every intent left by a run that died between sending and recording as
        sent (committed to that run as applied, with the reason). Returns how many."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(INTENTS.c.run_id, INTENTS.c.destination, INTENTS.c.change, INTENTS.c.payload)
            ).all()
        groups: dict[tuple[int, str], list[RecordOutcome]] = {}
        for run_id, destination, kind, payload in rows:
            change = decode(ChangeKind(kind), payload)
            groups.setdefault((run_id, destination), []).append(
                RecordOutcome(change, Status.APPLIED, SETTLED)
            )
        for (run_id, destination), outcomes in groups.items():
            self.commit(run_id, destination, outcomes)
        return len(rows)

    def _load(
        self, conn: Connection, destination: str, keys: Sequence[str]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Every ledger row of ``keys`` on ``destination``, by (key, address)."""
        m = MEMBERSHIPS
        dialect = conn.dialect.name
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for batch in batches(keys, key_batch(dialect)):
            query = sa.select(m).where(m.c.destination == destination, key_in(m.c.key, batch, dialect))
            for row in conn.execute(query).mappings():
                found[(row["key"], row["address"])] = dict(row)
        return found

    # --- runs ----------------------------------------------------------------------------
    def start_run(self, command: str, host: str, pid: int) -> int:
        with self._engine.begin() as conn:
            conn.execute(
                RUNS.update()
                .where(RUNS.c.status == RunStatus.RUNNING.value)
                .values(status=RunStatus.INTERRUPTED.value)
            )
            result = conn.execute(
                RUNS.insert().values(
                    command=command, status=RunStatus.RUNNING.value, started_at=now_text(), host=host, pid=pid
                )
            )
            (run_id,) = result.inserted_primary_key or (None,)
        assert isinstance(run_id, int)
        return run_id

    def finish_run(self, run_id: int, status: RunStatus, summary: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                RUNS.update()
                .where(RUNS.c.run_id == run_id)
                .values(
                    status=status.value, finished_at=now_text(), summary=json.dumps(summary, sort_keys=True)
                )
            )

    def runs(self, limit: int) -> list[RunRecord]:
        query = sa.select(RUNS).order_by(RUNS.c.run_id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [_run_record(row) for row in conn.execute(query).mappings()]

    def run(self, run_id: int) -> RunRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(RUNS).where(RUNS.c.run_id == run_id)).mappings().one_or_none()
        return _run_record(row) if row is not None else None

    def failures(self, run_id: int, limit: int) -> tuple[int, list[FailureRecord]]:
        """(how many records failed in the run, the first ``limit`` of them)."""
        o = OUTCOMES
        where = sa.and_(o.c.run_id == run_id, o.c.status != Status.APPLIED.value)
        with self._engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).where(where)).scalar_one()
            rows = conn.execute(sa.select(o).where(where).order_by(o.c.id).limit(limit)).mappings().all()
        return int(total), [
            FailureRecord(
                r["destination"],
                r["key"],
                r["address"],
                r["change"],
                r["tag"],
                r["status"],
                r["reason"],
                r["attempts"],
            )
            for r in rows
        ]


def _delete_intents(conn: Connection, destination: str, changes: Sequence[Change]) -> None:
    pending = sa.select(sa.exists().where(INTENTS.c.destination == destination))
    if not changes or not conn.execute(pending).scalar():
        return  # the usual case: one cheap read instead of a DELETE per change
    conn.execute(
        INTENTS.delete().where(
            INTENTS.c.destination == destination,
            INTENTS.c.key == sa.bindparam("k"),
            INTENTS.c.address == sa.bindparam("a"),
            INTENTS.c.change == sa.bindparam("c"),
        ),
        [{"k": c.key, "a": c.address, "c": c.kind.value} for c in changes],
    )


def _empty_row(destination: str, change: Change) -> dict[str, Any]:
    return {
        "destination": destination,
        "key": change.key,
        "address": change.address,
        "email": change.email,
        "phone": change.phone,
        "tags": "",
        "suppressed": False,
        "reasons": "",
        "failed_fingerprint": None,
        "failure": None,
    }


def _apply(row: dict[str, Any], change: Change) -> None:
    tags = set(split_tags(row["tags"]))
    if change.kind is ChangeKind.ADD_TAG:
        assert change.tag is not None
        tags.add(change.tag)
        row["email"], row["phone"] = change.email, change.phone
    elif change.kind is ChangeKind.REMOVE_TAG:
        assert change.tag is not None
        tags.discard(change.tag)
    elif change.kind is ChangeKind.SUPPRESS:
        row["suppressed"] = True
        row["reasons"] = TAG_SEPARATOR.join(change.reasons)
        row["email"], row["phone"] = change.email, change.phone
    else:
        row["suppressed"] = False
        row["reasons"] = ""
    row["tags"] = join_tags(tags)


def _outcome_row(run_id: int, destination: str, outcome: RecordOutcome, at: str) -> dict[str, Any]:
    change = outcome.change
    return {
        "run_id": run_id,
        "destination": destination,
        "key": change.key,
        "address": change.address,
        "change": change.kind.value,
        "tag": change.tag,
        "status": outcome.status.value,
        "reason": outcome.reason,
        "attempts": outcome.attempts,
        "at": at,
    }


def _run_record(row: Any) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        command=row["command"],
        status=row["status"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        host=row["host"],
        pid=row["pid"],
        summary=json.loads(row["summary"]) if row["summary"] else {},
    )
