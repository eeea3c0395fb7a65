"""The resolver's fast paths decide exactly what the plain code did.

The resolver is compared with :mod:`tests.reference_resolver` (the code before the fast
paths) over generated configs and rows, and each shortcut is checked against what it
replaces: the suppression index's bitmap, the holdout hash, the ``Assignment`` factory.
"""

from __future__ import annotations

import pickle
import random
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personas.config import ResolverSettings
from personas.eligibility import holdout_test, in_holdout
from personas.identity import EmailNormaliser, PhoneNormaliser
from personas.model import CHANNELS, Assignment, ChannelStatus
from personas.query import build_resolver_query
from personas.resolve import IdentifierIndex, ResolveError, Resolver, _make_assignment
from sync.config import AppConfig
from tests.reference_resolver import ReferenceResolver
from tests.test_resolver_properties import MemoryIdentityCache

CLOCK = datetime(2026, 11, 22, tzinfo=timezone.utc)
KINDS = {
    "id": "number",
    "email": "text",
    "phone": "text",
    "country": "text",
    "ok_email": "text",
    "n": "number",
}
PERSONA_NAMES = ("p0", "p1", "p2", "p3", "p4")


# --- the whole resolver against the reference ----------------------------------------------

channel_sets = st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3, unique=True)
persona_specs = st.lists(
    st.tuples(st.booleans(), st.sampled_from([0, 0.001, 0.5, 10, 50]), channel_sets),
    min_size=1,
    max_size=5,
)
suppression_specs = st.lists(
    st.tuples(st.sampled_from(["key", "email", "phone"]), channel_sets), min_size=0, max_size=4
)
granted_lists = st.lists(
    st.sampled_from([True, 1, "yes", "true", "opted_in", "1.5", 0, "1"]), min_size=1, max_size=4, unique=True
)
configs = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(["first_match", "all_matches"]),
        "personas": persona_specs,
        "suppressions": suppression_specs,
        "email_consent": st.one_of(st.none(), granted_lists),
        "sms_consent": st.one_of(st.none(), granted_lists),
        "email": st.booleans(),
        "phone": st.booleans(),
        "on_duplicate_email": st.sampled_from(["first_by_key", "error"]),
    }
)


def build_config(spec: dict[str, Any]) -> ResolverSettings:
    consent = {}
    for channel in ("email", "sms"):
        granted = spec[f"{channel}_consent"]
        if granted is not None:
            consent[channel] = {"column": "ok_email", "granted_values": granted}
    source: dict[str, Any] = {"table": "people", "key": "id", "phone_country": "country"}
    source["on_duplicate_email"] = spec["on_duplicate_email"]
    if spec["email"]:
        source["email"] = "email"
    if spec["phone"]:
        source["phone"] = "phone"
    personas = []
    for i, (negative, holdout, channels) in enumerate(spec["personas"]):
        persona: dict[str, Any] = {
            "name": PERSONA_NAMES[i],
            "channels": channels,
            "rules": {"column": "n", "op": ">", "value": i},
        }
        if negative:
            persona["negative"] = True
        else:
            persona["holdout_percent"] = holdout
        personas.append(persona)
    suppressions = [
        {"table": f"s{i}", "match_on": match_on, "column": "v", "channels": channels, "reason": f"reason_{i}"}
        for i, (match_on, channels) in enumerate(spec["suppressions"])
        if match_on == "key"
        or (match_on == "email" and spec["email"])
        or (match_on == "phone" and spec["phone"])
    ]
    config = AppConfig.model_validate(
        {
            "warehouse": {"url": "sqlite:///unused.db"},
            "source": source,
            "consent": consent,
            "suppressions": suppressions,
            "personas": personas,
            "assignment": {"mode": spec["mode"], "holdout_salt": "pepper"},
        }
    )
    return config.resolver_settings()


