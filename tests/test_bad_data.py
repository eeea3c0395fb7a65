"""A corpus of bad warehouse data, each run through the real ``personasync sync``.

Every case writes a small SQLite warehouse: two good customers plus the case's rows (one
kind of bad data each), and the suppression tables the config names. It then runs a real
sync into two file destinations (``outbox/email`` and ``outbox/sms``: the CSV files are
exactly what a vendor would have received) and checks what an operator would notice:

- a problem that makes the source unsafe (NULL or duplicate keys, ``on_duplicate_email =
  "error"``) stops the run with exit 2 and one ``problem`` line naming the config file,
  ``source.table``, the count and example keys; no traceback; nothing sent, no ledger row;
- anything else is decided per customer, as the README documents it: the customer is
  tagged at their normalised address, suppressed with the reason, or left out of a channel
  with the identity reason (``invalid_email``, ``missing_phone`` ...) that ``personas
  explain`` shows, while keeping their other channel. The destination files must then hold
  exactly the expected rows, so nobody is sent anything they must not get, and a second run
  plans no change (the odd values round-trip through the state store).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import Result

from tests.conftest import run_cli as run

CONFIG_NAME = "bad-data.toml"
BUYER = "persona:buyer"
MB = 1 << 20

BASE_CONFIG = """\
[warehouse]
url = "sqlite:///@WAREHOUSE@"

[state]
url = "sqlite:///personasync-state.db"

[source]
table = "customers"
key = "customer_id"
email = "email"
phone = "phone"
phone_country = "country"

[consent.email]
column = "email_opt_in"
granted_values = [true, 1, "yes", "true"]

[consent.sms]
column = "sms_opt_in"
granted_values = ["opted_in"]

[[suppressions]]
table = "email_unsubscribes"
match_on = "email"
column = "email"
channels = ["email"]
reason = "unsubscribed"

[[suppressions]]
table = "sms_opt_outs"
match_on = "phone"
column = "phone"
channels = ["sms"]
reason = "sms_stop"

[[suppressions]]
query = "SELECT customer_id FROM do_not_contact"
match_on = "key"
column = "customer_id"
channels = ["email", "sms", "crm"]
reason = "do_not_contact"

[[personas]]
name = "buyer"
description = "Ordered at least once."
rules = { column = "orders_count", op = ">=", value = 1 }

[[destinations]]
type = "file"
name = "email_outbox"
channel = "email"
path = "outbox/email"

[[destinations]]
type = "file"
name = "sms_outbox"
channel = "sms"
path = "outbox/sms"
"""

# Columns without a declared type keep what is inserted (an int stays an int, bytes stay a
# BLOB), as a loosely typed warehouse table would.
SCHEMA = (
    "CREATE TABLE customers (customer_id, email, phone, country, email_opt_in, sms_opt_in, "
    "orders_count INTEGER)",
    "CREATE TABLE email_unsubscribes (email)",
    "CREATE TABLE sms_opt_outs (phone)",
    "CREATE TABLE do_not_contact (customer_id)",
)


@dataclass(frozen=True)
class Row:
    key: object
    email: object = "bad@example.com"
    phone: object = "+14155550199"
    country: object = None
    email_opt_in: object = "yes"
    sms_opt_in: object = "opted_in"
    orders: int = 3

    def values(self) -> tuple[object, ...]:
        return (
            self.key,
            self.email,
            self.phone,
            self.country,
            self.email_opt_in,
            self.sms_opt_in,
            self.orders,
        )


@dataclass(frozen=True)
class Tag:
    """Eligible on the channel and tagged at ``address`` (the normalised email or E.164 phone);
    with no ``tags`` (no persona), eligible but absent from the destination."""

    address: str
    tags: tuple[str, ...] = (BUYER,)


@dataclass(frozen=True)
class Sup:
    """On the channel's suppression list at ``address``, with exactly these reasons."""

    address: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Off:
    """Nothing at all on the channel (no usable identifier); ``explain`` gives ``reason``,
    after the reasons of higher precedence in ``before`` (e.g. ``no_consent``)."""

    reason: str
    before: tuple[str, ...] = ()


Outcome = Tag | Sup | Off
Expect = tuple[str, Outcome, Outcome]  # key as text, email channel, sms channel


