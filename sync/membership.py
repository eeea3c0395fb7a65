"""What one destination should hold for one customer: a pure function of the assignment.

A destination addresses a contact by one identifier, chosen by its channel: email for the
email and CRM channels, the E.164 phone for SMS. A customer without a usable identifier
for that channel holds nothing there (we cannot address them, so we cannot tag or
suppress them). A duplicate email belongs to the customer with the lowest key, so the
others are treated as having no email.

Suppression: a customer on a suppression source or in a negative persona for the
channel, or without consent on it, belongs on the destination's suppression list
(fail-closed). Identifier problems never cause a suppression: the address is someone
else's or no one's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from personas.model import (
    CONSENT_NOT_CONFIGURED,
    DUPLICATE_EMAIL,
    IDENTITY_REASONS,
    NO_CONSENT,
    Assignment,
    Channel,
    ChannelStatus,
)

AddressKind = Literal["email", "phone"]
ADDRESS_KIND: Final[Mapping[Channel, AddressKind]] = {"email": "email", "sms": "phone", "crm": "email"}
CONSENT_REASONS: Final = frozenset({NO_CONSENT, CONSENT_NOT_CONFIGURED})
TAG_SEPARATOR: Final = ","  # tags are stored and written joined by this; names may not contain it


@dataclass(frozen=True, slots=True)
class TagNaming:
    """How persona names become tag names on one destination: ``prefix + name``, or an
    explicit name from ``names``."""

    prefix: str = ""
    names: Mapping[str, str] = field(default_factory=dict)

    def tag(self, persona: str) -> str:
        return self.names.get(persona) or self.prefix + persona


@dataclass(frozen=True, slots=True)
class DestinationSpec:
    """What the pure core needs to know about a destination."""

    name: str
    channel: Channel
    naming: TagNaming


@dataclass(frozen=True, slots=True)
class Membership:
    """What destination D should hold for customer ``key`` at ``address``.

    ``address`` is None when the customer has no usable identifier for D's channel; then
    ``tags`` is empty and ``suppressed`` False.
    """

    key: str
    address: str | None
    email: str | None
    phone: str | None
    tags: frozenset[str]
    suppressed: bool
    reasons: tuple[str, ...] = ()  # why suppressed

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.address, self.tags, self.suppressed)


def fingerprint(address: str | None, tags: frozenset[str], suppressed: bool) -> str:
    """A stable digest of what a contact holds: the same on every machine and run."""
    text = "\x1f".join((address or "", TAG_SEPARATOR.join(sorted(tags)), "1" if suppressed else "0"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


NOTHING: Final = fingerprint(None, frozenset(), False)
"""The fingerprint of a customer who should hold nothing (e.g. a key gone from the source)."""


def membership(assignment: Assignment, destination: DestinationSpec) -> Membership:
    """What ``destination`` should hold for the customer of ``assignment``."""
    return MembershipBuilder(destination)(assignment)


class MembershipBuilder:
    """:func:`membership` for one destination, remembering the outcome of each distinct
    (channel status, personas) pair: a run has a few hundred, shared by every customer."""

    def __init__(self, destination: DestinationSpec) -> None:
        self._destination = destination
        self._outcomes: dict[
            tuple[ChannelStatus, tuple[str, ...]], tuple[frozenset[str], tuple[str, ...]]
        ] = {}

    def __call__(self, assignment: Assignment) -> Membership:
        channel = self._destination.channel
        email = assignment.email
        if email is not None and DUPLICATE_EMAIL in assignment.channels["email"].reasons:
            email = None
        address = email if ADDRESS_KIND[channel] == "email" else assignment.phone
        if address is None:
            return Membership(assignment.key, None, email, assignment.phone, frozenset(), False)
        status = assignment.channels[channel]
        personas = assignment.tags[channel]
        outcome = self._outcomes.get((status, personas))
        if outcome is None:
            outcome = self._outcomes[(status, personas)] = self._decide(status, personas)
        tags, reasons = outcome
        return Membership(assignment.key, address, email, assignment.phone, tags, bool(reasons), reasons)

    def _decide(
        self, status: ChannelStatus, personas: tuple[str, ...]
    ) -> tuple[frozenset[str], tuple[str, ...]]:
        """The tags, and the reasons to suppress (none: not suppressed)."""
        reasons = tuple(
            reason for reason in status.reasons if status.suppressed and _is_suppression(reason)
        ) + tuple(reason for reason in status.reasons if reason in CONSENT_REASONS)
        return frozenset(self._destination.naming.tag(p) for p in personas), reasons


def _is_suppression(reason: str) -> bool:
    """Suppression-source reasons and negative personas (everything but consent and identity)."""
    return reason not in CONSENT_REASONS and reason not in IDENTITY_REASONS
