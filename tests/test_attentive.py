"""Attentive end to end: the engine against a stateful fake account (`responses`) that
counts every text Attentive would send a person."""

from __future__ import annotations

from pathlib import Path

import pytest
import responses

from connectors.destinations import attentive
from connectors.http import RetryPolicy
from sync import app
from sync.exit_codes import ExitCode
from tests.fakes.attentive import AttentiveModel
from tests.fakes.memory_destination import SimulatedCrash
from tests.fakes.sleeps import Sleeps
from tests.sync_world import World, make_world

TOKEN = "atn_live_0123456789abcdef0123456789abcdef"


def attentive_world(
    tmp_path: Path,
    rsps: responses.RequestsMock,
    sleeps: Sleeps,
    *,
    token: str = TOKEN,
    settings: attentive.AttentiveSettings | None = None,
) -> tuple[World, AttentiveModel]:
    world = make_world(tmp_path)
    account = AttentiveModel(TOKEN)
    account.attach(rsps)
    tagged, suppressed = world.desired("sms_outbox")
    for phone in sorted(tagged) + sorted(suppressed)[::2]:
        account.add(phone)  # subscribers already; half the ones we suppress are not yet known
    world.destinations = {
        "sms_outbox": attentive.build(  # type: ignore[dict-item]
            "sms_outbox", token, settings or attentive.AttentiveSettings(), timeout=(1, 5),
            policy=RetryPolicy(max_attempts=6), sleep=sleeps, clock=sleeps.clock,
        )
    }  # fmt: skip
    return world, account


def test_tags_and_unsubscribes_land_each_person_is_texted_once_and_a_rerun_writes_nothing(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = attentive_world(tmp_path, rsps, sleeps)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK, summary.as_json()
    tagged, suppressed = world.desired("sms_outbox")
    assert account.tagged() == tagged
    assert account.unsubscribed() >= suppressed
    assert account.unsubscribe_texts() == dict.fromkeys(suppressed, 1)
    assert account.violations == []

    writes = account.writes()
    assert world.sync().exit_code is ExitCode.OK and account.writes() == writes


def test_a_persona_lost_sets_its_attribute_false_and_consent_is_never_given_back(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = attentive_world(tmp_path, rsps, sleeps)
    world.sync(allow_large_changes=True)
    phone = sorted(account.tagged())[0]
    world.sql("UPDATE customers SET sms_opt_in = 0")
    world.sync(allow_large_changes=True)
    subscriber = account.subscribers[phone]
    assert not subscriber.subscribed and set(subscriber.attributes.values()) == {"false"}
    world.sql("UPDATE customers SET sms_opt_in = 1")
    summary = world.sync(allow_large_changes=True)
    assert summary.plans[0]["changes"]["unsuppress"] == 0
    assert not subscriber.subscribed and account.violations == []
    assert max(account.unsubscribe_texts().values()) == 1


@pytest.mark.parametrize("crash_on", [1, 4])
def test_a_run_killed_between_the_unsubscribe_and_its_record_never_texts_twice(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, crash_on: int
) -> None:
    world, account = attentive_world(tmp_path, rsps, sleeps)
    calls = 0
    handle = account.handle

    def dies_after_the_nth_unsubscribe(method: str, url: str, headers: dict[str, str], body: bytes):  # type: ignore[no-untyped-def]
        nonlocal calls
        reply = handle(method, url, headers, body)
        if url.endswith("/subscriptions/unsubscribe"):
            calls += 1
            if calls == crash_on:
                raise SimulatedCrash("killed after Attentive texted the person, before we recorded it")
        return reply

    account.handle = dies_after_the_nth_unsubscribe  # type: ignore[method-assign]
    with pytest.raises(SimulatedCrash):
        world.sync(allow_large_changes=True)
    account.handle = handle  # type: ignore[method-assign]

    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK and summary.settled_intents == 1
    _, suppressed = world.desired("sms_outbox")
    assert account.unsubscribe_texts() == dict.fromkeys(suppressed, 1)


def test_an_unsubscribe_without_an_answer_counts_as_sent_and_a_503_is_retried(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = attentive_world(tmp_path, rsps, sleeps)
    account.faults.errors_503 = 2  # nothing done: safe to send again
    account.faults.throttle = 2
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK
    world.sql("UPDATE customers SET sms_opt_in = 0 WHERE customer_id % 3 = 0")
    account.faults.unsubscribe_timeouts = 1  # done, but the answer never came
    account.faults.unsubscribe_500 = 1  # done, answered 500
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK
    assert account.faults.unsubscribe_timeouts == account.faults.unsubscribe_500 == 0
    _, suppressed = world.desired("sms_outbox")
    assert account.unsubscribe_texts() == dict.fromkeys(suppressed, 1)
    assert world.sync().plans[0]["changes"]["suppress"] == 0  # never sent again


def test_a_phone_attentive_refuses_is_reported_with_its_reason(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = attentive_world(tmp_path, rsps, sleeps)
    refused = sorted(world.desired("sms_outbox")[0])[0]
    account.faults.reject[refused] = "Phone number is not textable"
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.RECORD_FAILURES
    details = app.run_details(world.config, summary.run_id or 0)
    assert details is not None and {f.address for f in details.failures} == {refused}
    assert "not textable" in (details.failures[0].reason or "")


def test_primary_mode_holds_the_persona_in_one_attribute(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = attentive_world(
        tmp_path, rsps, sleeps, settings=attentive.AttentiveSettings(attribute_mode="primary")
    )
    world.sync(allow_large_changes=True)
    tagged, _ = world.desired("sms_outbox")
    held = {
        p: s.attributes.get("persona") for p, s in account.subscribers.items() if s.attributes.get("persona")
    }
    assert held == {phone: next(iter(tags)) for phone, tags in tagged.items()}


def test_a_refused_token_stops_with_a_clear_message_and_no_secret(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    wrong = "atn_live_ffffffffffffffffffffffffffffffff"
    world, account = attentive_world(tmp_path, rsps, sleeps, token=wrong)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.DESTINATION_FATAL
    assert "refused the API key" in summary.checks["sms_outbox"] and wrong not in summary.checks["sms_outbox"]
    assert account.writes() == 0
