"""The diff: desired memberships against what each destination acknowledged. Pure, streaming.

Acknowledged state is kept per (destination, key, address): an email or phone change
leaves the old address's row in place, so its tags are removed from the old contact
while the new contact gets them, each tracked on its own. A suppression we added stays
on the old address (we never lift a suppression we cannot re-check).

Both streams arrive ordered by key (text, binary order); :func:`align` walks them
together, holding one key at a time, so memory does not grow with the customer count.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

from personas.model import Assignment
from sync.membership import NOTHING, Membership


class ChangeKind(str, Enum):
    SUPPRESS = "suppress"
    REMOVE_TAG = "remove_tag"
    UNSUPPRESS = "unsuppress"
    ADD_TAG = "add_tag"


APPLY_ORDER: Final[tuple[ChangeKind, ...]] = (
    ChangeKind.SUPPRESS,  # first, and never held back by anything else
    ChangeKind.REMOVE_TAG,
    ChangeKind.UNSUPPRESS,  # lift before tagging, so the tagged contact is reachable
    ChangeKind.ADD_TAG,
)


@dataclass(frozen=True, slots=True)
class Change:
    """One thing to do to one contact on one destination.

    ``fingerprint`` is the customer's desired membership fingerprint on that destination
    when the change was planned: a permanent failure is remembered against it, so the
    change is retried once the desired state differs (or with ``--retry-failed``).
    """

    kind: ChangeKind
    key: str
    address: str
    email: str | None
    phone: str | None
    fingerprint: str
    tag: str | None = None  # ADD_TAG / REMOVE_TAG
    reasons: tuple[str, ...] = ()  # SUPPRESS


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """What a destination acknowledged holding for one contact (a row of the ledger)."""

    destination: str
    key: str
    address: str
    email: str | None
    phone: str | None
    tags: frozenset[str]
    suppressed: bool
    failed_fingerprint: str | None = None  # desired state whose change failed permanently


@dataclass(frozen=True, slots=True)
class KeyDiff:
    """One customer on one destination: the changes, and what a plan counts about them."""

    changes: tuple[Change, ...]
    held: int  # changes not planned because they failed permanently for this same desired state
    before: frozenset[str]  # our tags the destination holds for this customer
    after: frozenset[str]  # our tags it should hold
    was_suppressed: bool = False  # we had suppressed the customer at the desired address


def diff_key(
    desired: Membership | None,
    acknowledged: Sequence[Acknowledged],
    *,
    can_unsuppress: bool,
    full_resync: bool = False,
    retry_failed: bool = False,
) -> KeyDiff:
    """The changes that take one customer on one destination from ``acknowledged`` to
    ``desired`` (None: the customer is gone from the source).

    Only tags in ``acknowledged`` are ever removed: tags someone else put on the contact
    are not ours to touch. ``full_resync`` re-sends every desired tag and suppression.
    """
    if desired is not None and not full_resync and unchanged(desired, acknowledged):
        return KeyDiff((), 0, desired.tags, desired.tags, desired.suppressed)
    target = desired if desired is not None and desired.address is not None else None
    wanted_fingerprint = desired.fingerprint if desired is not None else NOTHING
    changes: list[Change] = []
    held = 0
    current: Acknowledged | None = None
    for row in acknowledged:
        if target is not None and row.address == target.address:
            current = row
            continue
        # The contact moved to another address, or left: our tags come off the old one.
        removals = [
            Change(ChangeKind.REMOVE_TAG, row.key, row.address, row.email, row.phone, wanted_fingerprint, tag)
            for tag in sorted(row.tags)
        ]
        if _held(row, wanted_fingerprint, retry_failed):
            held += len(removals)
        else:
            changes.extend(removals)
    before = frozenset().union(*(row.tags for row in acknowledged))
    if target is None:
        return KeyDiff(tuple(changes), held, before, frozenset())
    address = target.address
    assert address is not None
    has = current.tags if current is not None else frozenset()
    was_suppressed = current is not None and current.suppressed

    def change(kind: ChangeKind, tag: str | None = None, reasons: tuple[str, ...] = ()) -> Change:
        assert target is not None and address is not None
        return Change(kind, target.key, address, target.email, target.phone, wanted_fingerprint, tag, reasons)

    own: list[Change] = []
    if target.suppressed and (full_resync or not was_suppressed):
        own.append(change(ChangeKind.SUPPRESS, reasons=target.reasons))
    own.extend(change(ChangeKind.REMOVE_TAG, tag) for tag in sorted(has - target.tags))
    if was_suppressed and not target.suppressed and can_unsuppress:
        own.append(change(ChangeKind.UNSUPPRESS))
    to_add = target.tags if full_resync else target.tags - has
    own.extend(change(ChangeKind.ADD_TAG, tag) for tag in sorted(to_add))
    if current is not None and _held(current, wanted_fingerprint, retry_failed):
        held += len(own)
    else:
        changes.extend(own)
    return KeyDiff(tuple(changes), held, before, target.tags, was_suppressed)


def unchanged(desired: Membership, acknowledged: Sequence[Acknowledged]) -> bool:
    """The common case, decided without a diff: the destination holds exactly ``desired``
    (or nothing, and nothing is wanted), with no failure pending."""
    if not acknowledged:
        return not desired.tags and not desired.suppressed
    if len(acknowledged) != 1:
        return False
    row = acknowledged[0]
    return (
        row.address == desired.address
        and row.tags == desired.tags
        and row.suppressed == desired.suppressed
        and row.failed_fingerprint is None
    )


def _held(row: Acknowledged, wanted_fingerprint: str, retry_failed: bool) -> bool:
    return not retry_failed and row.failed_fingerprint == wanted_fingerprint


@dataclass(frozen=True, slots=True)
class Aligned:
    """One key with its assignment (None: gone from the source) and its ledger rows."""

    key: str
    assignment: Assignment | None
    acknowledged: tuple[Acknowledged, ...]


class OrderError(Exception):
    """The ledger stream went backwards: it must be ordered by key in binary order."""


def align(assignments: Iterable[Assignment], acknowledged: Iterable[Acknowledged]) -> Iterator[Aligned]:
    """Walk both key-ordered streams together (a sort-merge full outer join on key).

    ``acknowledged`` holds every destination's rows, grouped by key. The assignment
    stream's order is checked by the resolver; the ledger's is checked here.
    """
    rows = iter(acknowledged)
    pending = next(rows, None)
    last_row_key = ""

    def take(key: str) -> tuple[Acknowledged, ...]:
        """The ledger rows for ``key``; rows for smaller keys must already be consumed."""
        nonlocal pending, last_row_key
        group = []
        while pending is not None and pending.key == key:
            group.append(pending)
            pending = next(rows, None)
        if pending is not None and pending.key < key:
            raise OrderError(f"ledger key {pending.key!r} arrived after {key!r}")
        last_row_key = key if group else last_row_key
        return tuple(group)

    def vanished_before(key: str | None) -> Iterator[Aligned]:
        while pending is not None and (key is None or pending.key < key):
            gone = pending.key
            if gone < last_row_key:
                raise OrderError(f"ledger key {gone!r} arrived after {last_row_key!r}")
            yield Aligned(gone, None, take(gone))

    for assignment in assignments:
        yield from vanished_before(assignment.key)
        yield Aligned(assignment.key, assignment, take(assignment.key))
    yield from vanished_before(None)
