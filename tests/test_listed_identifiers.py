"""The suppression lists collected as hashes answer exactly as the lists themselves would:
the resolver sees every source listing an identifier, and the entries a run records change
exactly when a list gains, loses or re-flags an identifier."""

from __future__ import annotations

import random
from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.listed_identifiers import ListedIdentifiers, sorted_positions
from sync.state import stable_hash

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(max_examples=200)
@given(st.lists(st.one_of(INT64, st.sampled_from([-(2**63), -1, 0, 1, 2**63 - 1])), max_size=400))
def test_sorted_positions_orders_signed_keys_keeping_ties_in_order(keys: list[int]) -> None:
    assert list(sorted_positions(array("q", keys))) == sorted(range(len(keys)), key=keys.__getitem__)


def collect(lists: dict[str, list[tuple[str, int]]]) -> ListedIdentifiers:
    listed = ListedIdentifiers()
    for kind, pairs in lists.items():
        listed.add(kind, pairs)
    return listed


def test_an_identifier_on_several_lists_carries_every_list_s_bit() -> None:
    rnd = random.Random(7)
    emails = [f"person{n}@example.com" for n in range(3_000)]
    phones = [f"+1555{n:07d}" for n in range(2_000)]
    pairs = {
        "email": [(rnd.choice(emails), 1 << rnd.randrange(3)) for _ in range(5_000)],
        "phone": [(rnd.choice(phones), 1 << 3) for _ in range(3_000)],
    }
    expected: dict[str, dict[str, int]] = {"email": {}, "phone": {}}
    for kind, listed in pairs.items():
        for value, bit in listed:
            expected[kind][value] = expected[kind].get(value, 0) | bit
    indexes, entries = collect(pairs).build()
    for kind, values in (("email", emails), ("phone", phones)):
        for value in values:
            assert indexes[kind].mask(value) == expected[kind].get(value, 0), value
    assert indexes["email"].mask("+15550000001") == 0  # an index per kind
    assert len(entries.entries) == len(expected["email"]) + len(expected["phone"])
    assert list(entries.entries) == sorted(set(entries.entries))
    assert sorted(entries.kinds).count(1) == len(expected["phone"])


def test_entries_change_exactly_where_a_list_changed() -> None:
    base = [("a@example.com", 1), ("b@example.com", 1), ("b@example.com", 2), ("c@example.com", 4)]
    _, before = collect({"email": base}).build()
    _, shuffled = collect({"email": [base[2], base[0], base[3], base[1], base[0]]}).build()
    assert (list(shuffled.entries), list(shuffled.values)) == (list(before.entries), list(before.values))

    _, reflagged = collect({"email": [*base, ("c@example.com", 1)]}).build()  # c: on one more list
    _, unlisted = collect({"email": base[:3]}).build()  # c: on no list
    _, as_phone = collect({"email": base[:3], "phone": [("c@example.com", 4)]}).build()
    c = stable_hash("c@example.com")
    for after in (reflagged, unlisted, as_phone):
        gone = set(before.entries) - set(after.entries)
        new = set(after.entries) - set(before.entries)
        assert [before.values[list(before.entries).index(e)] for e in gone] == [c]
        assert [after.values[list(after.entries).index(e)] for e in new] == ([] if after is unlisted else [c])


def test_no_list_gives_no_index_and_no_entries() -> None:
    indexes, entries = ListedIdentifiers().build()
    assert indexes == {} and len(entries.entries) == 0
