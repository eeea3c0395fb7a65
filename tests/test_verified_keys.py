"""Customers verified in sync are skipped in the warehouse: that must never change a plan.

Each day of changes is planned twice, once skipping verified customers and once with
``--recheck-all`` (every customer through the resolver and the diff in Python, the path
every other test uses), and the two saved plans must be the same text: the same changes,
the same counts, the same guardrail verdicts. Then the day is applied and every
destination must hold exactly the desired state.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from connectors.demo_data import mutate_sqlite_demo
from sync import app
from sync.config_loader import load_config
from sync.engine import SyncSummary
from sync.exit_codes import ExitCode
from tests.sync_world import World, assert_in_sync, make_world

CUSTOMERS = 400


def planned(world: World, folder: Path, name: str, **options: Any) -> tuple[SyncSummary, str]:
    plan = folder / f"{name}.jsonl"
    summary = world.sync(dry_run=True, plan_out=plan, allow_large_changes=True, **options)
    return summary, plan.read_text(encoding="utf-8")


def same_plan_both_ways(world: World, folder: Path) -> SyncSummary:
    """The day's plan, made both ways; returns the skipping one's summary."""
    fast, fast_plan = planned(world, folder, "fast")
    full, full_plan = planned(world, folder, "full", recheck_all=True)
    assert full.skipped_verified == 0
    assert fast_plan == full_plan
    assert fast.source_rows == full.source_rows
    return fast


def apply_day(world: World) -> SyncSummary:
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code in (ExitCode.OK, ExitCode.RECORD_FAILURES), summary.as_json()
    return summary


def warehouse(world: World) -> sqlite3.Connection:
    return sqlite3.connect(world.warehouse)


def a_customer(world: World, where: str) -> dict[str, Any]:
    with warehouse(world) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute(f"SELECT * FROM customers WHERE {where} ORDER BY customer_id LIMIT 1").fetchone()
    assert row is not None, where
    return dict(row)


def test_skipping_verified_customers_plans_exactly_what_a_full_recheck_plans(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world", customers=CUSTOMERS)
    first = apply_day(world)
    assert first.skipped_verified == 0  # nothing verified before the first sync
    assert_in_sync(world)

    # The day after: nothing changed, everyone is skipped and nothing is planned.
    quiet = same_plan_both_ways(world, tmp_path)
    assert quiet.skipped_verified == CUSTOMERS
    assert all(sum(p["changes"].values()) == 0 for p in quiet.plans)

    # Day 1: the demo's own day of changes (orders, consent, an unsubscribe list, new
    # addresses, deletions, refunds).
    deleted = a_customer(world, "email_opt_in = 1 AND email IS NOT NULL")
    mutate_sqlite_demo(world.warehouse)
    with warehouse(world) as conn:
        conn.execute("DELETE FROM customers WHERE customer_id = ?", (deleted["customer_id"],))
    day1 = same_plan_both_ways(world, tmp_path)
    assert 0 < day1.skipped_verified < CUSTOMERS
    apply_day(world)
    assert_in_sync(world)

    # Day 2: lists change without any customer row changing: an SMS opt-out written in
    # national format; one for a German number typed without its country, which only its
    # digits match (the list's default region reads it as no number at all); a tagged
    # customer's address unsubscribed (written in capitals), a do-not-contact entry.
    texted = a_customer(world, "sms_opt_in = 'opted_in' AND phone LIKE '+1%'")
    abroad = a_customer(world, "sms_opt_in = 'opted_in' AND country = 'DE' AND phone LIKE '0%/%'")
    tagged = next(r for r in world.ledger_rows("email_outbox") if r.tags and not r.suppressed)
    with warehouse(world) as conn:
        conn.execute(
            "INSERT INTO sms_opt_outs VALUES (?, '2026-11-01')", (texted["phone"].removeprefix("+1"),)
        )
        conn.execute(
            "INSERT INTO sms_opt_outs VALUES (?, '2026-11-01')", (abroad["phone"].replace("/", " "),)
        )
        conn.execute(
            "INSERT INTO email_unsubscribes VALUES (?, '2026-11-01')", (f" {tagged.address.upper()} ",)
        )
        conn.execute(
            "INSERT INTO do_not_contact SELECT MAX(customer_id), 'asked', '2026-11-01' FROM customers"
        )
    day2 = same_plan_both_ways(world, tmp_path)
    assert changes(day2, "sms_outbox", "suppress") >= 1  # the opt-out in national format was found
    assert changes(day2, "email_outbox", "suppress") >= 1  # so was the unsubscribe in capitals
    apply_day(world)
    assert_in_sync(world)
    texted_abroad = [r for r in world.ledger_rows("sms_outbox") if r.key == str(abroad["customer_id"])]
    assert texted_abroad and all(r.suppressed and not r.tags for r in texted_abroad)

    # Day 3: the unsubscribe is taken back; the deleted customer comes back exactly as they
    # were; a customer changes address, and (day 4) changes it back: rows return to a
    # digest seen before.
    mover = a_customer(world, "email_opt_in = 1 AND email IS NOT NULL AND customer_id > 10")
    with warehouse(world) as conn:
        conn.execute("DELETE FROM email_unsubscribes WHERE email = ?", (f" {tagged.address.upper()} ",))
        columns = ", ".join(deleted)
        marks = ", ".join("?" for _ in deleted)
        conn.execute(f"INSERT INTO customers ({columns}) VALUES ({marks})", tuple(deleted.values()))
        conn.execute(
            "UPDATE customers SET email = ? WHERE customer_id = ?",
            ("moved." + mover["email"], mover["customer_id"]),
        )
    day3 = same_plan_both_ways(world, tmp_path)
    assert changes(day3, "email_outbox", "unsuppress") >= 1
    apply_day(world)
    with warehouse(world) as conn:
        conn.execute(
            "UPDATE customers SET email = ? WHERE customer_id = ?", (mover["email"], mover["customer_id"])
        )
    same_plan_both_ways(world, tmp_path)
    apply_day(world)
    assert_in_sync(world)

    # Day 5: an address already unsubscribed also bounces: the same identifiers are listed,
    # one by one more source. Its customer is checked again (here with the same outcome:
    # both sources suppress email alone).
    before = same_plan_both_ways(world, tmp_path).skipped_verified
    with warehouse(world) as conn:
        (listed,) = conn.execute(
            "SELECT u.email FROM email_unsubscribes u JOIN customers c ON lower(trim(c.email)) = "
            "lower(trim(u.email)) WHERE lower(trim(u.email)) NOT IN (SELECT lower(trim(email)) "
            "FROM hard_bounces) ORDER BY u.email LIMIT 1"
        ).fetchone()
        conn.execute("INSERT INTO hard_bounces VALUES (?, '2026-11-01')", (listed,))
    day5 = same_plan_both_ways(world, tmp_path)
    assert day5.skipped_verified < before
    apply_day(world)
    assert_in_sync(world)


def changes(summary: SyncSummary, destination: str, kind: str) -> int:
    return int(next(p for p in summary.plans if p["destination"] == destination)["changes"][kind])


def test_a_refused_record_is_not_verified_and_stays_held_as_without_skipping(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world", customers=CUSTOMERS)
    apply_day(world)
    mutate_sqlite_demo(world.warehouse)
    refused = a_customer(world, "email_opt_in = 1 AND email IS NOT NULL AND customer_id > 50")
    with warehouse(world) as conn:
        conn.execute(
            "UPDATE customers SET orders_count = orders_count + 9, last_order_date = '2026-10-30' "
            "WHERE customer_id = ?",
            (refused["customer_id"],),
        )
    email = world.destinations["email_outbox"]
    email.faults.reject.add(refused["email"].strip().lower())
    failed = apply_day(world)
    assert failed.exit_code is ExitCode.RECORD_FAILURES
    # Nothing changed since: the refused change is held back the same way both ways.
    held = same_plan_both_ways(world, tmp_path)
    assert any(p["held_permanent_failures"] for p in held.plans)
    email.faults.reject.clear()
    retried = world.sync(retry_failed=True)
    assert retried.exit_code is ExitCode.OK
    assert_in_sync(world)
    assert same_plan_both_ways(world, tmp_path).skipped_verified == present(world)  # all verified again


def present(world: World) -> int:
    with warehouse(world) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM customers").fetchone()
    return int(count)


def test_a_config_change_rechecks_every_customer(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world", customers=CUSTOMERS)
    apply_day(world)
    assert same_plan_both_ways(world, tmp_path).skipped_verified == CUSTOMERS
    text = (world.folder / "personasync.toml").read_text(encoding="utf-8")
    (world.folder / "personasync.toml").write_text(
        text.replace('op = "older_than_days", value = 90', 'op = "older_than_days", value = 60', 1),
        encoding="utf-8",
    )
    world.config = load_config(world.folder / "personasync.toml")
    changed = same_plan_both_ways(world, tmp_path)
    assert changed.skipped_verified == 0
    assert any(sum(p["changes"].values()) for p in changed.plans)


def test_a_saved_plan_applied_leaves_no_customer_skipped_on_an_old_digest(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world", customers=CUSTOMERS)
    apply_day(world)
    tagged = next(r for r in world.ledger_rows("email_outbox") if r.tags and not r.suppressed)
    mover = a_customer(world, f"customer_id = {int(tagged.key)}")
    with warehouse(world) as conn:
        conn.execute(
            "UPDATE customers SET email = ? WHERE customer_id = ?",
            ("moved." + mover["email"], mover["customer_id"]),
        )
    plan = tmp_path / "saved.jsonl"
    world.sync(dry_run=True, plan_out=plan)
    applied = app.apply_plan(world.config, plan, targets=world.targets())
    assert applied.exit_code is ExitCode.OK
    # The address goes back to the row digest the customer was verified with before the plan.
    with warehouse(world) as conn:
        conn.execute(
            "UPDATE customers SET email = ? WHERE customer_id = ?", (mover["email"], mover["customer_id"])
        )
    back = same_plan_both_ways(world, tmp_path)
    assert changes(back, "email_outbox", "add_tag") >= 1  # the tags return to the old address
