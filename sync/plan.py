"""The plan: what a run will do to each destination, counted, estimated and judged. Pure.

:class:`DestinationPlan` counts one destination's diff as it streams past (the changes
themselves go to a spool, see ``sync/spool.py``); :func:`judge` turns the counts into
guardrail verdicts before anything is sent.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from sync.changes import APPLY_ORDER, Change, ChangeKind, KeyDiff
from sync.ports import Capabilities

SAMPLES_PER_KIND: Final = 5
NONE_LABEL: Final = "(none)"


@dataclass(frozen=True)
class Limits:
    """Guardrail limits for one destination, in percent."""

    max_remove_percent: float = 20.0
    max_suppress_percent: float = 20.0


@dataclass(frozen=True)
class Verdict:
    """One guardrail's judgement. ``blocked`` verdicts stop the run before anything is sent."""

    guardrail: str  # max_remove_percent | max_suppress_percent | empty_source
    blocked: bool
    message: str
    percent: float | None = None
    limit: float | None = None


@dataclass
class DestinationPlan:
    """One destination's share of a run, counted while the diff streams."""

    name: str
    channel: str
    capabilities: Capabilities
    limits: Limits
    changes: Counter[ChangeKind] = field(default_factory=Counter)
    contacts: Counter[ChangeKind] = field(default_factory=Counter)  # customers with >= 1 change of a kind
    tag_changes: dict[str, Counter[ChangeKind]] = field(default_factory=dict)  # per tag: adds, removes
    migrations: Counter[tuple[str, str]] = field(default_factory=Counter)  # (from tags, to tags) -> customers
    samples: dict[ChangeKind, list[Change]] = field(default_factory=dict)
    newly_suppressed: int = 0  # customers suppressed by this run who were not before
    held: int = 0  # changes held back: failed permanently for the same desired state
    unsupported: int = 0  # changes of a kind the destination cannot take (not planned)
    tagged_before: int = 0  # customers holding >= 1 of our tags, as acknowledged
    known_before: int = 0  # customers in the ledger (tagged or suppressed by us)
    addressed_after: int = 0  # customers who will hold tags or be suppressed
    tagged_after: int = 0
    verdicts: list[Verdict] = field(default_factory=list)

    def add_unchanged(self, tags: frozenset[str], suppressed: bool, in_ledger: bool) -> None:
        """Count a customer the destination already holds exactly as desired."""
        if tags:
            self.tagged_before += 1
            self.tagged_after += 1
        if in_ledger:
            self.known_before += 1
        if tags or suppressed:
            self.addressed_after += 1

    def add_verified(self, in_ledger: int, tagged: int, addressed: int) -> None:
        """Count customers left in the warehouse as verified in sync (see :mod:`sync.verified`):
        :meth:`add_unchanged` in bulk."""
        self.tagged_before += tagged
        self.tagged_after += tagged
        self.known_before += in_ledger
        self.addressed_after += addressed

    def add(self, diff: KeyDiff, in_ledger: bool, suppressed_after: bool) -> list[Change]:
        """Count one customer's diff; returns the changes to spool."""
        self.held += diff.held
        if diff.before:
            self.tagged_before += 1
        if in_ledger:
            self.known_before += 1
        if diff.after:
            self.tagged_after += 1
        if diff.after or suppressed_after:
            self.addressed_after += 1
        if diff.before != diff.after:
            self.migrations[(_label(diff.before), _label(diff.after))] += 1
        planned = []
        kinds_seen: set[ChangeKind] = set()
        for change in diff.changes:
            if not self.capabilities.supports(change.kind):
                self.unsupported += 1
                continue
            planned.append(change)
            self.changes[change.kind] += 1
            kinds_seen.add(change.kind)
            if change.tag is not None:
                self.tag_changes.setdefault(change.tag, Counter())[change.kind] += 1
            samples = self.samples.setdefault(change.kind, [])
            if len(samples) < SAMPLES_PER_KIND:
                samples.append(change)
        for kind in kinds_seen:
            self.contacts[kind] += 1
        if ChangeKind.SUPPRESS in kinds_seen and not diff.was_suppressed:
            self.newly_suppressed += 1
        return planned

    @property
    def first_sync(self) -> bool:
        return self.known_before == 0

    @property
    def total(self) -> int:
        return sum(self.changes.values())

    def requests(self) -> dict[ChangeKind, int]:
        """Requests per kind: changes / the destination's batch size, rounded up."""
        return {
            kind: math.ceil(self.changes[kind] / self.capabilities.max_batch[kind])
            for kind in APPLY_ORDER
            if self.changes[kind]
        }

    def estimated_seconds(self) -> float | None:
        rate = self.capabilities.requests_per_second
        if rate is None:
            return None
        return sum(self.requests().values()) / (rate * max(1, self.capabilities.concurrency))

    @property
    def blocked(self) -> bool:
        return any(v.blocked for v in self.verdicts)


