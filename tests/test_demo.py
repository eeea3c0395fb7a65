"""The demo warehouse: deterministic, realistic, deliberately messy, and a working config."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from datetime import date
from pathlib import Path

from typer.testing import CliRunner

from connectors.demo_data import DemoSpec, existing_demo_spec, iter_demo_chunks, write_sqlite_demo
from sync.cli import cli

SPEC = DemoSpec(customers=3000, seed=11, as_of=date(2026, 11, 22))


def _digest(spec: DemoSpec, chunk_size: int) -> str:
    digest = hashlib.sha256()
    for chunk in iter_demo_chunks(spec, chunk_size):
        for name in sorted(chunk):
            digest.update(repr((name, chunk[name])).encode())
    return digest.hexdigest()


def _customer_rows(spec: DemoSpec, chunk_size: int) -> list[tuple[object, ...]]:
    return [row for chunk in iter_demo_chunks(spec, chunk_size) for row in chunk["customers"]]


def test_same_spec_gives_same_rows_whatever_the_chunk_size() -> None:
    assert _customer_rows(SPEC, 1000) == _customer_rows(SPEC, 257)
    assert _digest(SPEC, 500) == _digest(SPEC, 500)


def test_another_seed_gives_other_data() -> None:
    other = DemoSpec(customers=SPEC.customers, seed=12, as_of=SPEC.as_of)
    assert _digest(SPEC, 500) != _digest(other, 500)


def _sqlite_demo(tmp_path: Path) -> sqlite3.Connection:
    path = tmp_path / "warehouse.db"
    write_sqlite_demo(path, SPEC, chunk_size=700)
    return sqlite3.connect(path)


def test_demo_data_is_realistic(tmp_path: Path) -> None:
    conn = _sqlite_demo(tmp_path)
    (count, buyers, max_ltv, median_ltv_buyers) = conn.execute(
        "SELECT count(*), sum(orders_count > 0), max(lifetime_value), "
        "(SELECT lifetime_value FROM customers WHERE orders_count > 0 ORDER BY lifetime_value "
        " LIMIT 1 OFFSET (SELECT count(*) / 2 FROM customers WHERE orders_count > 0)) FROM customers"
    ).fetchone()
    assert count == SPEC.customers
    assert 0.55 < buyers / count < 0.8
    assert max_ltv > 10 * median_ltv_buyers, "lifetime value should have a long tail"
    # orders agree with the customer summary
    mismatches = conn.execute(
        "SELECT count(*) FROM customers c WHERE c.orders_count != "
        "(SELECT count(*) FROM orders o WHERE o.customer_id = c.customer_id) "
        "OR c.last_order_date IS NOT "
        "(SELECT max(order_date) FROM orders o WHERE o.customer_id = c.customer_id)"
    ).fetchone()[0]
    assert mismatches == 0
    # no activity dates after the as-of date or before signup
    future = conn.execute(
        "SELECT count(*) FROM customers WHERE max(coalesce(last_order_date, ''),"
        " coalesce(last_email_open_date, ''),"
        " coalesce(last_email_click_date, ''), signup_date) > ? OR last_order_date < signup_date"
        " OR last_email_click_date < last_email_open_date",
        (SPEC.as_of.isoformat(),),
    ).fetchone()[0]
    assert future == 0
    null_consent = conn.execute(
        "SELECT sum(email_opt_in IS NULL), sum(sms_opt_in IS NULL) FROM customers"
    ).fetchone()
    assert all(n > 0 for n in null_consent)
    for table in ("email_unsubscribes", "hard_bounces", "spam_complaints", "sms_opt_outs", "do_not_contact"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table


def test_demo_data_has_the_messy_rows_the_resolver_must_handle(tmp_path: Path) -> None:
    conn = _sqlite_demo(tmp_path)
    emails = [r[0] for r in conn.execute("SELECT email FROM customers")]
    present = [e for e in emails if e is not None]
    assert len(present) < len(emails), "some customers have no email"
    assert any(e != e.strip() for e in present), "padded emails"
    assert any(e.strip() != e.strip().lower() for e in present), "mixed-case emails"
    assert any("@" not in e or e.count("@") > 1 or e.startswith("@") for e in present), "invalid emails"
    duplicates = conn.execute(
        "SELECT count(*) FROM (SELECT lower(trim(email)) FROM customers WHERE email LIKE '%@%.%' "
        "GROUP BY lower(trim(email)) HAVING count(*) > 1)"
    ).fetchone()[0]
    assert duplicates > 0, "duplicate emails across customers"
    phones = [r[0] for r in conn.execute("SELECT phone FROM customers WHERE phone IS NOT NULL")]
    assert any(p.startswith("+") for p in phones) and any(p.startswith("(") for p in phones)
    assert any(not re.search(r"\d{6}", re.sub(r"\D", "", p)) for p in phones), "unparseable phones"


def test_demo_command_builds_a_valid_setup_and_reuses_it(tmp_path: Path) -> None:
    runner = CliRunner()
    folder = tmp_path / "demo"
    args = ["demo", "--dir", str(folder), "--customers", "500", "--seed", "3", "--as-of", "2026-11-22"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "generated" in first.output
    assert "problem" not in first.output
    assert (folder / "warehouse.db").exists() and (folder / "personasync.toml").exists()
    assert existing_demo_spec(folder / "warehouse.db") == DemoSpec(500, 3, date(2026, 11, 22))

    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "up to date, reused" in again.output

    validated = runner.invoke(cli, ["validate", "--config", str(folder / "personasync.toml")])
    assert validated.exit_code == 0, validated.output
    assert "problem" not in validated.output


def test_demo_shows_the_preview_and_a_customer_to_explain(tmp_path: Path) -> None:
    runner = CliRunner()
    folder = tmp_path / "demo"
    args = ["demo", "--dir", str(folder), "--customers", "500", "--seed", "3", "--as-of", "2026-11-22"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "customers 500" in result.output and "serial_refunder (negative)" in result.output
    suggested = re.search(r"personasync (personas explain .*)", result.output)
    assert suggested, result.output
    explained = runner.invoke(cli, suggested.group(1).split())
    assert explained.exit_code == 0, explained.output
    assert "assigned" in explained.output and "Channels" in explained.output

    as_json = runner.invoke(cli, ["personas", "preview", "--config", str(folder / "personasync.toml"),
                                  "--as-of", "2026-11-22", "--format", "json"])  # fmt: skip
    summary = json.loads(as_json.output)
    assert summary["customers"] == 500
    assert sum(p["members"] for p in summary["personas"] if not p["negative"]) == summary["with_persona"]


def test_explain_of_an_unknown_key_exits_2(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    CliRunner().invoke(cli, ["demo", "--dir", str(folder), "--customers", "50", "--as-of", "2026-11-22"])
    result = CliRunner().invoke(
        cli, ["personas", "explain", "999999", "--config", str(folder / "personasync.toml")]
    )
    assert result.exit_code == 2
    assert "no customer with key '999999'" in result.output


def test_demo_rejects_a_bad_date(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path), "--as-of", "22/11/2026"])
    assert result.exit_code == 2
    assert "--as-of" in result.output
