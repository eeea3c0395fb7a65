"""A field holding several values as one ``;``-separated string (a HubSpot multiple-checkbox
property, a Salesforce multi-select picklist): a write replaces the whole string, so adding
or removing our tags means reading it, then writing back everything else unchanged."""

from __future__ import annotations

from collections.abc import Sequence

from sync.changes import ChangeKind


def split_values(text: object) -> list[str]:
    """The values in a stored field (``None`` or ``""``: none)."""
    return [v for v in str(text or "").split(";") if v]


def with_tags(kind: ChangeKind, held: Sequence[str], tags: Sequence[str]) -> list[str]:
    """``held`` with ``tags`` added (at the end, once) or removed; every other value stays
    where it is: we only remove tags we own."""
    if kind is ChangeKind.ADD_TAG:
        return [*held, *(t for t in dict.fromkeys(tags) if t not in held)]
    return [v for v in held if v not in tags]
