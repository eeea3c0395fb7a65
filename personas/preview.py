"""Counts over a run's assignments, for ``personasync personas preview`` (pure, streaming).

The JSON form (:meth:`Preview.as_json`) is a stable interface, documented in the README:
keys are only ever added, never renamed or removed, within a major version.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from personas.model import (
    CHANNELS,
    CONSENT_NOT_CONFIGURED,
    IDENTITY_REASONS,
    NO_CONSENT,
    Assignment,
    Channel,
)

PREVIEW_FORMAT_VERSION: Final = 1
_MAX_GROUPS: Final = 10_000  # kinds of assignment counted together by Preview.add_all


@dataclass
class PersonaCounts:
    members: int = 0  # matched and tagged (holdouts excluded)
    holdouts: int = 0
    tagged: Counter[str] = field(default_factory=Counter)  # channel -> customers tagged there


@dataclass
class ChannelCounts:
    eligible: int = 0
    tagged: int = 0  # eligible and carrying at least one persona tag
    not_consented: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)  # reason -> customers
    invalid_identifier: Counter[str] = field(default_factory=Counter)  # reason -> customers


@dataclass
class Preview:
    """What a run would assign, counted per persona and per channel."""

    clock: datetime
    mode: str
    personas: dict[str, PersonaCounts]
    negative_personas: frozenset[str]
    customers: int = 0
    with_persona: int = 0
    example_key: str | None = None  # the first customer with a persona, for `personas explain`
    channels: dict[Channel, ChannelCounts] = field(
        default_factory=lambda: {channel: ChannelCounts() for channel in CHANNELS}
    )

    @classmethod
    def empty(cls, clock: datetime, mode: str, personas: list[tuple[str, bool]]) -> Preview:
        """An empty preview for ``personas`` given as (name, negative) in config order."""
        return cls(
            clock=clock,
            mode=mode,
            personas={name: PersonaCounts() for name, _ in personas},
            negative_personas=frozenset(name for name, negative in personas if negative),
        )

    def add(self, assignment: Assignment) -> None:
        if assignment.personas and self.example_key is None:
            self.example_key = assignment.key
        self._count(assignment, 1)

    def add_all(self, assignments: Iterable[Assignment]) -> None:
        """:meth:`add` each assignment, in order, at a fraction of the cost: assignments alike
        in all that is counted are counted together. The resolver shares one ``channels`` and
        one ``tags`` mapping between customers with the same outcome, so a run has few
        groups; the mappings are told apart by identity (each group holds on to one, so no
        other can take its id), and the groups are counted out whenever there are too many."""
        groups: dict[tuple[object, ...], list[Any]] = {}  # -> [customers, an assignment of them]
        try:
            for assignment in assignments:
                personas = assignment.personas
                if personas and self.example_key is None:
                    self.example_key = assignment.key
                alike = (
                    personas,
                    assignment.holdouts,
                    assignment.negative,
                    id(assignment.channels),
                    id(assignment.tags),
                )
                group = groups.get(alike)
                if group is None:
                    if len(groups) >= _MAX_GROUPS:
                        self._count_groups(groups)
                    groups[alike] = [1, assignment]
                else:
                    group[0] += 1
        finally:
            self._count_groups(groups)

    def _count_groups(self, groups: dict[tuple[object, ...], list[Any]]) -> None:
        for customers, assignment in groups.values():
            self._count(assignment, customers)
        groups.clear()

    def _count(self, assignment: Assignment, customers: int) -> None:
        """Count ``customers`` customers, each assigned like ``assignment``."""
        self.customers += customers
        if assignment.personas:
            self.with_persona += customers
        for name in assignment.personas:
            self.personas[name].members += customers
        for name in assignment.negative:
            self.personas[name].members += customers
        for name in assignment.holdouts:
            self.personas[name].holdouts += customers
        for channel in CHANNELS:
            status, counts = assignment.channels[channel], self.channels[channel]
            if status.eligible:
                counts.eligible += customers
                tags = assignment.tags[channel]
                if tags:
                    counts.tagged += customers
                for name in tags:
                    self.personas[name].tagged[channel] += customers
                continue
            for reason in status.reasons:
                if reason in (NO_CONSENT, CONSENT_NOT_CONFIGURED):
                    counts.not_consented += customers
                elif reason in IDENTITY_REASONS:
                    counts.invalid_identifier[reason] += customers
                else:
                    counts.suppressed[reason] += customers

    def as_json(self) -> dict[str, Any]:
        return {
            "format_version": PREVIEW_FORMAT_VERSION,
            "clock": self.clock.isoformat(),
            "mode": self.mode,
            "customers": self.customers,
            "with_persona": self.with_persona,
            "personas": [
                {
                    "name": name,
                    "negative": name in self.negative_personas,
                    "members": counts.members,
                    "holdouts": counts.holdouts,
                    "tagged": {channel: counts.tagged[channel] for channel in CHANNELS},
                }
                for name, counts in self.personas.items()
            ],
            "channels": {
                channel: {
                    "eligible": counts.eligible,
                    "tagged": counts.tagged,
                    "not_consented": counts.not_consented,
                    "suppressed": dict(sorted(counts.suppressed.items())),
                    "invalid_identifier": dict(sorted(counts.invalid_identifier.items())),
                }
                for channel, counts in self.channels.items()
            },
        }
