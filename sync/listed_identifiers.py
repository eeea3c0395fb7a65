"""The identifiers the suppression lists name (emails and phones), collected as hashes.

A run reads every list matched on email or phone once, before the customers, and needs
it twice: as the resolver's :class:`~personas.resolve.IdentifierIndex` per kind, and as
the :class:`~sync.verified.ListedEntries` compared with the lists recorded by the last
run. Each identifier is hashed as it is read, so the identifiers themselves are never held:
a warehouse of 10M customers lists some 570,000, and kept as dicts of strings while both
were built they were most of every run's peak memory (this step alone peaked at 229 MB at
10M, against 81 MB at 1M). Held as hashes, a listed identifier costs 35 bytes once
built, and about twice that while its sources are merged.

Hashes are sorted in 256 buckets by their top byte, so sorting never holds more than a
bucket's worth of Python objects.

An entry is made from the identifier's stable hash, not its text. Lists recorded by an
earlier version (entries of the text) therefore all look changed to the first run after
the upgrade: it checks the customers on the lists again, once, and sends only what is due.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

from personas.resolve import IdentifierIndex
from sync.state import stable_hash
from sync.verified import KINDS, ListedEntries


class ListedIdentifiers:
    """(identifier, source bit) pairs per kind, added as read; then the index and entries."""

    def __init__(self) -> None:
        # Per kind, one element per pair: the identifier's stable hash, the bit of the source
        # listing it, and its hash() for the resolver's index (this process only).
        self._pairs = {kind: (array("q"), array("Q"), array("q")) for kind in KINDS}

    def add(self, kind: str, pairs: Iterable[tuple[str, int]]) -> None:
        """``pairs``: (normalised identifier, bit of the source listing it)."""
        stable, bits, salted = self._pairs[kind]
        for value, bit in pairs:
            stable.append(stable_hash(value))
            salted.append(hash(value))
            bits.append(bit)

    def build(self) -> tuple[dict[str, IdentifierIndex], ListedEntries]:
        """The resolver's index per kind listed by some source, and the entries to compare
        with the recorded lists. The pairs are dropped as they are used."""
        indexes: dict[str, IdentifierIndex] = {}
        entries, values, codes = array("q"), array("q"), array("b")
        for code, kind in enumerate(KINDS):
            stable, bits, salted = self._pairs.pop(kind)
            stable, masks, salted = _merged(stable, bits, salted)
            if stable:
                hashes, index_masks, _ = _merged(salted, masks)
                indexes[kind] = IdentifierIndex.from_hashes(hashes, index_masks)
            for value_h, mask in zip(stable, masks, strict=True):
                # The identifier's stable hash stands for it: a new entry means a list
                # gained, lost or re-flagged that identifier (see VerifiedKeys.refresh_lists).
                entries.append(stable_hash(f"{kind}\x1f{value_h}\x1f{mask}"))
                values.append(value_h)
                codes.append(code)
        listed = ListedEntries.empty()
        for position in sorted_positions(entries):
            if listed.entries and listed.entries[-1] == entries[position]:
                continue  # two identifiers with one hash: recorded once
            listed.entries.append(entries[position])
            listed.values.append(values[position])
            listed.kinds.append(codes[position])
        return indexes, listed


def sorted_positions(keys: array[int]) -> array[int]:
    """The positions of ``keys`` (signed 64-bit) in ascending key order, stable for ties."""
    buckets = [array("l") for _ in range(256)]
    for position, key in enumerate(keys):
        buckets[(key >> 56) + 128].append(position)
    order = array("l")
    for bucket in buckets:
        order.extend(sorted(bucket, key=keys.__getitem__))
    return order


def _merged(
    keys: array[int], masks: array[int], carried: array[int] | None = None
) -> tuple[array[int], array[int], array[int]]:
    """``keys`` ascending without repeats, each with the masks of its repeats ORed and the
    first of its repeats' ``carried`` value (none without ``carried``). Repeats of a stable
    hash are one identifier listed by several sources; two identifiers sharing a hash()
    look up as one, listed by the sources of both (the safe direction: a customer may look
    suppressed, never the reverse)."""
    out_keys, out_masks, out_carried = array("q"), array("Q"), array("q")
    for position in sorted_positions(keys):
        if out_keys and out_keys[-1] == keys[position]:
            out_masks[-1] |= masks[position]
            continue
        out_keys.append(keys[position])
        out_masks.append(masks[position])
        if carried is not None:
            out_carried.append(carried[position])
    return out_keys, out_masks, out_carried
