"""The sync engine end to end: a real warehouse and state store, stateful destinations.

Each test asserts what an operator or a marketer would notice: what the destination
holds, what the run reports, what the state store records.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from sync import app
from sync.changes import Change, ChangeKind
from sync.exit_codes import ExitCode
from sync.lock import LockHeld, LockLost, acquire, current_holder
from sync.ports import BatchResult
from sync.spool import PlanError
from tests.fakes.memory_destination import Contact, Faults, MemoryDestination, SimulatedCrash
from tests.sync_world import World, assert_in_sync, assert_ledger_not_ahead, make_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def synced(world: World) -> World:
    """The world after a first full sync (allowed past the first-sync suppression guardrail)."""
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK, summary.as_json()
    return world


def first_tagged(world: World, name: str = "email_outbox") -> tuple[str, str, frozenset[str]]:
    """(key, address, tags) of a customer holding tags on ``name``."""
    row = next(r for r in world.ledger_rows(name) if r.tags)
    return row.key, row.address, row.tags


def test_first_sync_delivers_the_desired_state_and_a_rerun_sends_nothing(world: World) -> None:
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK
    assert_in_sync(world)
    email = world.destinations["email_outbox"]
    assert email.tagged() and email.suppressed()
    calls = {name: d.batches for name, d in world.destinations.items()}

    again = world.sync()
    assert again.exit_code is ExitCode.OK
    assert {name: d.batches for name, d in world.destinations.items()} == calls  # not one request
    assert all(sum(p["changes"].values()) == 0 for p in again.plans)


def test_requests_are_changes_divided_by_the_batch_size(world: World) -> None:
    summary = world.sync(allow_large_changes=True)
    for plan in summary.plans:
        tally = summary.tallies[plan["destination"]]
        expected = sum(-(-n // 50) for n in plan["changes"].values())
        assert tally.requests == expected == sum(plan["estimate"]["requests"].values())


def test_a_dry_run_sends_nothing_and_writes_no_state(world: World) -> None:
    synced(world)
    world.sql("UPDATE customers SET email_opt_in = 0 WHERE customer_id % 17 = 0")
    before = world.ledger_dump()
    calls = {name: d.batches for name, d in world.destinations.items()}
    summary = world.sync(dry_run=True)
    assert summary.dry_run and summary.run_id is None
    assert sum(summary.plans[0]["changes"].values()) > 0  # there was something to do
    assert {name: d.batches for name, d in world.destinations.items()} == calls
    assert world.ledger_dump() == before


def test_the_plan_orders_suppressions_then_removals_then_lifts_then_additions(world: World) -> None:
    synced(world)
    world.sql("UPDATE customers SET email_opt_in = 0 WHERE customer_id % 13 = 0")
    world.sql("UPDATE customers SET orders_count = 9, lifetime_value = 900, last_order_date = '2026-10-30'")
    email = world.destinations["email_outbox"]
    email.applied.clear()
    world.sync(allow_large_changes=True)
    order = [ChangeKind.SUPPRESS, ChangeKind.REMOVE_TAG, ChangeKind.UNSUPPRESS, ChangeKind.ADD_TAG]
    kinds = [kind for kind, _, _ in email.applied]
    assert kinds == sorted(kinds, key=order.index) and ChangeKind.SUPPRESS in kinds
    assert_in_sync(world)


@pytest.mark.parametrize("batch_size", [7, 64])
@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("when", ["before", "after"])
def test_a_run_killed_after_k_batches_resumes_and_every_change_lands_once(
    tmp_path: Path, batch_size: int, k: int, when: str
) -> None:
    world = make_world(tmp_path, batch_size=batch_size)
    email = world.destinations["email_outbox"]
    if when == "before":
        email.faults.crash_before_batch = k
    else:  # the vendor applied the batch, the process died before recording it
        email.faults.crash_after_batch = k
    with pytest.raises(SimulatedCrash):
        world.sync(allow_large_changes=True)
    assert_ledger_not_ahead(world, "email_outbox")  # state never ahead of the destination

    email.faults = Faults()
    applied_before = list(email.applied)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK
    assert_in_sync(world)
    resent = email.applied[len(applied_before) :]
    # Only the batch in flight at the kill may be sent twice (harmless: every change is idempotent).
    assert len(set(resent) & set(applied_before)) <= (batch_size if when == "after" else 0)
    assert app.run_history(world.config, 5)[1].status == "failed"  # the run that died, in the history


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_change_sent_at_most_once_is_never_repeated_after_a_crash(tmp_path: Path, when: str) -> None:
    """An SMS unsubscribe texts the person: one in flight when the run died counts as sent."""
    world = make_world(tmp_path)
    sms = MemoryDestination("sms_outbox", 1, at_most_once=frozenset({ChangeKind.SUPPRESS}))
    world.destinations = {"sms_outbox": sms}
    if when == "before":
        sms.faults.crash_before_batch = 3
    else:
        sms.faults.crash_after_batch = 3
    with pytest.raises(SimulatedCrash):
        world.sync(allow_large_changes=True)
    in_flight = sms.applied[-1][1] if when == "after" else None

    sms.faults = Faults()
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK and summary.settled_intents == 1
    suppressions = [address for kind, address, _ in sms.applied if kind is ChangeKind.SUPPRESS]
    assert len(suppressions) == len(set(suppressions))  # nobody was sent it twice
    if in_flight is not None:
        assert in_flight in sms.suppressed()
    _, desired = world.desired("sms_outbox")
    claimed = {r.address for r in world.ledger_rows("sms_outbox") if r.suppressed}
    assert claimed == desired  # the one in flight is held as sent, not planned again
    assert world.sync().plans[0]["changes"]["suppress"] == 0


def test_an_at_most_once_change_refused_before_sending_is_sent_next_run(tmp_path: Path) -> None:
    """A destination down (say, its key refused) sent nothing: those unsubscribes are not
    counted as sent, and the next run sends them."""
    world = make_world(tmp_path)
    sms = MemoryDestination("sms_outbox", 1, at_most_once=frozenset({ChangeKind.SUPPRESS}))
    world.destinations = {"sms_outbox": sms}
    sms.faults.down = True
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.DESTINATION_FATAL
    sms.faults = Faults()
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK and summary.settled_intents == 0
    _, desired = world.desired("sms_outbox")
    assert sms.suppressed() == desired


def test_a_plan_saved_before_an_interrupted_at_most_once_send_is_refused(tmp_path: Path) -> None:
    """``apply`` settles what a dead run sent before comparing versions, so an older plan
    holding the same unsubscribe can never text the person a second time."""
    world = make_world(tmp_path)
    sms = MemoryDestination("sms_outbox", 1, at_most_once=frozenset({ChangeKind.SUPPRESS}))
    world.destinations = {"sms_outbox": sms}
    sms.faults.crash_after_batch = 0
    with pytest.raises(SimulatedCrash):
        world.sync(allow_large_changes=True)
    sms.faults = Faults()
    plan = tmp_path / "plan.jsonl"
    world.sync(dry_run=True, plan_out=plan)  # a dry run does not settle: the plan holds that unsubscribe
    with pytest.raises(PlanError, match="changed since this plan was made"):
        app.apply_plan(world.config, plan, allow_large_changes=True, targets=world.targets())
    assert len([a for k, a, _ in sms.applied if k is ChangeKind.SUPPRESS]) == 1


def test_guardrail_blocks_a_mass_suppression_before_anything_is_sent(world: World) -> None:
    synced(world)
    world.sql("UPDATE customers SET email_opt_in = NULL WHERE customer_id % 3 = 0")  # a broken load
    calls = {name: d.batches for name, d in world.destinations.items()}
    summary = world.sync()
    assert summary.exit_code is ExitCode.GUARDRAIL
    verdict = next(v for v in summary.plans[0]["guardrails"] if v["guardrail"] == "max_suppress_percent")
    assert verdict["blocked"] and verdict["percent"] > 20
    assert "points over the limit" in verdict["message"]
    assert {name: d.batches for name, d in world.destinations.items()} == calls
    assert app.run_history(world.config, 1)[0].status == "blocked"

    allowed = world.sync(allow_large_changes=True)
    assert allowed.exit_code is ExitCode.OK
    assert_in_sync(world)


def test_guardrail_blocks_mass_removals(world: World) -> None:
    synced(world)
    world.sql("UPDATE customers SET orders_count = 0, last_order_date = NULL, signup_date = '2000-01-01'")
    summary = world.sync()
    assert summary.exit_code is ExitCode.GUARDRAIL
    assert any(
        v["guardrail"] == "max_remove_percent" and v["blocked"] for v in summary.plans[0]["guardrails"]
    )


def test_an_empty_source_never_wipes_a_destination(world: World) -> None:
    synced(world)
    tagged = world.destinations["email_outbox"].tagged()
    world.sql("DELETE FROM customers")
    summary = world.sync()
    assert summary.exit_code is ExitCode.GUARDRAIL and summary.source_rows == 0
    assert any(v["guardrail"] == "empty_source" for v in summary.plans[0]["guardrails"])
    assert world.destinations["email_outbox"].tagged() == tagged


def test_a_second_run_is_refused_while_the_lock_is_held_and_a_stale_lock_is_taken_over(world: World) -> None:
    engine = world.state_engine()
    try:
        world.sync(dry_run=True)  # creates the store
        lock = acquire(engine, timedelta(hours=2))
        with pytest.raises(LockHeld, match="pid"):
            world.sync(allow_large_changes=True)
        assert world.destinations["email_outbox"].batches == 0
        assert world.sync(dry_run=True).exit_code is ExitCode.GUARDRAIL  # a dry run needs no lock
        with engine.begin() as conn:  # the holder died two hours ago
            conn.exec_driver_sql("UPDATE locks SET heartbeat_at = '2000-01-01T00:00:00+00:00'")
        assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
        assert current_holder(engine) is None
        lock.release()  # the old holder's release must not remove anyone else's lock
    finally:
        engine.dispose()


def test_a_run_whose_lock_was_taken_over_stops_after_recording_what_it_sent(world: World) -> None:
    """Another run judged our lock stale (a lock timeout shorter than a long wait) and took it:
    we record the batch we sent and stop before sending another, naming the new holder."""
    sms = MemoryDestination("sms_outbox", 1, at_most_once=frozenset({ChangeKind.SUPPRESS}))
    world.destinations = {"sms_outbox": sms}
    engine = world.state_engine()
    apply = sms.apply

    def apply_then_lose_the_lock(kind: ChangeKind, batch: Sequence[Change]) -> BatchResult:
        result = apply(kind, batch)
        with engine.begin() as conn:  # what a run taking over a stale lock writes
            conn.exec_driver_sql("UPDATE locks SET owner = 'another-run', pid = 4242, host = 'cron-2'")
        return result

    sms.apply = apply_then_lose_the_lock  # type: ignore[method-assign]
    try:
        with pytest.raises(LockLost, match=r"taken over.*pid 4242 on cron-2.*lock_timeout_minutes"):
            world.sync(allow_large_changes=True)
        assert sms.batches == 1  # nothing sent once the lock was gone
        assert [row.address for row in world.ledger_rows("sms_outbox")] == list(sms.suppressed())
        assert current_holder(engine) is not None and current_holder(engine).pid == 4242  # type: ignore[union-attr]
    finally:
        engine.dispose()


def test_we_never_remove_a_tag_we_did_not_add(world: World) -> None:
    synced(world)
    key, address, _ = first_tagged(world)
    email = world.destinations["email_outbox"]
    email.contacts[address].tags.add("vip-by-hand")  # a marketer's own tag
    world.sql("DELETE FROM customers WHERE customer_id = ?", int(key))
    world.sync()
    assert email.contacts[address].tags == {"vip-by-hand"}
    assert address in email.contacts  # the contact itself is never deleted


def test_a_customer_gone_from_the_source_loses_our_tags(world: World) -> None:
    synced(world)
    key, address, _ = first_tagged(world)
    world.sql("DELETE FROM customers WHERE customer_id = ?", int(key))
    summary = world.sync()
    assert summary.exit_code is ExitCode.OK
    assert address not in world.destinations["email_outbox"].tagged()
    assert all(r.key != key or not r.tags for r in world.ledger_rows("email_outbox"))


def test_a_new_email_moves_the_tags_to_the_new_address(world: World) -> None:
    synced(world)
    key, old_address, tags = first_tagged(world)
    world.sql("UPDATE customers SET email = 'moved@new.example.com' WHERE customer_id = ?", int(key))
    summary = world.sync()
    assert summary.exit_code is ExitCode.OK
    email = world.destinations["email_outbox"]
    assert email.contacts[old_address].tags == set()
    assert email.contacts["moved@new.example.com"].tags == set(tags)
    rows = [r for r in world.ledger_rows("email_outbox") if r.key == key]
    assert [(r.address, r.tags) for r in rows] == [("moved@new.example.com", tags)]


def test_regained_consent_lifts_only_a_suppression_we_added(world: World) -> None:
    email = world.destinations["email_outbox"]
    tagged, _ = world.desired("email_outbox")
    theirs = sorted(tagged)[0]
    email.contacts[theirs] = Contact(suppressed=True)  # suppressed in the ESP itself (say, a bounce)
    synced(world)
    world.sql("UPDATE customers SET email_opt_in = 1")  # everyone consents now
    summary = world.sync(allow_large_changes=True)
    assert summary.plans[0]["changes"]["unsuppress"] > 0
    _, still_suppressed = world.desired("email_outbox")  # unsubscribes, bounces, negative persona...
    assert email.suppressed() == still_suppressed | {theirs}  # theirs is not ours to lift


def test_a_destination_that_cannot_lift_suppressions_keeps_them(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.destinations["email_outbox"] = MemoryDestination("email_outbox", can_unsuppress=False)
    synced(world)
    email = world.destinations["email_outbox"]
    suppressed_before = email.suppressed()
    world.sql("UPDATE customers SET email_opt_in = 1")
    summary = world.sync(allow_large_changes=True)
    assert summary.plans[0]["changes"]["unsuppress"] == 0
    assert email.suppressed() == suppressed_before


def test_permanent_failures_are_reported_held_and_retried_on_request(world: World) -> None:
    tagged, _ = world.desired("email_outbox")
    bad = sorted(tagged)[0]
    email = world.destinations["email_outbox"]
    email.faults.reject.add(bad)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.RECORD_FAILURES
    assert summary.tallies["email_outbox"].failed_permanent["add_tag"] == len(tagged[bad])
    details = app.run_details(world.config, summary.run_id or 0)
    assert details is not None and details.failures[0].reason == "422 invalid email address"
    assert details.failures[0].address == bad

    calls = email.batches
    again = world.sync()
    assert again.exit_code is ExitCode.OK and email.batches == calls  # not resent for the same data
    assert again.plans[0]["held_permanent_failures"] == len(tagged[bad])

    email.faults.reject.clear()
    retried = world.sync(retry_failed=True)
    assert retried.exit_code is ExitCode.OK
    assert email.tagged()[bad] == tagged[bad]


def test_a_batch_refused_as_a_whole_is_split_until_the_bad_record_stands_alone(world: World) -> None:
    tagged, _ = world.desired("email_outbox")
    poison = sorted(tagged)[3]
    world.destinations["email_outbox"].faults.poison.add(poison)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.RECORD_FAILURES
    tally = summary.tallies["email_outbox"]
    assert sum(tally.failed_permanent.values()) == len(tagged[poison])
    delivered = world.destinations["email_outbox"].tagged()
    assert poison not in delivered and len(delivered) == len(tagged) - 1


def test_retryable_failures_are_retried_within_the_run(world: World) -> None:
    tagged, _ = world.desired("email_outbox")
    flaky = sorted(tagged)[0]
    world.destinations["email_outbox"].faults.flaky[flaky] = 1
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK
    assert world.destinations["email_outbox"].tagged()[flaky] == tagged[flaky]


def test_records_still_failing_after_the_retries_are_left_for_the_next_run(world: World) -> None:
    tagged, _ = world.desired("email_outbox")
    flaky = sorted(tagged)[0]
    world.destinations["email_outbox"].faults.flaky[flaky] = 10
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.RECORD_FAILURES
    assert flaky not in world.destinations["email_outbox"].tagged()
    world.destinations["email_outbox"].faults.flaky.clear()
    assert world.sync().exit_code is ExitCode.OK  # no --retry-failed needed
    assert_in_sync(world)


def test_a_destination_that_is_down_stops_alone_with_exit_5(world: World) -> None:
    world.destinations["email_outbox"].faults.down = True
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.DESTINATION_FATAL
    assert "503" in (summary.tallies["email_outbox"].fatal or "")
    sms_tagged, _ = world.desired("sms_outbox")
    assert world.destinations["sms_outbox"].tagged() == sms_tagged  # the other one carried on
    assert world.ledger_rows("email_outbox") == []


def test_a_failed_check_sends_nothing_to_that_destination(world: World) -> None:
    world.destinations["email_outbox"].faults.check_fails = True
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.DESTINATION_FATAL
    assert world.destinations["email_outbox"].batches == 0
    assert "401" in summary.checks["email_outbox"]


def test_a_saved_plan_applies_exactly_and_is_refused_once_state_moved(world: World, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.jsonl"
    dry = world.sync(dry_run=True, plan_out=plan_file)
    assert dry.exit_code is ExitCode.GUARDRAIL  # first sync: more than 20 % suppressed
    blocked = app.apply_plan(world.config, plan_file, targets=world.targets())
    assert blocked.exit_code is ExitCode.GUARDRAIL and world.destinations["email_outbox"].batches == 0

    applied = app.apply_plan(world.config, plan_file, allow_large_changes=True, targets=world.targets())
    assert applied.exit_code is ExitCode.OK
    assert_in_sync(world)
    with pytest.raises(PlanError, match="changed since this plan was made"):
        app.apply_plan(world.config, plan_file, allow_large_changes=True, targets=world.targets())


def test_full_resync_repairs_drift_but_touches_only_our_tags(world: World) -> None:
    synced(world)
    _, address, tags = first_tagged(world)
    email = world.destinations["email_outbox"]
    email.contacts[address].tags = {"vip-by-hand"}  # someone deleted our tags by hand
    assert world.sync().plans[0]["changes"]["add_tag"] == 0  # a normal run trusts the ledger
    summary = world.sync(full_resync=True)
    assert summary.exit_code is ExitCode.OK
    assert email.contacts[address].tags == {"vip-by-hand", *tags}


def test_only_the_named_destinations_take_part(world: World) -> None:
    summary = app.sync(
        world.config,
        clock=app.datetime(2026, 11, 1, tzinfo=app.timezone.utc),
        destinations=["sms_outbox"],
        options=app.SyncOptions(allow_large_changes=True),
    )
    assert [p["destination"] for p in summary.plans] == ["sms_outbox"]
    with pytest.raises(app.ResolveProblem, match="unknown destination 'nope'"):
        app.sync(world.config, destinations=["nope"])