EMAILS = [
    None, "", "  ", "a@example.com", " A@Example.COM ", "a.b@example.com", "a..b@example.com", "bad@",
    "@example.com", "x@@example.com", "ü@example.com", "a@xn--80ak6aa92e.com", "\"q\"@example.com",
    "a@example.com\t", "l" * 65 + "@example.com", "K@example.com", "u1@example.com", 5,
]  # fmt: skip
PHONES = [None, "", " ", "+1 415 555 0100", "+14155550100", "415 555 0100", "12", "+١٤١٥٥٥٥٠١٠٠", 4155550100]
COUNTRIES = [None, "US", "gb", " de ", "XX", 7]
CONSENTS = [None, True, False, 1, 0, 1.0, 1.5, "yes", " YES ", "no", "opted_in", "1", b"1", Decimal("1"), 2]
FLAGS = [True, False, 1, 0, None]
LISTED_EMAILS = ["a@example.com", "u1@example.com", "k@example.com"]
LISTED_PHONES = ["+14155550100", "#12", "#4155550100"]

facts = st.tuples(
    st.one_of(st.integers(0, 60), st.sampled_from(["", "a", "b ", "10", None])),  # key
    st.sampled_from(EMAILS),
    st.sampled_from(PHONES),
    st.sampled_from(COUNTRIES),
    st.sampled_from(CONSENTS),
    st.sampled_from(CONSENTS),
    st.lists(st.sampled_from(FLAGS), min_size=12, max_size=12),  # persona, key suppression, duplicate
)


def lay_out(settings_: ResolverSettings, generated: list[tuple[Any, ...]], shuffle: random.Random | None):
    query = build_resolver_query(settings_, KINDS, CLOCK)
    width = 1 + max(
        [3, *query.consent_index.values(), *query.persona_index, *query.key_suppression_index.values()]
        + ([query.duplicate_email_index] if query.duplicate_email_index is not None else [])
    )
    rows = []
    for key, email, phone, country, ok_email, ok_sms, flags in generated:
        row: list[object] = [None] * width
        row[0] = None if key is None else str(key)
        row[1], row[2], row[3] = email, phone, country
        if "email" in query.consent_index:
            row[query.consent_index["email"]] = ok_email
        if "sms" in query.consent_index:
            row[query.consent_index["sms"]] = ok_sms
        flag_indexes = [*query.persona_index, *query.key_suppression_index.values()]
        if query.duplicate_email_index is not None:
            flag_indexes.append(query.duplicate_email_index)
        for index, flag in zip(flag_indexes, flags, strict=False):
            row[index] = flag
        rows.append((*row, "an extra column another caller adds"))
    rows.sort(key=lambda r: (r[0] is not None, r[0] or ""))
    if shuffle is not None:
        shuffle.shuffle(rows)
    return query, rows


def run(resolver_class: type, settings_: ResolverSettings, rows: list[tuple[object, ...]], query: Any):
    listed_sources = {"email": [], "phone": []}  # type: dict[str, list[tuple[str, int]]]
    for i, suppression in enumerate(settings_.suppressions):
        if suppression.match_on == "email":
            listed_sources["email"] += [(e, 1 << i) for e in LISTED_EMAILS]
        elif suppression.match_on == "phone":
            listed_sources["phone"] += [(p, 1 << i) for p in LISTED_PHONES]
    listed = {kind: IdentifierIndex(entries) for kind, entries in listed_sources.items() if entries}
    phones = PhoneNormaliser("US", MemoryIdentityCache())
    resolver = resolver_class(settings_, query, phones, listed, EmailNormaliser(), frozenset({"7", "a"}))
    out: list[Assignment] = []
    try:
        for assignment in resolver.assignments(iter(rows)):
            out.append(assignment)
    except ResolveError as exc:
        return out, resolver.counts, str(exc)
    return out, resolver.counts, None


@settings(max_examples=300, deadline=None)
@given(configs, st.lists(facts, max_size=30), st.one_of(st.none(), st.randoms(use_true_random=False)))
def test_resolver_decides_exactly_as_the_reference(
    spec: dict[str, Any], generated: list[tuple[Any, ...]], shuffle: random.Random | None
) -> None:
    settings_ = build_config(spec)
    query, rows = lay_out(settings_, generated, shuffle)
    assert run(Resolver, settings_, rows, query) == run(ReferenceResolver, settings_, rows, query)