def _label(tags: frozenset[str]) -> str:
    return "+".join(sorted(tags)) if tags else NONE_LABEL


def judge(plan: DestinationPlan, source_rows: int, allow_large_changes: bool) -> list[Verdict]:
    """The guardrail verdicts for one destination (also stored on ``plan.verdicts``).

    - ``empty_source``: the source returned no rows while the ledger holds contacts.
    - ``max_remove_percent``: customers losing >= 1 of our tags, of those holding our tags.
      A first sync has nothing to remove.
    - ``max_suppress_percent``: customers newly suppressed, of the customers the destination
      holds from us (on a first sync: of those this run addresses), so a broken consent
      column cannot suppress a whole audience unseen.
    ``allow_large_changes`` turns blocks into warnings.
    """
    verdicts = []
    if source_rows == 0 and plan.known_before:
        verdicts.append(
            Verdict(
                "empty_source",
                not allow_large_changes,
                f"the source returned 0 customers but {plan.known_before:,} are synced to "
                f"{plan.name}; refusing to remove everyone",
            )
        )
    removing = plan.contacts[ChangeKind.REMOVE_TAG]
    if plan.tagged_before and removing:
        verdicts.append(_limit("max_remove_percent", "remove tags from", removing, plan.tagged_before, plan))
    suppressing = plan.newly_suppressed  # a --full-resync re-sending known suppressions is not new
    base = max(plan.known_before, plan.addressed_after)
    if suppressing and base:
        verdicts.append(_limit("max_suppress_percent", "suppress", suppressing, base, plan))
    if allow_large_changes:
        verdicts = [
            Verdict(v.guardrail, False, v.message + " (allowed by --allow-large-changes)", v.percent, v.limit)
            if v.blocked
            else v
            for v in verdicts
        ]
    plan.verdicts = verdicts
    return verdicts


def _limit(name: str, verb: str, count: int, base: int, plan: DestinationPlan) -> Verdict:
    limit = getattr(plan.limits, name)
    percent = 100.0 * count / base
    blocked = percent > limit
    over = f", {percent - limit:.1f} points over the limit" if blocked else ""
    message = (
        f"would {verb} {count:,} of {base:,} customers on {plan.name} ({percent:.1f} %; "
        f"{name} = {limit:g}{over})"
    )
    return Verdict(name, blocked, message, round(percent, 2), limit)


def plan_json(plan: DestinationPlan) -> dict[str, Any]:
    """One destination's plan in the documented, stable JSON shape (see the README)."""
    seconds = plan.estimated_seconds()
    return {
        "destination": plan.name,
        "channel": plan.channel,
        "first_sync": plan.first_sync,
        "changes": {kind.value: plan.changes[kind] for kind in APPLY_ORDER},
        "customers": {kind.value: plan.contacts[kind] for kind in APPLY_ORDER},
        "tags": {
            tag: {"add": counts[ChangeKind.ADD_TAG], "remove": counts[ChangeKind.REMOVE_TAG]}
            for tag, counts in sorted(plan.tag_changes.items())
        },
        "migrations": [
            {"from": before, "to": after, "customers": n}
            for (before, after), n in sorted(plan.migrations.items(), key=lambda item: (-item[1], item[0]))
        ],
        "held_permanent_failures": plan.held,
        "unsupported": plan.unsupported,
        "audience": {
            "tagged_before": plan.tagged_before,
            "tagged_after": plan.tagged_after,
            "in_ledger_before": plan.known_before,
        },
        "estimate": {
            "requests": {kind.value: n for kind, n in plan.requests().items()},
            "seconds": None if seconds is None else round(seconds, 1),
        },
        "guardrails": [
            {
                "guardrail": v.guardrail,
                "blocked": v.blocked,
                "message": v.message,
                "percent": v.percent,
                "limit": v.limit,
            }
            for v in plan.verdicts
        ],
        "samples": {kind.value: [change_json(c) for c in plan.samples.get(kind, [])] for kind in APPLY_ORDER},
    }


def change_json(change: Change) -> dict[str, Any]:
    return {
        "key": change.key,
        "address": change.address,
        "tag": change.tag,
        "reasons": list(change.reasons),
    }
