"""Interfaces the engine needs from the outside world (a warehouse catalog, destinations);
``connectors/`` implements them.

Declared here so that ``sync/`` and ``personas/`` never import a concrete connector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa

from sync.changes import Change, ChangeKind


class SourceError(Exception):
    """The warehouse could not answer: unreachable, missing table, failing query.

    The message is written for the operator and never carries credentials.
    """


class Catalog(Protocol):
    """What a warehouse can say about the shape of a table or query, without reading rows."""

    def describe_table(self, table: str) -> Mapping[str, str]:
        """Column name -> kind (number, text, date, datetime, boolean, unknown); raises SourceError."""
        ...

    def describe_query(self, query: str) -> Mapping[str, str]:
        """Column name -> kind for the result of ``query``; raises SourceError."""
        ...

    def table_names(self, schema: str | None) -> list[str]:
        """Tables and views in ``schema`` (or the default schema), for did-you-mean hints."""
        ...

    def probe(self, statement: sa.Select[Any]) -> None:
        """Have the warehouse plan ``statement`` without returning rows; raises SourceError."""
        ...


# --- destinations --------------------------------------------------------------------------
@dataclass(frozen=True)
class Capabilities:
    """What a destination can take. The plan batches and estimates from it."""

    max_batch: Mapping[ChangeKind, int]  # changes per request, per kind; a kind absent is unsupported
    requests_per_second: float | None = None  # None: not rate limited
    concurrency: int = 1
    can_unsuppress: bool = False  # may we lift a suppression we added, once its reason cleared?
    # kinds whose repetition has a side effect the person notices (an SMS unsubscribe texts
    # them): sent at most once, an unknown outcome counting as sent (see sync/ledger.py)
    at_most_once: frozenset[ChangeKind] = frozenset()

    def supports(self, kind: ChangeKind) -> bool:
        return kind in self.max_batch


class Outcome(str, Enum):
    APPLIED = "applied"
    RETRYABLE = "retryable"  # e.g. a rate limit or a timeout for this record: try again later
    PERMANENT = "permanent"  # the destination refused this record (e.g. invalid address)


@dataclass(frozen=True, slots=True)
class ChangeResult:
    change: Change
    outcome: Outcome
    reason: str | None = None  # the destination's words, for failures


@dataclass(frozen=True)
class BatchResult:
    """The destination's answer to one batch.

    Either one result per change, or ``batch_error``: the batch was refused as a whole
    (e.g. HTTP 400 for the payload); the engine then splits it to isolate the bad records.
    """

    results: Sequence[ChangeResult] = ()
    batch_error: str | None = None
    requests: int = 1  # requests it took, for run history and benchmarks


class DestinationError(Exception):
    """The destination cannot be used this run: credentials refused, a referenced list or
    property missing, or down after retries. The message is safe to print."""


class Destination(Protocol):
    """A place persona tags and suppressions go. Implementations live in ``connectors/``."""

    name: str

    @property
    def capabilities(self) -> Capabilities: ...

    def check(self) -> None:
        """Verify credentials and every referenced list/property exist, reading only.
        The engine calls it at the start of every run, before any ``apply``.
        Raises :class:`DestinationError`."""
        ...

    def apply(self, kind: ChangeKind, batch: Sequence[Change]) -> BatchResult:
        """Apply a batch of changes of one kind (at most ``capabilities.max_batch[kind]``).

        Raises :class:`DestinationError` when the destination cannot be used at all. For a
        kind in ``capabilities.at_most_once`` it may do so only before sending anything of
        the batch (the engine then plans the batch again); any later failure is reported
        per record."""
        ...


class SetupStatus(str, Enum):
    OK = "ok"  # already in place
    DONE = "done"  # setup just did it
    WOULD_DO = "would do"  # a dry run: setup would do it
    MANUAL = "manual"  # only a person can do it; the step says how


@dataclass(frozen=True)
class SetupStep:
    status: SetupStatus
    what: str  # for the operator: what is in place, was done, or must be done and how


@runtime_checkable
class SetsUp(Protocol):
    """A destination that can create what our config needs in the vendor's account (a
    property and its options), or say exactly what a person must create."""

    def setup(self, dry_run: bool) -> list[SetupStep]:
        """Inspect, then (unless ``dry_run``) create what is missing; one step per
        requirement. Raises :class:`DestinationError` when the account cannot be read."""
        ...


@runtime_checkable
class Finishes(Protocol):
    """A destination with work left once a run's last batch is applied: the file destination
    merges the runs each batch was written to (``connectors/destinations/file.py``).

    What ``apply`` acknowledged is already durable; ``finish`` only makes it visible."""

    def finish(self) -> None:
        """Called once per run after every section was applied, also when records failed or
        the destination had a fatal error. Raises :class:`DestinationError`."""
        ...
