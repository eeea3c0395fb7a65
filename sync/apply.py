"""Sending planned changes to a destination, batch by batch, and recording what it acknowledged.

For each batch: send it; changes the destination reports as retryable are sent again
(at most ``ROUNDS`` times in all; the HTTP client has already waited out any
``Retry-After``); a batch refused as a whole is split in halves until the bad records
stand alone. Then the ledger commits the acknowledged changes together with every
record's outcome in one transaction. A change the destination did not acknowledge,
including one it never answered about, is never recorded as synced.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from sqlalchemy.engine import Connection

from sync.batches import batches
from sync.changes import Change, ChangeKind
from sync.ledger import Ledger, RecordOutcome, Status
from sync.ports import ChangeResult, Destination, DestinationError, Outcome

ROUNDS: Final = 3  # sends per change within a run before it is left for the next run
NO_ANSWER: Final = "the destination did not report on this record"


class Progress(Protocol):
    """Where apply reports progress; the CLI shows a bar or log lines, the API nothing."""

    def start(self, destination: str, kind: ChangeKind, total: int) -> None: ...

    def advance(self, destination: str, count: int) -> None: ...


class NoProgress:
    def start(self, destination: str, kind: ChangeKind, total: int) -> None:
        pass

    def advance(self, destination: str, count: int) -> None:
        pass


class Heartbeat(Protocol):
    def heartbeat(self) -> None: ...

    def confirm(self, conn: Connection) -> None: ...


@dataclass
class DestinationTally:
    """What happened on one destination during a run."""

    applied: Counter[str] = field(default_factory=Counter)  # per change kind
    failed_retryable: Counter[str] = field(default_factory=Counter)
    failed_permanent: Counter[str] = field(default_factory=Counter)
    not_sent: Counter[str] = field(default_factory=Counter)  # skipped after a fatal error
    requests: int = 0
    fatal: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "applied": dict(self.applied),
            "failed_retryable": dict(self.failed_retryable),
            "failed_permanent": dict(self.failed_permanent),
            "not_sent": dict(self.not_sent),
            "requests": self.requests,
            "fatal": self.fatal,
        }

    @property
    def failures(self) -> int:
        return sum(self.failed_retryable.values()) + sum(self.failed_permanent.values())


class Applier:
    """Applies sections of a plan for one run."""

    def __init__(self, ledger: Ledger, run_id: int, lock: Heartbeat, progress: Progress) -> None:
        self._ledger = ledger
        self._run_id = run_id
        self._lock = lock
        self._progress = progress

    def apply(
        self,
        destination: Destination,
        kind: ChangeKind,
        changes: Iterable[Change],
        total: int,
        tally: DestinationTally,
    ) -> None:
        """Send ``changes`` (all of ``kind``) in batches; stop at a :class:`DestinationError`,
        recorded on ``tally.fatal``."""
        if tally.fatal is not None:
            tally.not_sent[kind.value] += total
            return
        self._progress.start(destination.name, kind, total)
        size = destination.capabilities.max_batch[kind]
        sent = 0
        for batch in batches(changes, size):
            try:
                outcomes = self._send(destination, kind, batch, tally)
            except DestinationError as exc:
                if kind in destination.capabilities.at_most_once:  # refused before sending: not sent
                    self._ledger.release_intents(destination.name, batch)
                tally.fatal = str(exc)
                tally.not_sent[kind.value] += total - sent
                return
            self._ledger.commit(self._run_id, destination.name, outcomes)
            self._lock.heartbeat()
            for outcome in outcomes:
                counter = {
                    Status.APPLIED: tally.applied,
                    Status.FAILED_RETRYABLE: tally.failed_retryable,
                    Status.FAILED_PERMANENT: tally.failed_permanent,
                }[outcome.status]
                counter[kind.value] += 1
            sent += len(batch)
            self._progress.advance(destination.name, len(batch))

    def _send(
        self, destination: Destination, kind: ChangeKind, batch: Sequence[Change], tally: DestinationTally
    ) -> list[RecordOutcome]:
        outcomes: list[RecordOutcome] = []
        todo = list(batch)
        if kind in destination.capabilities.at_most_once:
            self._ledger.record_intents(self._run_id, destination.name, todo, guard=self._lock.confirm)
        last: list[ChangeResult] = []
        for round_number in range(1, ROUNDS + 1):
            last = []
            for result in self._bisect(destination, kind, todo, tally):
                if result.outcome is Outcome.APPLIED:
                    outcomes.append(RecordOutcome(result.change, Status.APPLIED, result.reason, round_number))
                elif result.outcome is Outcome.PERMANENT:
                    outcomes.append(
                        RecordOutcome(result.change, Status.FAILED_PERMANENT, result.reason, round_number)
                    )
                else:
                    last.append(result)
            if not last:
                break
            todo = [result.change for result in last]
        outcomes.extend(RecordOutcome(r.change, Status.FAILED_RETRYABLE, r.reason, ROUNDS) for r in last)
        return outcomes

    def _bisect(
        self, destination: Destination, kind: ChangeKind, batch: list[Change], tally: DestinationTally
    ) -> list[ChangeResult]:
        result = destination.apply(kind, batch)
        tally.requests += result.requests
        if result.batch_error is not None:
            if len(batch) == 1:
                return [ChangeResult(batch[0], Outcome.PERMANENT, result.batch_error)]
            middle = len(batch) // 2
            return self._bisect(destination, kind, batch[:middle], tally) + self._bisect(
                destination, kind, batch[middle:], tally
            )
        answered = {r.change: r for r in result.results}
        return [
            answered.get(change) or ChangeResult(change, Outcome.RETRYABLE, NO_ANSWER) for change in batch
        ]
