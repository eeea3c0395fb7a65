"""Core persona types shared by the resolver and the sync engine."""

from __future__ import annotations

import re
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