@dataclass(frozen=True)
class Case:
    id: str
    rows: tuple[Row, ...]
    expect: tuple[Expect, ...] = ()  # every row's key; empty when the run must stop
    error: tuple[str, ...] = ()  # substrings of the one problem line; set: the run must stop
    unsubscribes: tuple[object, ...] = ()
    sms_opt_outs: tuple[object, ...] = ()
    do_not_contact: tuple[object, ...] = ()
    config: str = ""  # TOML appended to the base config
    replace: tuple[str, str] | None = None  # (old, new) swapped in the base config
    xfail: str | None = None  # why the product does not behave as asserted yet


BAD_EMAIL = "bad@example.com"
BAD_PHONE = "+14155550199"
GOOD = (
    Row("good1", "good1@example.com", "+14155550101"),
    Row("good2", "  Good2@Example.COM ", "(415) 555-0102", email_opt_in=1),
)
GOOD_EXPECT: tuple[Expect, ...] = (
    ("good1", Tag("good1@example.com"), Tag("+14155550101")),
    ("good2", Tag("good2@example.com"), Tag("+14155550102")),
)


def email_case(case_id: str, raw: object, outcome: str, *, xfail: str | None = None) -> Case:
    """One customer whose email is ``raw``: ``outcome`` is the normalised address, or the reason
    the email channel is closed (their SMS is unaffected)."""
    email: Outcome = Off(outcome) if "@" not in outcome else Tag(outcome)
    return Case(case_id, (Row("bad", email=raw),), (("bad", email, Tag(BAD_PHONE)),), xfail=xfail)


def phone_case(case_id: str, raw: object, outcome: str, country: object = None) -> Case:
    """One customer whose phone is ``raw``: ``outcome`` is the E.164 number, or the reason the
    SMS channel is closed (their email is unaffected)."""
    sms: Outcome = Tag(outcome) if outcome.startswith("+") else Off(outcome)
    return Case(case_id, (Row("bad", phone=raw, country=country),), (("bad", Tag(BAD_EMAIL), sms),))


def consent_case(case_id: str, value: object, email_granted: bool, sms_granted: bool = False) -> Case:
    """One customer whose email and SMS consent columns both hold ``value``. Email grants
    true, 1, "yes", "true"; SMS grants "opted_in"; anything else means no consent and a
    suppression on that channel (fail-closed)."""
    email: Outcome = Tag(BAD_EMAIL) if email_granted else Sup(BAD_EMAIL, ("no_consent",))
    sms: Outcome = Tag(BAD_PHONE) if sms_granted else Sup(BAD_PHONE, ("no_consent",))
    return Case(case_id, (Row("bad", email_opt_in=value, sms_opt_in=value),), (("bad", email, sms),))


def many_personas(count: int) -> str:
    """``all_matches`` mode and ``count`` more personas, every one matching customers with 50+
    orders (the good customers have 3)."""
    personas = "".join(
        f'[[personas]]\nname = "p{i:03d}"\nrules = {{ column = "orders_count", op = ">=", value = 50 }}\n'
        for i in range(count)
    )
    return '[assignment]\nmode = "all_matches"\n' + personas


MANY = 150
MANY_TAGS = tuple(sorted([BUYER, *(f"persona:p{i:03d}" for i in range(MANY))]))
NEGATIVE_PERSONA = """
[[personas]]
name = "refunder"
rules = { column = "orders_count", op = ">=", value = 100 }
negative = true
"""

