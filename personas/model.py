"""Core persona types shared by the resolver and the sync engine."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

Channel = Literal["email", "sms", "crm"]
CHANNELS: Final[tuple[Channel, ...]] = ("email", "sms", "crm")

# Persona, suppression-reason and destination names end up as tags in vendor tools,
# as CSV values and in file names, so they are restricted to a portable alphabet.
TAG_SAFE_PATTERN: Final[str] = r"^[a-z][a-z0-9_-]{0,62}$"
_TAG_SAFE = re.compile(TAG_SAFE_PATTERN)


def is_tag_safe(name: str) -> bool:
    """True when ``name`` is lower-case ASCII letters, digits, ``_`` or ``-``, starting with a letter."""
    return bool(_TAG_SAFE.match(name))


# Why a channel is not eligible. Suppression-source reasons are the config's own names
# (``unsubscribed``, ``hard_bounce``...); negative personas give ``negative_persona:<name>``.
NO_CONSENT: Final = "no_consent"
CONSENT_NOT_CONFIGURED: Final = "consent_not_configured"
MISSING_EMAIL: Final = "missing_email"
INVALID_EMAIL: Final = "invalid_email"
DUPLICATE_EMAIL: Final = "duplicate_email"
MISSING_PHONE: Final = "missing_phone"
INVALID_PHONE: Final = "invalid_phone"
NEGATIVE_PERSONA_PREFIX: Final = "negative_persona:"

IDENTITY_REASONS: Final[frozenset[str]] = frozenset(
    {MISSING_EMAIL, INVALID_EMAIL, DUPLICATE_EMAIL, MISSING_PHONE, INVALID_PHONE}
)


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """Whether a customer may receive persona tags on one channel, and every reason why not.

    ``reasons`` is in precedence order: suppression sources, then negative personas, then
    consent, then identifier problems. ``suppressed`` is True when a suppression source or a
    negative persona applies: such a customer belongs on the destination's suppression list.
    """

    eligible: bool
    reasons: tuple[str, ...] = ()
    suppressed: bool = False


@dataclass(frozen=True, slots=True)
class Assignment:
    """What the resolver decided for one customer.

    ``personas`` are the positive personas the customer is tagged with (priority order,
    holdouts excluded); ``holdouts`` the ones they matched but are held out of;
    ``negative`` the negative personas they matched; ``tags`` the personas allowed on each
    channel, empty where the channel is not eligible. ``email`` and ``phone`` are normalised
    (lower-case; E.164) or None when missing or unusable.
    """

    key: str
    email: str | None
    phone: str | None
    personas: tuple[str, ...]
    holdouts: tuple[str, ...]
    negative: tuple[str, ...]
    channels: Mapping[Channel, ChannelStatus]
    tags: Mapping[Channel, tuple[str, ...]]  # personas to tag on each channel; () when not eligible