def test_resolver_agrees_with_the_reference_over_chunks_and_repeated_patterns() -> None:
    rnd = random.Random(5)
    spec = {
        "mode": "all_matches",
        "personas": [
            (False, 10, ["email", "sms"]),
            (True, 0, ["sms"]),
            (False, 50, ["crm"]),
            (False, 0, ["email"]),
        ],
        "suppressions": [("key", ["email"]), ("email", ["email"]), ("phone", ["sms"])],
        "email_consent": [True, "yes"],
        "sms_consent": ["opted_in"],
        "email": True,
        "phone": True,
        "on_duplicate_email": "first_by_key",
    }
    settings_ = build_config(spec)
    generated = [
        (
            k,
            rnd.choice(EMAILS),
            rnd.choice(PHONES),
            rnd.choice(COUNTRIES),
            rnd.choice(CONSENTS),
            rnd.choice(CONSENTS),
            [rnd.choice(FLAGS) for _ in range(12)],
        )
        for k in range(12_000)  # more than two chunks
    ]
    query, rows = lay_out(settings_, generated, None)
    assert run(Resolver, settings_, rows, query) == run(ReferenceResolver, settings_, rows, query)


def test_equal_consent_values_of_different_types_are_told_apart() -> None:
    # True == 1 == 1.0 and 1.5 == Decimal("1.50"), yet their tokens differ: "true", "1", "1.5", "1.50".
    spec = {
        "mode": "first_match",
        "personas": [(False, 0, ["email"])],
        "suppressions": [],
        "email_consent": ["1", "1.5"],
        "sms_consent": None,
        "email": True,
        "phone": False,
        "on_duplicate_email": "first_by_key",
    }
    settings_ = build_config(spec)
    values = [True, 1, 1.0, Decimal("1.50"), Decimal("1.5"), True, 1.5, Decimal("1.50"), 1]
    generated = [
        (i, "a@example.com", None, None, v, None, [True] + [False] * 11) for i, v in enumerate(values)
    ]
    query, rows = lay_out(settings_, generated, None)
    resolved, _, problem = run(Resolver, settings_, rows, query)
    assert problem is None
    eligible = {a.key: a.channels["email"].eligible for a in resolved}
    assert [eligible[str(i)] for i in range(len(values))] == [
        False,
        True,
        True,
        False,
        True,
        False,
        True,
        False,
        True,
    ]


# --- each shortcut against what it replaces --------------------------------------------------


def test_identifier_index_answers_as_a_plain_mapping() -> None:
    rnd = random.Random(3)
    for size in (0, 1, 5, 300, 5_000):
        listed = {f"id{rnd.randrange(10**9)}": 1 << rnd.randrange(4) for _ in range(size)}
        index = IdentifierIndex(listed.items())
        for value, mask in listed.items():
            assert index.mask(value) == mask
        for _ in range(2_000):
            value = f"id{rnd.randrange(10**9)}"
            assert index.mask(value) == listed.get(value, 0)


def test_holdout_test_is_in_holdout() -> None:
    keys = [str(k) for k in range(3_000)] + ["", "é", "a\x1fb", "\U0001f600"]
    for percent in (0, 0.001, 0.005, 0.01, 1, 10, 33.3, 50, 100):
        for persona in ("champion", "über"):
            test = holdout_test("salt", persona, percent)
            expected = [in_holdout("salt", persona, key, percent) for key in keys]
            assert [False if test is None else test(key) for key in keys] == expected
            assert (test is None) == (not any(expected) and round(percent * 100) <= 0)


def test_assignment_factory_makes_what_the_constructor_makes() -> None:
    channels = {
        "email": ChannelStatus(True),
        "sms": ChannelStatus(False, ("no_consent",)),
        "crm": ChannelStatus(True),
    }
    tags = {"email": ("a",), "sms": (), "crm": ("a",)}
    args = ("k1", "a@example.com", None, ("a",), ("b",), (), channels, tags)
    made = _make_assignment(*args)
    assert type(made) is Assignment
    assert made == Assignment(*args)
    assert repr(made) == repr(Assignment(*args))
    assert pickle.loads(pickle.dumps(made)) == made
    with pytest.raises(AttributeError):
        made.key = "other"  # type: ignore[misc]  # still frozen