CASES: list[Case] = [
    # --- keys: the run stops before anything is sent -------------------------------------
    Case(
        "key-null",
        (Row(None),),
        error=("1 row(s) have a NULL in the key column 'customer_id'",),
    ),
    Case(
        "key-null-several",
        (Row(None), Row(None, "b2@example.com"), Row(None, "b3@example.com")),
        error=("3 row(s) have a NULL in the key column 'customer_id'",),
    ),
    Case(
        "key-duplicate",
        (Row("good1", "other@example.com", "+14155550198"),),
        error=("1 row(s) repeat a key already seen in column 'customer_id' (e.g. good1)", "one customer"),
    ),
    Case(
        "key-duplicates-count-and-five-examples",
        tuple(Row(f"d{i}", f"d{i}-{copy}@example.com") for i in range(7) for copy in range(2)),
        error=("7 row(s) repeat a key already seen", "(e.g. d0, d1, d2, d3, d4)"),
    ),
    Case(
        "key-int-and-text-are-the-same-key",
        (Row(1, "int@example.com"), Row("1", "text@example.com")),
        error=("1 row(s) repeat a key already seen in column 'customer_id' (e.g. 1)",),
    ),
    Case(
        "key-empty-string-twice",
        (Row("", "e1@example.com"), Row("", "e2@example.com")),
        error=("1 row(s) repeat a key already seen in column 'customer_id' (e.g. '')",),
    ),
    Case(
        "key-null-and-duplicate-both-reported",
        (Row(None), Row("good2", "again@example.com")),
        error=("1 row(s) have a NULL", "1 row(s) repeat a key already seen", "(e.g. good2)"),
    ),
    Case(
        "key-not-utf8-bytes",
        (Row(b"\xff\xfe\x00"),),
        error=("the resolver query failed", "decode"),
    ),
    # --- keys: odd but distinct keys are customers like any other ------------------------
    Case(
        "key-ints-and-texts-sort-as-text",
        (Row(10, "k10@example.com"), Row(9, "k9@example.com"), Row("9a", "k9a@example.com", None)),
        (
            ("10", Tag("k10@example.com"), Tag(BAD_PHONE)),
            ("9", Tag("k9@example.com"), Tag(BAD_PHONE)),
            ("9a", Tag("k9a@example.com"), Off("missing_phone")),
        ),
    ),
    Case(
        "key-with-space-is-another-key-and-loses-the-shared-email",
        (Row(" 7", "seven@example.com", "+14155550107"), Row("7", "Seven@example.com", "+14155550108")),
        (
            (" 7", Tag("seven@example.com"), Tag("+14155550107")),
            ("7", Off("duplicate_email"), Tag("+14155550108")),
        ),
    ),
    Case("key-10k-characters", (Row("k" * 10_000),), (("k" * 10_000, Tag(BAD_EMAIL), Tag(BAD_PHONE)),)),
    Case(
        "key-unicode",
        (Row("ключ-😀"),),
        (("ключ-😀", Tag(BAD_EMAIL), Tag(BAD_PHONE)),),
    ),
    Case(
        "key-with-csv-specials",
        (Row('a,"b";\nc'),),
        (('a,"b";\nc', Tag(BAD_EMAIL), Tag(BAD_PHONE)),),
    ),
    Case(
        "key-do-not-contact-listed-as-float",
        (Row(3),),
        (("3", Sup(BAD_EMAIL, ("do_not_contact",)), Sup(BAD_PHONE, ("do_not_contact",))),),
        do_not_contact=(3.0,),
    ),
    Case(
        "key-do-not-contact-listed-as-int-key-is-text",
        (Row("1"),),
        (("1", Sup(BAD_EMAIL, ("do_not_contact",)), Sup(BAD_PHONE, ("do_not_contact",))),),
        do_not_contact=(1,),
    ),
    Case(
        "key-do-not-contact-listed-as-text-key-is-int",
        (Row(2),),
        (("2", Sup(BAD_EMAIL, ("do_not_contact",)), Sup(BAD_PHONE, ("do_not_contact",))),),
        do_not_contact=("2",),
    ),
    # --- emails that normalise --------------------------------------------------------------
    email_case("email-upper-case", "BAD@EXAMPLE.COM", "bad@example.com"),
    email_case("email-surrounding-spaces", "   bad@example.com  ", "bad@example.com"),
    email_case("email-tab-and-newline", "\tbad@example.com\n", "bad@example.com"),
    email_case("email-no-break-space", "\u00a0bad@example.com\u00a0", "bad@example.com"),
    email_case("email-plus-addressing", "Bad+Promo@Example.com", "bad+promo@example.com"),
    email_case("email-unicode-local-part", "ÜNÏ@example.com", "ünï@example.com"),
    email_case("email-idn-domain", "user@Bücher.example", "user@bücher.example"),
    email_case("email-punycode-domain", "user@xn--bcher-kva.example", "user@bücher.example"),
    # --- emails that are unusable: email closed, SMS kept -----------------------------------
    email_case("email-empty", "", "missing_email"),
    email_case("email-only-whitespace", " \t ", "missing_email"),
    email_case("email-null", None, "missing_email"),
    email_case("email-a-number", 42, "invalid_email"),
    email_case("email-no-at", "bad.example.com", "invalid_email"),
    email_case("email-two-ats", "bad@@example.com", "invalid_email"),
    email_case("email-no-dot-in-domain", "bad@example", "invalid_email"),
    email_case("email-space-inside", "b ad@example.com", "invalid_email"),
    email_case("email-space-in-domain", "bad@exa mple.com", "invalid_email"),
    email_case("email-double-dot-domain", "bad@example..com", "invalid_email"),
    email_case("email-leading-dot", ".bad@example.com", "invalid_email"),
    email_case("email-dot-before-at", "bad.@example.com", "invalid_email"),
    email_case("email-hyphen-starts-domain", "bad@-example.com", "invalid_email"),
    email_case("email-trailing-dot", "bad@example.com.", "invalid_email"),
    email_case("email-comma", "b,ad@example.com", "invalid_email"),
    email_case("email-two-addresses", "bad@example.com,good1@example.com", "invalid_email"),
    email_case("email-display-name", "Bad Person <bad@example.com>", "invalid_email"),
    email_case("email-mailto", "mailto:bad@example.com", "invalid_email"),
    email_case("email-zero-width-space", "bad\u200b@example.com", "invalid_email"),
    email_case("email-nul-character", "bad\x00@example.com", "invalid_email"),
    email_case("email-ip-literal", "bad@[127.0.0.1]", "invalid_email"),
    email_case("email-special-use-domain", "bad@example.invalid", "invalid_email"),
    email_case("email-emoji-domain", "bad@😀.com", "invalid_email"),
    email_case("email-domain-label-64", "bad@" + "d" * 64 + ".com", "invalid_email"),
    email_case(
        "email-over-254-characters", "b" * 60 + "@" + ".".join(["d" * 60] * 4) + ".com", "invalid_email"
    ),
    email_case("email-1mb", "b" * MB + "@example.com", "invalid_email"),
    # --- duplicate emails: the lowest key keeps the address ---------------------------------
    Case(
        "email-duplicate-case-and-spaces",
        (Row("d1", "Same@Example.com", "+14155550111"), Row("d2", " same@example.COM ", "+14155550112")),
        (
            ("d1", Tag("same@example.com"), Tag("+14155550111")),
            ("d2", Off("duplicate_email"), Tag("+14155550112")),
        ),
    ),
    Case(
        "email-duplicate-stops-the-run-in-error-mode",
        (Row("d1", "same@example.com"), Row("d2", "SAME@example.com")),
        error=(
            "1 customer(s) share an email with a lower key (e.g. keys d2)",
            'on_duplicate_email = "error"',
        ),
        replace=('phone_country = "country"\n', 'phone_country = "country"\non_duplicate_email = "error"\n'),
    ),
    Case(
        "email-duplicate-tab-and-other-consent",
        (
            Row("d1", "same@example.com", "+14155550111"),
            Row("d2", "\tsame@example.com", "+14155550112", email_opt_in="no"),
        ),
        (
            ("d1", Tag("same@example.com"), Tag("+14155550111")),
            ("d2", Off("duplicate_email", before=("no_consent",)), Tag("+14155550112")),
        ),
    ),
    Case(
        "email-duplicate-unicode-case",
        (Row("d1", "ünï@example.com", "+14155550111"), Row("d2", "ÜNÏ@example.com", "+14155550112")),
        (
            ("d1", Tag("ünï@example.com"), Tag("+14155550111")),
            ("d2", Off("duplicate_email"), Tag("+14155550112")),
        ),
    ),
    Case(
        "email-duplicate-punycode-and-unicode-domain",
        (
            Row("d1", "user@bücher.example", "+14155550111"),
            Row("d2", "user@xn--bcher-kva.example", "+14155550112", email_opt_in="no"),
        ),
        (
            ("d1", Tag("user@bücher.example"), Tag("+14155550111")),
            ("d2", Off("duplicate_email", before=("no_consent",)), Tag("+14155550112")),
        ),
    ),
    # --- email suppression lists with messy values ------------------------------------------
    Case(
        "email-unsubscribe-list-messy",
        (Row("u1", "Mixed@Example.com", "+14155550111"), Row("u2", "u2@example.com", "+14155550112")),
        (
            ("u1", Sup("mixed@example.com", ("unsubscribed",)), Tag("+14155550111")),
            ("u2", Tag("u2@example.com"), Tag("+14155550112")),
        ),
        unsubscribes=("  MIXED@example.COM\t", None, "", "not an email", 17, "u2@example.org"),
    ),
    # --- phones that normalise (default region US; a country column overrides it) -----------
    phone_case("phone-national", "4155550123", "+14155550123"),
    phone_case("phone-national-with-trunk-1", "1 415 555 0123", "+14155550123"),
    phone_case("phone-e164", "+14155550123", "+14155550123"),
    phone_case("phone-spaces", "415 555 0123", "+14155550123"),
    phone_case("phone-dashes", "415-555-0123", "+14155550123"),
    phone_case("phone-dots", "415.555.0123", "+14155550123"),
    phone_case("phone-parentheses", "(415)555-0123", "+14155550123"),
    phone_case("phone-e164-with-punctuation", "+1 (415) 555-0123", "+14155550123"),
    phone_case("phone-011-international-prefix", "011 44 20 7946 0958", "+442079460958"),
    phone_case("phone-00-prefix-in-gb", "0044 20 7946 0958", "+442079460958", country="GB"),
    phone_case("phone-national-gb-with-country", "020 7946 0958", "+442079460958", country="GB"),
    phone_case("phone-country-lower-case-and-spaces", "06 12 34 56 78", "+33612345678", country=" fr "),
    phone_case("phone-extension", "415-555-0123 ext. 7", "+14155550123"),
    phone_case("phone-vanity-letters", "1-800-FLOWERS", "+18003569377"),
    phone_case("phone-fullwidth-digits", "".join(chr(0xFF10 + int(d)) for d in "4155550123"), "+14155550123"),
    phone_case("phone-stored-as-integer", 4155550123, "+14155550123"),
    phone_case("phone-country-1mb-falls-back-to-region", "4155550123", "+14155550123", country="G" * MB),
    # --- phones that are unusable: SMS closed, email kept -----------------------------------
    phone_case("phone-00-prefix-in-us", "0044 20 7946 0958", "invalid_phone"),
    phone_case("phone-gb-number-read-as-us", "020 7946 0958", "invalid_phone"),
    phone_case("phone-unknown-country-falls-back-to-us", "06 12 34 56 78", "invalid_phone", country="XX"),
    phone_case("phone-letters-only", "call me", "invalid_phone"),
    phone_case("phone-too-short", "123", "invalid_phone"),
    phone_case("phone-too-long", "12345678901234567890", "invalid_phone"),
    phone_case("phone-bad-country-code", "+999 123 456", "invalid_phone"),
    phone_case("phone-e164-one-digit-too-many", "+1 (415) 555-01234", "invalid_phone"),
    phone_case("phone-local-seven-digits", "555-0123", "invalid_phone"),
    phone_case("phone-two-numbers", "+1 415 555 0123 +1 415 555 0124", "invalid_phone"),
    phone_case("phone-stored-as-float", 4155550123.0, "invalid_phone"),
    phone_case("phone-1mb", "4" * MB, "invalid_phone"),
    phone_case("phone-empty", "", "missing_phone"),
    phone_case("phone-only-whitespace", "  \t", "missing_phone"),
    phone_case("phone-null", None, "missing_phone"),
    # --- SMS opt-outs in any format ----------------------------------------------------------
    Case(
        "phone-opt-out-list-messy",
        (Row("s1", "s1@example.com", "+14155550111"), Row("s2", "s2@example.com", "4155550112")),
        (
            ("s1", Tag("s1@example.com"), Sup("+14155550111", ("sms_stop",))),
            ("s2", Tag("s2@example.com"), Sup("+14155550112", ("sms_stop",))),
        ),
        sms_opt_outs=("(415) 555-0111", None, "", "STOP", 4155550112, "+1 415 555 9999"),
    ),
    # --- consent: only the documented granted values grant, anything else suppresses ------
    consent_case("consent-null", None, False),
    consent_case("consent-empty-string", "", False),
    consent_case("consent-yes-upper-case", "YES", True),
    consent_case("consent-yes-padded", " yes ", True),
    consent_case("consent-yes-newline", "Yes\n", True),
    consent_case("consent-zero", 0, False),
    consent_case("consent-one", 1, True),
    consent_case("consent-two", 2, False),
    consent_case("consent-minus-one", -1, False),
    consent_case("consent-text-one", "1", True),
    consent_case("consent-text-zero-one", "01", False),
    consent_case("consent-text-one-point-zero", "1.0", False),
    consent_case("consent-float-one", 1.0, True),
    consent_case("consent-float-one-and-a-half", 1.5, False),
    consent_case("consent-text-true-upper-case", "TRUE", True),
    consent_case("consent-text-false", "false", False),
    consent_case("consent-no", "no", False),
    consent_case("consent-opted-out", "opted_out", False),
    consent_case("consent-opted-in-upper-case", "OPTED_IN", False, True),
    consent_case("consent-opted-in-with-hyphen", "opted-in", False),
    consent_case("consent-y", "y", False),
    consent_case("consent-yes-please", "yes please", False),
    consent_case("consent-fullwidth-yes", "\uff59\uff45\uff53", False),
    consent_case("consent-text-null", "NULL", False),
    consent_case("consent-bytes-yes", b"yes", False),
    consent_case("consent-1mb", "y" * MB, False),
    # --- everything missing, and very many personas ------------------------------------------
    Case(
        "row-with-only-a-key",
        (Row("bare", None, None, None, None, None, 0),),
        (("bare", Off("missing_email", ("no_consent",)), Off("missing_phone", ("no_consent",))),),
    ),
    Case(
        "personas-150-all-matching",
        (Row("many", orders=50), Row("none", "none@example.com", "+14155550198", orders=0)),
        (
            ("many", Tag(BAD_EMAIL, MANY_TAGS), Tag(BAD_PHONE, MANY_TAGS)),
            ("none", Tag("none@example.com", ()), Tag("+14155550198", ())),
        ),
        config=many_personas(MANY),
    ),
    Case(
        "personas-150-and-a-negative-one",
        (Row("many", orders=100),),
        (
            (
                "many",
                Sup(BAD_EMAIL, ("negative_persona:refunder",)),
                Sup(BAD_PHONE, ("negative_persona:refunder",)),
            ),
        ),
        config=many_personas(MANY) + NEGATIVE_PERSONA,
    ),
]


