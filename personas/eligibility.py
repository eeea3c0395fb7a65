"""Pure decisions per customer: consent values and holdout membership.

Precedence, strongest first: a suppression source, a negative persona, missing consent,
an unusable identifier. Every reason that applies is kept, in that order, so the preview
and ``explain`` can say all of why a channel is closed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Final

HOLDOUT_BUCKETS: Final = 10_000  # holdout_percent has a resolution of 0.01 %


def consent_token(value: object) -> str | None:
    """A comparable form of a consent value: text trimmed and lower-cased, numbers as digits.

    ``True`` is ``"true"`` and ``1`` is ``"1"``: a column may hold either, so list both in
    ``granted_values`` (the default does).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (float, Decimal)) and value == int(value):
        return str(int(value))
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    return str(value).strip().lower()


def granted_tokens(values: Iterable[object]) -> frozenset[str]:
    return frozenset(token for token in map(consent_token, values) if token is not None)


def holdout_bucket(salt: str, persona: str, key: str) -> int:
    """A bucket in ``[0, 10000)`` from a hash of (salt, persona, key): the same on every machine."""
    digest = hashlib.blake2b(f"{salt}\x1f{persona}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % HOLDOUT_BUCKETS


def in_holdout(salt: str, persona: str, key: str, percent: float) -> bool:
    """Whether ``key`` is in ``persona``'s holdout group of ``percent`` per cent."""
    if percent <= 0:
        return False
    return holdout_bucket(salt, persona, key) < round(percent * HOLDOUT_BUCKETS / 100)


def holdout_test(salt: str, persona: str, percent: float) -> Callable[[str], bool] | None:
    """``in_holdout(salt, persona, key, percent)`` as a function of ``key``, or None when no key
    can be held out. Faster per key: the hash state after the salt and persona is made once."""
    threshold = round(percent * HOLDOUT_BUCKETS / 100) if percent > 0 else 0
    if threshold <= 0:
        return None
    prefix = hashlib.blake2b(f"{salt}\x1f{persona}\x1f".encode(), digest_size=8)
    from_bytes = int.from_bytes

    def held_out(key: str) -> bool:
        digest = prefix.copy()
        digest.update(key.encode())
        return from_bytes(digest.digest(), "big") % HOLDOUT_BUCKETS < threshold

    return held_out
