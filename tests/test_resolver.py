"""The resolver end to end on SQLite, PostgreSQL and DuckDB: one hand-made customer table
whose every row is a case a marketer cares about (consent, suppressions, identity,
priorities, negative personas, channels, holdouts), resolved through the real query."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from personas.model import Assignment
from sync import app
from sync.cli import cli
from sync.config import AppConfig

CLOCK = datetime(2026, 11, 22, 9, 30, tzinfo=timezone.utc)
RECENT = date(2026, 11, 1)
OLD = date(2024, 1, 1)

METADATA = sa.MetaData()
CUSTOMERS = sa.Table(
    "people",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(100)),
    sa.Column("phone", sa.String(40)),
    sa.Column("country", sa.String(2)),
    sa.Column("email_ok", sa.Boolean),
    sa.Column("sms_ok", sa.String(10)),
    sa.Column("orders", sa.Integer),
    sa.Column("refunds", sa.Integer),
    sa.Column("last_order", sa.Date),
)
UNSUBSCRIBED = sa.Table("unsubscribed", METADATA, sa.Column("address", sa.String(100)))
SMS_STOPS = sa.Table("sms_stops", METADATA, sa.Column("number", sa.String(40)))
DO_NOT_CONTACT = sa.Table("dnc", METADATA, sa.Column("person_id", sa.Integer))

# id, email, phone, country, email_ok, sms_ok, orders, refunds, last_order
ROWS: list[tuple[Any, ...]] = [
    (1, "ann@example.com", "+1 415 555 0101", "US", True, "yes", 6, 0, RECENT),  # champion, all open
    (2, "  BOB@Example.COM ", "(415) 555-0102", "US", None, "yes", 6, 0, RECENT),  # email consent NULL
    (3, "cat@example.com", "020 7946 0103", "GB", True, "no", 2, 0, OLD),  # lapsed; GB national phone
    (4, "Dan@Example.com", "+1 415 555 0104", "US", True, "yes", 6, 0, RECENT),  # unsubscribed (other case)
    (5, "eve@example.com", "415.555.0105", "US", True, "YES", 6, 0, RECENT),  # SMS STOP in E.164
    (6, "fay@example.com", "+1 415 555 0106", "US", True, "yes", 6, 0, RECENT),  # do-not-contact by key
    (7, "gus@example.com", "+1 415 555 0107", "US", True, "yes", 6, 5, RECENT),  # chronic refunder
    (8, "not-an-email", "12", "US", True, "yes", 2, 0, OLD),  # unusable identifiers
    (9, "ann@example.com", "+1 415 555 0109", "US", True, "yes", 1, 0, OLD),  # shares 1's email
    (10, None, None, None, None, None, 0, 0, None),  # nothing at all
]

CONFIG: dict[str, Any] = {
    "source": {
        "table": "people",
        "key": "id",
        "email": "email",
        "phone": "phone",
        "phone_country": "country",
    },
    "consent": {
        "email": {"column": "email_ok", "granted_values": [True, 1]},
        "sms": {"column": "sms_ok", "granted_values": ["yes"]},
    },
    "suppressions": [
        {"table": "unsubscribed", "match_on": "email", "column": "address", "channels": ["email"],
         "reason": "unsubscribed"},
        {"table": "sms_stops", "match_on": "phone", "column": "number", "channels": ["sms"],
         "reason": "sms_stop"},
        {"query": "SELECT person_id FROM dnc", "match_on": "key", "column": "person_id",
         "channels": ["email", "sms", "crm"], "reason": "do_not_contact"},
    ],
    "personas": [
        {"name": "refunder", "negative": True, "channels": ["email", "sms"],
         "rules": {"column": "refunds", "op": ">=", "value": 3}},
        {"name": "champion", "rules": {"all": [
            {"column": "orders", "op": ">=", "value": 5},
            {"column": "last_order", "op": "within_days", "value": 60}]}},
        {"name": "repeat", "channels": ["email", "crm"],
         "rules": {"column": "orders", "op": ">=", "value": 2}},
        {"name": "lapsed", "rules": {"column": "last_order", "op": "older_than_days", "value": 365}},
    ],
}  # fmt: skip


def build_config(warehouse_url: str, tmp_path: Path, **overrides: Any) -> AppConfig:
    data = {**CONFIG, **overrides}
    data["warehouse"] = {"url": warehouse_url}
    data["state"] = {"url": f"sqlite:///{tmp_path / 'state.db'}"}
    return AppConfig.model_validate(data)


@pytest.fixture
def people_url(warehouse_url: str) -> Iterator[str]:
    engine = sa.create_engine(warehouse_url)
    with engine.begin() as conn:
        METADATA.create_all(conn)
        conn.execute(CUSTOMERS.insert(), [dict(zip(CUSTOMERS.c.keys(), row, strict=True)) for row in ROWS])
        conn.execute(UNSUBSCRIBED.insert(), [{"address": " dan@EXAMPLE.com"}])
        conn.execute(SMS_STOPS.insert(), [{"number": "+14155550105"}, {"number": "020-7946-0103"}])
        conn.execute(DO_NOT_CONTACT.insert(), [{"person_id": 6}])
    engine.dispose()
    yield warehouse_url


def resolve(config: AppConfig) -> dict[str, Assignment]:
    with app.open_resolution(config, CLOCK) as run:
        return {a.key: a for a in run.assignments()}


def test_every_case_resolves_as_a_marketer_expects(people_url: str, tmp_path: Path) -> None:
    got = resolve(build_config(people_url, tmp_path))
    # Keys come ordered as text in binary order, the order the sync engine merges in.
    assert list(got) == sorted(str(i) for i in range(1, 11))

    ann = got["1"]
    assert (ann.email, ann.phone) == ("ann@example.com", "+14155550101")
    assert ann.personas == ("champion",)
    assert all(ann.channels[c].eligible for c in ("email", "sms", "crm"))
    assert ann.tags == {"email": ("champion",), "sms": ("champion",), "crm": ("champion",)}

    bob = got["2"]  # email normalised; NULL consent is no consent
    assert bob.email == "bob@example.com"
    assert bob.channels["email"].reasons == ("no_consent",) and not bob.channels["email"].suppressed
    assert bob.tags["email"] == () and bob.tags["sms"] == ("champion",)

    cat = got["3"]  # phone read as British through the country column, and its STOP honoured
    assert cat.phone == "+442079460103"
    assert cat.personas == ("repeat",)  # first match: repeat comes before lapsed
    assert cat.channels["sms"].reasons == ("sms_stop", "no_consent")
    assert cat.tags == {"email": ("repeat",), "sms": (), "crm": ("repeat",)}

    assert got["4"].channels["email"].reasons == ("unsubscribed",)
    assert got["4"].channels["email"].suppressed and got["4"].channels["sms"].eligible

    assert got["5"].channels["sms"].reasons == ("sms_stop",)  # consent "YES" is granted; STOP wins

    fay = got["6"]
    assert all(fay.channels[c].reasons == ("do_not_contact",) for c in ("email", "sms", "crm"))
    assert fay.personas == ("champion",) and fay.tags == {"email": (), "sms": (), "crm": ()}

    gus = got["7"]  # a negative persona overrides champion and suppresses its own channels only
    assert (gus.personas, gus.negative) == ((), ("refunder",))
    assert gus.channels["email"].reasons == ("negative_persona:refunder",)
    assert gus.channels["email"].suppressed and gus.channels["crm"].eligible
    assert gus.tags["crm"] == ()

    odd = got["8"]  # unusable identifiers close their channels only
    assert (odd.email, odd.phone) == (None, None)
    assert odd.channels["email"].reasons == ("invalid_email",)
    assert odd.channels["sms"].reasons == ("invalid_phone",)
    assert odd.personas == ("repeat",) and odd.tags["crm"] == ("repeat",)

    twin = got["9"]  # the higher key loses a shared email
    assert twin.channels["email"].reasons == ("duplicate_email",)
    assert twin.channels["sms"].eligible and twin.personas == ("lapsed",)

    empty = got["10"]
    assert empty.personas == () and empty.channels["email"].reasons == ("no_consent", "missing_email")
    assert empty.channels["sms"].reasons == ("no_consent", "missing_phone")


def test_all_matches_tags_every_matching_persona_on_its_channels(people_url: str, tmp_path: Path) -> None:
    got = resolve(build_config(people_url, tmp_path, assignment={"mode": "all_matches"}))
    assert got["1"].personas == ("champion", "repeat")
    assert got["1"].tags["sms"] == ("champion",)  # repeat is not allowed on SMS
    assert got["3"].personas == ("repeat", "lapsed")
    assert got["7"].personas == ()  # still overridden by the negative persona


def test_holdout_members_are_recorded_and_never_tagged(people_url: str, tmp_path: Path) -> None:
    personas = [dict(p) for p in CONFIG["personas"]]
    personas[2] = {**personas[2], "holdout_percent": 50}
    got = resolve(build_config(people_url, tmp_path, personas=personas))
    repeaters = [a for a in got.values() if "repeat" in a.personas + a.holdouts]
    held = [a for a in repeaters if a.holdouts == ("repeat",)]
    assert held, "with 50 % holdout and this seed at least one repeat customer is held out"
    for a in held:
        assert a.personas == () and all(tags == () for tags in a.tags.values())
    again = resolve(build_config(people_url, tmp_path, personas=personas))
    assert {k: a.holdouts for k, a in again.items()} == {k: a.holdouts for k, a in got.items()}


def test_duplicate_keys_stop_the_run_with_a_count_and_examples(people_url: str, tmp_path: Path) -> None:
    doubled = sa.Table("people2", sa.MetaData(), *(sa.Column(c.name, c.type) for c in CUSTOMERS.c))
    engine = sa.create_engine(people_url)
    with engine.begin() as conn:
        doubled.create(conn)
        rows = [row for row in ROWS if row[0] in (3, 5)] + ROWS
        conn.execute(doubled.insert(), [dict(zip(doubled.c.keys(), row, strict=True)) for row in rows])
    engine.dispose()
    config = build_config(people_url, tmp_path, source={**CONFIG["source"], "table": "people2"})
    with pytest.raises(app.ResolveProblem) as caught:
        resolve(config)
    assert caught.value.key == "source.table"
    assert "2 row(s) repeat a key" in caught.value.message and "3, 5" in caught.value.message


def test_duplicate_emails_can_stop_the_run(people_url: str, tmp_path: Path) -> None:
    source = {**CONFIG["source"], "on_duplicate_email": "error"}
    with pytest.raises(app.ResolveProblem) as caught:
        resolve(build_config(people_url, tmp_path, source=source))
    assert "1 customer(s) share an email" in caught.value.message and "keys 9" in caught.value.message


def test_a_source_query_works_like_a_table(people_url: str, tmp_path: Path) -> None:
    source = {**CONFIG["source"], "table": None, "query": "SELECT * FROM people WHERE id <= 4"}
    got = resolve(build_config(people_url, tmp_path, source=source))
    assert list(got) == ["1", "2", "3", "4"]
    assert got["3"].personas == ("repeat",)


def test_preview_counts_match_the_assignments(people_url: str, tmp_path: Path) -> None:
    config = build_config(people_url, tmp_path)
    summary = app.preview(config, CLOCK).as_json()
    assert summary["customers"] == 10
    by_name = {p["name"]: p for p in summary["personas"]}
    assert by_name["champion"]["members"] == 5  # 1, 2, 4, 5, 6 (7 matches too, but is a refunder)
    assert by_name["champion"]["tagged"] == {"email": 2, "sms": 3, "crm": 4}  # 1, 5 | 1, 2, 4 | 1, 2, 4, 5
    assert by_name["refunder"] == {
        "name": "refunder", "negative": True, "members": 1, "holdouts": 0,
        "tagged": {"email": 0, "sms": 0, "crm": 0},
    }  # fmt: skip
    assert summary["channels"]["email"]["suppressed"] == {
        "do_not_contact": 1,
        "negative_persona:refunder": 1,
        "unsubscribed": 1,
    }
    assert summary["channels"]["email"]["invalid_identifier"] == {
        "duplicate_email": 1,
        "invalid_email": 1,
        "missing_email": 1,
    }


def test_explain_shows_clause_values_and_why_others_lost(people_url: str, tmp_path: Path) -> None:
    result = app.explain(build_config(people_url, tmp_path), CLOCK, "3")
    outcomes = {p.name: p.outcome for p in result.personas}
    assert outcomes["repeat"] == "assigned"
    assert outcomes["lapsed"] == "matched, but 'repeat' comes first (first_match)"
    assert outcomes["champion"] == "rules did not match"
    champion = next(p for p in result.personas if p.name == "champion")
    orders, recency = champion.rules.children
    assert (orders.label, orders.matched, orders.values) == ("orders >= 5", False, {"orders": 2})
    assert recency.matched is False
    with pytest.raises(app.ResolveProblem, match="no customer with key '404'"):
        app.explain(build_config(people_url, tmp_path), CLOCK, "404")


def test_phone_library_runs_once_per_distinct_number(people_url: str, tmp_path: Path) -> None:
    config = build_config(people_url, tmp_path)
    with app.open_resolution(config, CLOCK) as run:
        list(run.assignments())
        first = run.phones.library_calls
    with app.open_resolution(config, CLOCK) as run:
        list(run.assignments())
        second = run.phones.library_calls
    assert first >= 9 and second == 0


@pytest.mark.parametrize("command", [["personas", "preview"], ["personas", "explain", "1"]])
def test_an_unreachable_warehouse_is_named_without_its_password(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("psycopg", reason="needs the postgres extra")
    monkeypatch.setenv("PS_TEST_WAREHOUSE_PASSWORD", "hunter2-not-for-logs")
    config = tmp_path / "personasync.toml"
    config.write_text(
        '[warehouse]\nurl = "postgresql+psycopg://analyst:${PS_TEST_WAREHOUSE_PASSWORD}@127.0.0.1:1/nowhere"\n'
        '[source]\ntable = "people"\nkey = "id"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, [*command, "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "warehouse.url" in result.output and "127.0.0.1" in result.output
    assert "hunter2-not-for-logs" not in result.output


@pytest.mark.parametrize("seed", [1, 2])
def test_assignments_do_not_depend_on_the_order_rows_are_stored_in(
    people_url: str, tmp_path: Path, seed: int
) -> None:
    # A heap table without a key keeps rows in insertion order: shuffled, the warehouse
    # must still hand them over sorted, and every customer must come out the same.
    heap = sa.Table("people_heap", sa.MetaData(), *(sa.Column(c.name, c.type) for c in CUSTOMERS.c))
    rows = [dict(zip(CUSTOMERS.c.keys(), row, strict=True)) for row in ROWS]
    random.Random(seed).shuffle(rows)
    engine = sa.create_engine(people_url)
    with engine.begin() as conn:
        heap.create(conn)
        conn.execute(heap.insert(), rows)
    engine.dispose()
    expected = resolve(build_config(people_url, tmp_path))
    shuffled = resolve(
        build_config(people_url, tmp_path, source={**CONFIG["source"], "table": "people_heap"})
    )
    assert list(shuffled) == list(expected)
    assert shuffled == expected


def test_emails_equal_only_once_normalised_are_duplicates_on_every_warehouse(
    people_url: str, tmp_path: Path
) -> None:
    """The query groups emails by lower(trim()); a tab, a non-ASCII capital or a punycode
    domain escape that grouping, and the second customer must still not share the contact."""
    engine = sa.create_engine(people_url)
    extra = [
        (21, "\tann@example.com", None, "US", True, None, 6, 0, RECENT),  # same as 1, after a tab
        (22, "zoë@example.com", None, "US", True, None, 6, 0, RECENT),
        (23, "ZOË@example.com", None, "US", True, None, 6, 0, RECENT),  # same as 22, in capitals
        (24, "user@xn--bcher-kva.example", None, "US", True, None, 6, 0, RECENT),
        (25, "user@bücher.example", None, "US", True, None, 6, 0, RECENT),  # same as 24, in Unicode
    ]
    with engine.begin() as conn:
        conn.execute(CUSTOMERS.insert(), [dict(zip(CUSTOMERS.c.keys(), row, strict=True)) for row in extra])
    engine.dispose()
    assignments = resolve(build_config(people_url, tmp_path))
    shared = {key: assignments[key].channels["email"].reasons for key in ("1", "21", "22", "23", "24", "25")}
    assert [k for k, reasons in shared.items() if "duplicate_email" in reasons] == ["21", "23", "25"], shared
    assert assignments["1"].channels["email"].eligible and assignments["22"].channels["email"].eligible
