"""An in-memory destination that behaves like a vendor: it keeps contacts, may hold tags
that are not ours, rejects records, refuses whole batches, flakes, goes down, or dies
mid-run (a simulated process kill) before or after applying a batch.

Tests assert its end state ("contact X holds tags {a, b}; Y is suppressed"), not call order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sync.changes import Change, ChangeKind
from sync.ports import BatchResult, Capabilities, ChangeResult, DestinationError, Outcome


class SimulatedCrash(Exception):
    """The process died here. Nothing after this point of the run happens."""


@dataclass
class Contact:
    tags: set[str] = field(default_factory=set)
    suppressed: bool = False


@dataclass
class Faults:
    crash_before_batch: int | None = None  # die when asked for batch n (0-based), before applying it
    crash_after_batch: int | None = None  # apply batch n, then die before answering
    reject: set[str] = field(default_factory=set)  # addresses refused per record (permanent)
    poison: set[str] = field(default_factory=set)  # addresses that make the whole batch refused
    flaky: dict[str, int] = field(default_factory=dict)  # address -> times to answer "retry later" first
    down: bool = False  # every call fails: the destination is unusable
    check_fails: bool = False


class MemoryDestination:
    """:class:`sync.ports.Destination` keeping its state in memory."""

    def __init__(
        self,
        name: str,
        batch_size: int = 50,
        *,
        can_unsuppress: bool = True,
        faults: Faults | None = None,
        at_most_once: frozenset[ChangeKind] = frozenset(),
    ) -> None:
        self.name = name
        self.contacts: dict[str, Contact] = {}
        self.faults = faults or Faults()
        self.batches = 0  # apply calls answered or crashed in
        self.applied: list[tuple[ChangeKind, str, str | None]] = []  # every change applied, in order
        self._capabilities = Capabilities(
            max_batch={kind: batch_size for kind in ChangeKind},
            requests_per_second=10,
            can_unsuppress=can_unsuppress,
            at_most_once=at_most_once,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def check(self) -> None:
        if self.faults.check_fails:
            raise DestinationError(f"{self.name}: the API key was refused (401)")

    def apply(self, kind: ChangeKind, batch: Sequence[Change]) -> BatchResult:
        assert len(batch) <= self._capabilities.max_batch[kind], "batch larger than the destination allows"
        number = self.batches
        self.batches += 1
        if self.faults.down:
            raise DestinationError(f"{self.name}: 503 Service Unavailable after retries")
        if self.faults.crash_before_batch == number:
            raise SimulatedCrash(f"killed before batch {number}")
        if any(change.address in self.faults.poison for change in batch):
            return BatchResult(batch_error="400 Bad Request: payload contains an invalid profile")
        results = []
        for change in batch:
            if change.address in self.faults.reject:
                results.append(ChangeResult(change, Outcome.PERMANENT, "422 invalid email address"))
                continue
            if self.faults.flaky.get(change.address, 0) > 0:
                self.faults.flaky[change.address] -= 1
                results.append(ChangeResult(change, Outcome.RETRYABLE, "429 Too Many Requests"))
                continue
            self._apply(change)
            results.append(ChangeResult(change, Outcome.APPLIED))
        if self.faults.crash_after_batch == number:
            raise SimulatedCrash(f"killed after the destination applied batch {number}")
        return BatchResult(results)

    def _apply(self, change: Change) -> None:
        contact = self.contacts.setdefault(change.address, Contact())
        if change.kind is ChangeKind.ADD_TAG:
            assert change.tag is not None
            contact.tags.add(change.tag)
        elif change.kind is ChangeKind.REMOVE_TAG:
            assert change.tag is not None
            contact.tags.discard(change.tag)
        elif change.kind is ChangeKind.SUPPRESS:
            contact.suppressed = True
        else:
            contact.suppressed = False
        self.applied.append((change.kind, change.address, change.tag))

    # --- what tests look at --------------------------------------------------------------
    def tagged(self) -> dict[str, frozenset[str]]:
        """Address -> tags, for contacts holding any."""
        return {address: frozenset(c.tags) for address, c in self.contacts.items() if c.tags}

    def suppressed(self) -> set[str]:
        return {address for address, c in self.contacts.items() if c.suppressed}
