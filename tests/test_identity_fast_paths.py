"""The identifier fast paths answer as the code they replace: the email check without
``rpartition``, the digits typed without a regular expression (one at a time and a chunk at
a time), and the identity cache's digests and raw-tuple lookups."""

from __future__ import annotations

import random
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from personas.identity import EmailNormaliser, email_with_library, phone_digits, phone_digits_many
from sync.state import SqlIdentityCache, cache_digest, create_state_engine, migrate


def test_phone_digits_are_the_digits_typed() -> None:
    reference = re.compile(r"[^0-9]+")
    rnd = random.Random(11)
    alphabet = "0123456789+-() .a²\u0661\u0966\t\x00\x7f"
    for _ in range(20_000):
        raw = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(10)))
        assert phone_digits(raw) == "#" + reference.sub("", raw)


def test_phone_digits_of_a_chunk_are_each_ones_digits() -> None:
    rnd = random.Random(12)
    clean = "0123456789+-() ."
    odd = "a\n\t\x00\x7f²\u0661"
    for _ in range(5_000):
        raws = [
            "".join(rnd.choice(clean + odd if rnd.random() < 0.2 else clean) for _ in range(rnd.randrange(9)))
            for _ in range(rnd.randrange(7))
        ]
        assert phone_digits_many(raws) == [phone_digits(raw) for raw in raws]
    assert phone_digits_many([]) == []
    assert phone_digits_many([""]) == ["#"]
    assert phone_digits_many(["1\n2", "3"]) == ["#12", "#3"]  # a line break of its own


def _email_before(raw: str | None) -> tuple[str | None, str | None]:
    """EmailNormaliser as it was: the local part checked after rpartition("@")."""
    if raw is None:
        return None, "missing_email"
    text = raw.strip().lower()
    if not text:
        return None, "missing_email"
    local, at, domain = text.rpartition("@")
    atext = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
    if (
        at
        and text.isascii()
        and len(text) <= 254
        and len(local) <= 64
        and re.match(rf"{atext}(?:\.{atext})*\Z", local)
        and "xn--" not in domain
    ):
        return (text, None) if email_with_library(f"a@{domain}")[0] is not None else (None, "invalid_email")
    return email_with_library(text)


@settings(max_examples=500, deadline=None)
@given(
    st.text(st.sampled_from(list("aZ09.-_+!#'\"@ \t\nü")), max_size=14),
    st.sampled_from(["example.com", "", "a..b", "xn--80ak6aa92e.com", "x@y.com", "ex ample.com", "é.com"]),
    st.integers(0, 70),
)
def test_email_fast_path_is_the_old_check(local: str, domain: str, padding: int) -> None:
    for raw in (
        f"{local}@{domain}",
        local,
        f"{'a' * padding}{local}@{domain}",
        f"{local}@{domain}{'b' * padding}",
    ):
        assert EmailNormaliser()(raw) == _email_before(raw)


def test_identity_cache_digests_are_the_stored_ones(tmp_path: Path) -> None:
    engine = create_state_engine(make_url(f"sqlite:///{tmp_path / 'state.db'}"))
    migrate(engine)
    digest = SqlIdentityCache._digester("phone:US:x")
    for raw in ["", "12", "+1 415 555 0100", "é", "\x1f"]:
        assert digest(raw) == cache_digest("phone:US:x", raw)
    cache = SqlIdentityCache(engine)
    stored = {f"+1415555{i:04d}": f"+1415555{i:04d}" if i % 3 else "" for i in range(4_500)}  # over 2 batches
    cache.store("phone:US:x", stored)
    assert cache.lookup("phone:US:x", [*stored, "unknown"]) == stored
    assert cache.lookup("phone:GB:x", list(stored)[:10]) == {}
    engine.dispose()