def config_text(case: Case, warehouse: Path) -> str:
    text = BASE_CONFIG.replace("@WAREHOUSE@", str(warehouse))
    if case.replace is not None:
        old, new = case.replace
        assert old in text, case.id
        text = text.replace(old, new, 1)
    return text + case.config


def write_warehouse(path: Path, case: Case) -> None:
    with sqlite3.connect(path) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)", [r.values() for r in (*GOOD, *case.rows)]
        )
        conn.executemany("INSERT INTO email_unsubscribes VALUES (?)", [(v,) for v in case.unsubscribes])
        conn.executemany("INSERT INTO sms_opt_outs VALUES (?)", [(v,) for v in case.sms_opt_outs])
        conn.executemany("INSERT INTO do_not_contact VALUES (?)", [(v,) for v in case.do_not_contact])
    conn.close()


def json_document(result: Result) -> dict[str, object]:
    text = result.stdout
    document = json.loads(text[text.index("{") :])
    assert isinstance(document, dict)
    return document


@dataclass
class Outbox:
    """What the file destinations received: (key, address) -> tags or reasons."""

    members: dict[str, dict[tuple[str, str], tuple[str, ...]]] = field(default_factory=dict)
    suppressed: dict[str, dict[tuple[str, str], tuple[str, ...]]] = field(default_factory=dict)


