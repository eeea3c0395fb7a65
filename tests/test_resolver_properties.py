"""Properties of the pure resolver core, over generated rows (Hypothesis).

Rows are shaped exactly like the resolver query's (its layout comes from the real
``build_resolver_query``), so these run without a database.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from datetime import datetime, timezone

import email_validator
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personas.config import ResolverSettings
from personas.eligibility import in_holdout
from personas.identity import EmailNormaliser, PhoneNormaliser, email_with_library
from personas.query import build_resolver_query
from personas.resolve import IdentifierIndex, ResolveError, Resolver
from sync.config import AppConfig

CLOCK = datetime(2026, 11, 22, tzinfo=timezone.utc)
KINDS = {
    "id": "number",
    "email": "text",
    "phone": "text",
    "ok_email": "boolean",
    "ok_sms": "text",
    "n": "number",
}
CONFIG = AppConfig.model_validate(
    {
        "warehouse": {"url": "sqlite:///unused.db"},
        "source": {"table": "people", "key": "id", "email": "email", "phone": "phone"},
        "consent": {"email": {"column": "ok_email"}, "sms": {"column": "ok_sms"}},
        "suppressions": [
            {"table": "u", "match_on": "email", "column": "e", "channels": ["email"],
             "reason": "unsubscribed"},
            {"table": "d", "match_on": "key", "column": "k", "channels": ["email", "sms", "crm"],
             "reason": "do_not_contact"},
        ],
        "personas": [
            {"name": "blocked", "negative": True, "channels": ["sms"],
             "rules": {"column": "n", "op": "=", "value": 0}},
            {"name": "big", "holdout_percent": 20, "rules": {"column": "n", "op": ">", "value": 5}},
            {"name": "any", "rules": {"column": "n", "op": ">=", "value": 0}},
        ],
    }
)  # fmt: skip
SETTINGS: ResolverSettings = CONFIG.resolver_settings()
QUERY = build_resolver_query(SETTINGS, KINDS, CLOCK)


class MemoryIdentityCache:
    """An in-memory identity cache, as the state store's would answer."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], str] = {}

    def lookup(self, namespace: str, raws: Collection[str]) -> dict[str, str]:
        return {raw: self._values[(namespace, raw)] for raw in raws if (namespace, raw) in self._values}

    def store(self, namespace: str, normalised: Mapping[str, str]) -> None:
        self._values.update(((namespace, raw), value) for raw, value in normalised.items())


UNSUBSCRIBED = {"u1@example.com", "u3@example.com"}

emails = st.sampled_from(
    ["u1@example.com", " U3@Example.com", "ok@example.com", "bad@", None, "x@example.org"]
)
consents = st.sampled_from([True, False, None, 1, "yes", "no"])
rows = st.lists(
    st.tuples(
        st.integers(0, 10_000),  # key
        emails,
        st.sampled_from(["+1 415 555 0100", "12", None]),
        consents,
        consents,
        st.integers(0, 10),  # n: decides the persona flags
        st.booleans(),  # on the do-not-contact list
        st.booleans(),  # another customer with a lower key has the same email
    ),
    max_size=40,
    unique_by=lambda row: row[0],
)


def as_query_rows(generated: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Generated facts laid out as the resolver query returns them, ordered by key."""
    out = []
    for key, email, phone, ok_email, ok_sms, n, dnc, duplicate in sorted(generated, key=lambda r: str(r[0])):
        flags = [n == 0, n > 5, n >= 0]  # the three personas' rules, as the warehouse would answer
        # The key arrives as text, sorted in binary order (personas.query.key_text).
        out.append((str(key), email, phone, None, ok_email, ok_sms, *flags, dnc, duplicate))
    return out


def resolve(query_rows: list[tuple[object, ...]]) -> dict[str, object]:
    phones = PhoneNormaliser("US", MemoryIdentityCache())
    listed = {"email": IdentifierIndex((e, 1 << 0) for e in UNSUBSCRIBED)}
    resolver = Resolver(SETTINGS, QUERY, phones, listed)
    return {a.key: a for a in resolver.assignments(query_rows)}


@settings(max_examples=60, deadline=None)
@given(rows, st.randoms())
def test_rows_out_of_key_order_are_refused_never_resolved_silently(
    generated: list[tuple[object, ...]], rnd: random.Random
) -> None:
    # The sync engine merges this stream with the state store's by key; a stream that
    # goes backwards would make customers look vanished, so the run must stop instead.
    ordered = as_query_rows(generated)
    shuffled = list(ordered)
    rnd.shuffle(shuffled)
    if shuffled == ordered:
        assert resolve(shuffled).keys() == resolve(ordered).keys()
        return
    with pytest.raises(ResolveError, match="out of key order"):
        resolve(shuffled)


@settings(max_examples=60, deadline=None)
@given(rows)
def test_no_channel_without_consent_or_with_a_suppression_is_ever_eligible(
    generated: list[tuple[object, ...]],
) -> None:
    resolved = resolve(as_query_rows(generated))
    for key, email, _phone, ok_email, ok_sms, n, dnc, _dup in generated:
        a = resolved[str(key)]
        granted = {"email": ok_email in (True, 1, "yes"), "sms": ok_sms in (True, 1, "yes")}  # the defaults
        for channel in ("email", "sms"):
            if not granted[channel] or dnc:
                assert not a.channels[channel].eligible and a.tags[channel] == ()
        if isinstance(email, str) and email.strip().lower() in UNSUBSCRIBED:
            assert "unsubscribed" in a.channels["email"].reasons and a.tags["email"] == ()
        if n == 0:  # the negative persona: no persona, and suppressed on SMS
            assert a.personas == () and a.channels["sms"].suppressed


def test_holdout_share_is_within_one_point_and_stable() -> None:
    keys = [str(k) for k in range(100_000)]
    for percent in (5, 10, 20, 50):
        held = [k for k in keys if in_holdout("salt", "champion", k, percent)]
        assert abs(len(held) / len(keys) * 100 - percent) <= 1
        assert held == [k for k in keys if in_holdout("salt", "champion", k, percent)]
    other_salt = {k for k in keys if in_holdout("pepper", "champion", k, 20)}
    same_salt = {k for k in keys if in_holdout("salt", "champion", k, 20)}
    assert other_salt != same_salt  # a new salt reshuffles the groups


local_chars = st.sampled_from(list("abcXYZ019.-_+!#'\" \té@"))
domains = st.sampled_from(
    ["example.com", "x.test", "localhost", "a..b.com", "-a.com", "xn--80ak6aa92e.com", "mail.example.co.uk",
     "example.com.", "1.2.3.4", "ex_ample.com", "EXAMPLE.ORG"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.text(local_chars, min_size=0, max_size=12), domains, st.sampled_from(["", " ", "\t"]))
def test_email_fast_path_agrees_with_the_library(local: str, domain: str, pad: str) -> None:
    raw = f"{pad}{local}@{domain}{pad}"
    text = raw.strip().lower()
    expected = email_with_library(text) if text else (None, "missing_email")
    assert EmailNormaliser()(raw) == expected


def test_email_library_version_is_the_one_the_fast_path_was_checked_against() -> None:
    # The fast path mirrors email-validator 2.x rules; a major upgrade must re-run the property above.
    assert email_validator.__version__.startswith("2.")
