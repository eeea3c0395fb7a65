"""Properties of the pure core: membership, diff, align and plan order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from personas.model import CHANNELS, NO_CONSENT, Assignment, ChannelStatus
from sync.changes import APPLY_ORDER, Acknowledged, Change, ChangeKind, align, diff_key
from sync.membership import DestinationSpec, Membership, TagNaming, membership
from sync.spool import Spool

ADDRESSES = ("a@x.com", "b@x.com", "c@x.com")
OUR_TAGS = ("persona:champion", "persona:loyal", "persona:at_risk")
FOREIGN = frozenset({"vip-by-hand"})

tag_sets = st.frozensets(st.sampled_from(OUR_TAGS))
desired_memberships = st.builds(
    lambda address, tags, suppressed: Membership(
        "k1",
        address,
        address,
        None,
        frozenset() if suppressed or address is None else tags,
        suppressed and address is not None,
        ("no_consent",) if suppressed and address is not None else (),
    ),
    st.sampled_from((*ADDRESSES, None)),
    tag_sets,
    st.booleans(),
)
ledger_rows = st.lists(
    st.builds(
        lambda address, tags, suppressed: Acknowledged("d", "k1", address, address, None, tags, suppressed),
        st.sampled_from(ADDRESSES),
        tag_sets,
        st.booleans(),
    ),
    max_size=3,
    unique_by=lambda row: row.address,
)


def acknowledged_as(want: Membership) -> list[Acknowledged]:
    """The ledger of a destination that holds exactly ``want``."""
    if want.address is None or not (want.tags or want.suppressed):
        return []
    return [Acknowledged("d", want.key, want.address, want.email, None, want.tags, want.suppressed)]


def vendor_state(rows: list[Acknowledged]) -> dict[str, tuple[set[str], bool]]:
    """What the destination holds: our acknowledged tags plus a tag a marketer added by hand."""
    return {row.address: (set(row.tags) | FOREIGN, row.suppressed) for row in rows}


def apply(state: dict[str, tuple[set[str], bool]], changes: tuple[Change, ...]) -> None:
    for change in changes:
        tags, suppressed = state.setdefault(change.address, (set(), False))
        if change.kind is ChangeKind.ADD_TAG:
            tags.add(change.tag or "")
        elif change.kind is ChangeKind.REMOVE_TAG:
            tags.discard(change.tag or "")
        state[change.address] = (
            tags,
            change.kind is ChangeKind.SUPPRESS or (suppressed and change.kind is not ChangeKind.UNSUPPRESS),
        )


@settings(max_examples=200)
@given(desired_memberships)
def test_diff_of_a_state_with_itself_is_empty(want: Membership) -> None:
    diff = diff_key(want, acknowledged_as(want), can_unsuppress=True)
    assert diff.changes == ()


@settings(max_examples=300)
@given(desired_memberships, ledger_rows, st.booleans(), st.booleans())
def test_applying_the_diff_reaches_the_desired_state_touching_only_our_tags(
    want: Membership, rows: list[Acknowledged], can_unsuppress: bool, full_resync: bool
) -> None:
    state = vendor_state(rows)
    apply(state, diff_key(want, rows, can_unsuppress=can_unsuppress, full_resync=full_resync).changes)
    for address, (tags, suppressed) in state.items():
        ours = tags - FOREIGN
        if address == want.address:
            assert ours == want.tags
            previously = any(r.address == address and r.suppressed for r in rows)
            assert suppressed == (want.suppressed or (previously and not can_unsuppress))
        else:
            assert ours == frozenset()  # the old address lost our tags
            # ...but a suppression we added there stays: we cannot re-check that address any more
            assert suppressed == any(r.address == address and r.suppressed for r in rows)
        if any(r.address == address for r in rows):
            assert tags >= FOREIGN  # never remove a tag that is not ours


statuses = st.builds(
    lambda eligible, suppressed: ChannelStatus(
        eligible,
        () if eligible else (("unsubscribed",) if suppressed else (NO_CONSENT,)),
        suppressed and not eligible,
    ),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=200)
@given(st.fixed_dictionaries({c: statuses for c in CHANNELS}), tag_sets, ledger_rows)
def test_no_tag_is_ever_added_on_a_channel_the_customer_is_not_eligible_on(
    channels: dict[str, ChannelStatus], personas: frozenset[str], rows: list[Acknowledged]
) -> None:
    names = tuple(sorted(p.removeprefix("persona:") for p in personas))
    assignment = Assignment(
        key="k1",
        email="a@x.com",
        phone="+14155550100",
        personas=names,
        holdouts=(),
        negative=(),
        channels=channels,  # type: ignore[arg-type]
        tags={c: names if channels[c].eligible else () for c in CHANNELS},  # type: ignore[misc]
    )
    for channel in CHANNELS:
        want = membership(assignment, DestinationSpec("d", channel, TagNaming("persona:")))
        diff = diff_key(want, rows if channel != "sms" else [], can_unsuppress=True, full_resync=True)
        adds = [c for c in diff.changes if c.kind is ChangeKind.ADD_TAG]
        if not channels[channel].eligible:
            assert adds == [] and want.tags == frozenset()
            assert want.suppressed  # no consent or a suppression source: onto the suppression list


@settings(max_examples=100)
@given(
    st.lists(st.sampled_from(list(ChangeKind)), max_size=30),
    st.lists(st.sampled_from(["email_tool", "sms_tool"]), min_size=30, max_size=30),
)
def test_every_plan_applies_suppressions_then_removals_then_lifts_then_additions(
    kinds: list[ChangeKind], destinations: list[str]
) -> None:
    with Spool() as spool:
        for i, (kind, destination) in enumerate(zip(kinds, destinations, strict=False)):
            spool.write(destination, [Change(kind, f"k{i}", "a@x.com", "a@x.com", None, "fp", "t")])
        spool.finish()
        order = [section.kind for section in spool.sections(["email_tool", "sms_tool"])]
    assert order == sorted(order, key=APPLY_ORDER.index)
    assert sum(1 for _ in order) == len({(k, d) for k, d in zip(kinds, destinations, strict=False)})


@settings(max_examples=200)
@given(st.sets(st.integers(0, 60)), st.sets(st.integers(0, 60)))
def test_align_is_a_full_outer_join_on_key_in_one_pass(source: set[int], ledger: set[int]) -> None:
    keys = sorted(f"{k:03d}" for k in source)
    assignments = [
        Assignment(k, None, None, (), (), (), {c: ChannelStatus(False) for c in CHANNELS}, {})  # type: ignore[misc]
        for k in keys
    ]
    rows = [
        Acknowledged(d, f"{k:03d}", "a@x.com", None, None, frozenset(), True)
        for k in sorted(ledger)
        for d in ("d1", "d2")
    ]
    joined = list(align(iter(assignments), iter(rows)))
    assert [a.key for a in joined] == sorted({*keys, *(f"{k:03d}" for k in ledger)})
    for item in joined:
        assert (item.assignment is not None) == (item.key in keys)
        assert len(item.acknowledged) == (2 if int(item.key) in ledger else 0)