CHANNELS = {"email": "email", "sms": "phone"}  # channel -> the column addressing a contact there


def read_outbox(folder: Path) -> Outbox:
    outbox = Outbox()
    for channel, column in CHANNELS.items():
        for kind, target, values in (
            ("members", outbox.members, "tags"),
            ("suppressions", outbox.suppressed, "reasons"),
        ):
            target[channel] = {}
            path = folder / "outbox" / channel / f"{kind}.csv"  # the config's destination paths
            if path.exists():
                with path.open(encoding="utf-8", newline="") as handle:
                    for row in csv.DictReader(handle):
                        target[channel][(row["key"], row[column])] = tuple(row[values].split(";"))
    return outbox


def expected_outbox(expect: tuple[Expect, ...]) -> Outbox:
    outbox = Outbox({c: {} for c in CHANNELS}, {c: {} for c in CHANNELS})
    for key, *outcomes in expect:
        for channel, outcome in zip(CHANNELS, outcomes, strict=True):
            if isinstance(outcome, Tag) and outcome.tags:
                outbox.members[channel][(key, outcome.address)] = tuple(sorted(outcome.tags))
            elif isinstance(outcome, Sup):
                outbox.suppressed[channel][(key, outcome.address)] = outcome.reasons
    return outbox


def ledger_rows(state: Path) -> int:
    if not state.exists():
        return 0
    with sqlite3.connect(state) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        count = sum(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("memberships", "record_outcomes", "runs")
            if t in tables
        )
    conn.close()
    return int(count)


