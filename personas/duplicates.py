"""Duplicate emails the SQL cannot see: customers whose emails differ as stored but are the
same address once normalised (a tab, a non-ASCII capital, a punycode domain).

The resolver query ranks customers by key within groups of ``lower(trim(email))`` and
marks all but the first of each group. Python's normalisation is stronger, so two groups
can hold the same address, each with its own "first": both would address one contact,
perhaps one tagged and the other suppressed. The first of every group whose email might
group differently (see :class:`personas.query.unusual_email`) is compared here with the
first of every group it could match: all but one per address are duplicates too (the one
with the lowest key, compared as text, keeps the email).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from personas.identity import Normalised


def cross_group_duplicates(
    rows: Iterable[tuple[str, object, bool]], normalise: Callable[[str | None], Normalised]
) -> frozenset[str]:
    """Keys to treat as duplicate emails, from (key, raw email, first in its SQL group) rows."""
    firsts: dict[str, list[str]] = {}
    for key, raw, first in rows:
        if not first:
            continue  # the resolver query already marks it
        email, _ = normalise(raw if isinstance(raw, str) or raw is None else str(raw))
        if email is not None:
            firsts.setdefault(email, []).append(key)
    duplicates: set[str] = set()
    for keys in firsts.values():
        if len(keys) > 1:
            duplicates.update(sorted(keys)[1:])
    return frozenset(duplicates)