def test_case_ids_are_unique_and_every_row_is_expected() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 70
    for case in CASES:
        if case.error:
            assert not case.expect, case.id
            continue
        expected = [key for key, _, _ in case.expect]
        assert sorted(expected) == sorted(str(r.key) for r in case.rows), case.id


def test_good_rows_alone_are_all_sent(tmp_path: Path) -> None:
    """The control: the base world sends the good customers, tagged, and nothing else."""
    case = Case("control", ())
    write_warehouse(tmp_path / "warehouse.db", case)
    config = tmp_path / CONFIG_NAME
    config.write_text(config_text(case, tmp_path / "warehouse.db"), encoding="utf-8")
    result, output = run("sync", "--config", str(config), "--allow-large-changes", "--format", "json", "-q")
    assert result.exit_code == 0, output
    assert read_outbox(tmp_path) == expected_outbox(GOOD_EXPECT)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
        for c in CASES
    ],
)
def test_bad_data(case: Case, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.db"
    write_warehouse(warehouse, case)
    config = tmp_path / CONFIG_NAME
    config.write_text(config_text(case, warehouse), encoding="utf-8")
    sync = ("sync", "--config", str(config), "--format", "json", "--quiet")

    result, output = run(*sync, "--allow-large-changes")

    if case.error:
        assert result.exit_code == 2, output
        problems = [line for line in output.splitlines() if line.startswith("problem")]
        assert len(problems) == 1, output
        assert f"{config}: source.table: " in problems[0], output
        for text in case.error:
            assert text in problems[0], f"expected {text!r} in:\n{output}"
        assert not (tmp_path / "outbox").exists(), "something was sent"
        assert ledger_rows(tmp_path / "personasync-state.db") == 0
        preview, preview_output = run("personas", "preview", "--config", str(config), "--format", "json")
        assert preview.exit_code == 2 and problems[0] in preview_output, preview_output
        return

    assert result.exit_code == 0, output
    assert json_document(result)["source_rows"] == len(GOOD) + len(case.rows)
    assert read_outbox(tmp_path) == expected_outbox(GOOD_EXPECT + case.expect)

    for key, *outcomes in case.expect:
        explained, explain_output = run(
            "personas", "explain", key, "--config", str(config), "--format", "json"
        )
        assert explained.exit_code == 0, explain_output
        channels = json_document(explained)["assignment"]["channels"]  # type: ignore[index]
        for channel, outcome in zip(CHANNELS, outcomes, strict=True):
            reasons = channels[channel]["reasons"]
            if isinstance(outcome, Tag):
                assert reasons == [], (channel, reasons)
                assert channels[channel]["tags"] == [t.removeprefix("persona:") for t in outcome.tags]
            elif isinstance(outcome, Sup):
                assert reasons == list(outcome.reasons), (channel, reasons)
            else:
                assert reasons == [*outcome.before, outcome.reason], (channel, reasons)

    again, again_output = run(*sync, "--dry-run")  # the odd values round-trip through the ledger
    assert again.exit_code == 0, again_output
    planned = {
        plan["destination"]: sum(plan["changes"].values())  # type: ignore[index]
        for plan in json_document(again)["destinations"]  # type: ignore[attr-defined]
    }
    assert planned == {"email_outbox": 0, "sms_outbox": 0}, again_output
