"""Klaviyo end to end: the engine against a stateful fake account (`responses`), on the email
channel and on the SMS channel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import responses

from connectors.destinations import klaviyo
from connectors.http import RetryPolicy
from sync.changes import Change, ChangeKind
from sync.exit_codes import ExitCode
from sync.ports import Outcome
from tests.fakes.klaviyo import JSON_API, KlaviyoModel
from tests.fakes.sleeps import Sleeps
from tests.sync_world import World, make_world

API_KEY = "pk_live_0123456789abcdef0123456789abcdef"


def klaviyo_world(
    tmp_path: Path,
    rsps: responses.RequestsMock,
    sleeps: Sleeps,
    *,
    api_key: str = API_KEY,
    lists: dict[str, str] | None = None,
    job_timeout: float = 600,
    customers: int = 300,
) -> tuple[World, KlaviyoModel]:
    """The demo world with both destinations pointed at one fake Klaviyo account."""
    world = make_world(tmp_path, customers=customers)
    account = KlaviyoModel(API_KEY)
    account.attach(rsps)
    for list_id in (lists or {}).values():
        account.lists[list_id] = set()

    def destination(name: str, channel: str, tag_lists: dict[str, str] | None) -> klaviyo.KlaviyoDestination:
        settings = klaviyo.KlaviyoSettings(channel, lists=tag_lists, job_timeout=job_timeout)
        return klaviyo.build(
            name, api_key, settings, timeout=(1, 5), policy=RetryPolicy(max_attempts=4),
            sleep=sleeps, clock=sleeps.clock,
        )  # fmt: skip

    world.destinations = {
        "email_outbox": destination("email_outbox", "email", lists),  # type: ignore[dict-item]
        "sms_outbox": destination("sms_outbox", "sms", None),  # type: ignore[dict-item]
    }
    return world, account


def email_tags(account: KlaviyoModel) -> dict[str, frozenset[str]]:
    return {a: t for a, t in account.tagged().items() if a}


def phone_tags(account: KlaviyoModel) -> dict[str, frozenset[str]]:
    return {p: t for p, t in account.tagged(identifier="phone_number").items() if p}


def test_tags_and_suppressions_land_on_both_channels_and_a_rerun_writes_nothing(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK, summary.as_json()
    tagged, suppressed = world.desired("email_outbox")
    assert email_tags(account) == tagged
    assert account.suppressed() == suppressed
    sms_tagged, sms_suppressed = world.desired("sms_outbox")
    assert phone_tags(account) == sms_tagged
    assert account.sms_unsubscribed() == sms_suppressed
    assert account.violations == []  # no subscribe call, no consent set, no list on an unsubscribe
    imports = [p for m, p in account.calls if m == "POST" and p == "/api/profile-bulk-import-jobs"]
    assert len(imports) == 2  # one job per channel: every addition fits one 10,000-profile job

    writes = account.writes()
    again = world.sync()
    assert again.exit_code is ExitCode.OK and account.writes() == writes


def test_a_persona_change_moves_the_tag_and_an_identity_change_moves_the_profile(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps)
    world.sync(allow_large_changes=True)
    before = email_tags(account)
    world.sql("UPDATE customers SET email = 'moved@new.example.com' WHERE customer_id = 7")
    world.sql(  # some become champions, others lose their persona
        "UPDATE customers SET orders_count = orders_count + 5, lifetime_value = lifetime_value + 900, "
        "last_order_date = '2026-10-20' WHERE customer_id % 7 = 0"
    )
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK
    assert email_tags(account) == world.desired("email_outbox")[0] != before
    assert phone_tags(account) == world.desired("sms_outbox")[0]
    assert summary.plans[0]["changes"]["remove_tag"] > 0 and summary.plans[0]["changes"]["add_tag"] > 0


def test_consent_revoked_suppresses_and_untags_and_regained_consent_lifts_only_our_suppression(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps)
    world.sync(allow_large_changes=True)
    address = sorted(email_tags(account))[0]
    world.sql("UPDATE customers SET email_opt_in = 0 WHERE lower(trim(email)) = ?", address)
    assert world.sync().exit_code is ExitCode.OK
    profile = account.find("email", address)
    assert profile is not None and profile.suppression == "USER_SUPPRESSED"
    assert profile.properties["personas"] == []

    bounced = account.find("email", sorted(email_tags(account))[1])
    assert bounced is not None
    bounced.suppression = "HARD_BOUNCE"  # Klaviyo's own suppression: never ours to lift
    world.sql("UPDATE customers SET email_opt_in = 1 WHERE lower(trim(email)) = ?", address)
    summary = world.sync()
    assert summary.exit_code is ExitCode.OK
    assert (
        profile.suppression is None
        and set(profile.properties["personas"]) == world.desired("email_outbox")[0][address]
    )
    assert bounced.suppression == "HARD_BOUNCE"


def test_sms_consent_is_never_given_back_by_us(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps)
    world.sync(allow_large_changes=True)
    phone = sorted(phone_tags(account))[0]
    world.sql("UPDATE customers SET sms_opt_in = 0")
    world.sync(allow_large_changes=True)
    assert phone in account.sms_unsubscribed()
    world.sql("UPDATE customers SET sms_opt_in = 1")
    summary = world.sync(allow_large_changes=True)
    assert summary.plans[1]["changes"]["unsuppress"] == 0
    assert phone in account.sms_unsubscribed() and account.violations == []


def test_rows_klaviyo_refuses_are_reported_with_its_reason_and_the_rest_applied(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps)
    tagged, _ = world.desired("email_outbox")
    refused = sorted(tagged)[:3]
    for address in refused:
        account.faults.reject[address] = ("invalid", f"Profile {address} is blocked by a data-sharing rule.")
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.RECORD_FAILURES
    reasons = world.failure_reasons(summary.run_id)
    assert set(reasons) == set(refused)
    assert all("data-sharing rule" in reasons[a] for a in refused)
    assert email_tags(account) == {a: t for a, t in tagged.items() if a not in refused}

    account.faults.reject.clear()
    assert world.sync(retry_failed=True).exit_code is ExitCode.OK
    assert email_tags(account) == tagged


def test_import_errors_are_read_across_pages(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps, customers=500)
    tagged, _ = world.desired("email_outbox")
    refused = sorted(tagged)[:130]  # more than one 100-error page
    account.faults.reject.update({a: ("invalid", "refused") for a in refused})
    summary = world.sync(allow_large_changes=True)
    assert set(world.failure_reasons(summary.run_id)) == set(refused)
    assert sum(1 for _, p in account.calls if p.endswith("/import-errors")) == 2


def test_failures_klaviyo_does_not_itemise_claim_nothing(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps)
    tagged, _ = world.desired("email_outbox")
    account.faults.reject[sorted(tagged)[0]] = ("invalid", "refused")
    account.faults.unitemised = True
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.RECORD_FAILURES
    assert summary.tallies["email_outbox"].applied["add_tag"] == 0
    assert all(not r.tags for r in world.ledger_rows("email_outbox"))  # nothing claimed


def test_a_job_stuck_in_the_queue_leaves_its_records_open_and_the_next_run_finishes(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps, job_timeout=120)
    account.faults.stuck = True
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.RECORD_FAILURES
    reasons = world.failure_reasons(summary.run_id)
    assert reasons and all("still" in r and "after" in r for r in reasons.values())
    assert sum(s for s in sleeps.seconds) < 3 * 2 * 130  # each stuck queue waited out once, not per round
    assert all(not r.tags for r in world.ledger_rows("email_outbox"))

    account.faults.stuck = False
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    assert email_tags(account) == world.desired("email_outbox")[0]


def test_a_cancelled_job_is_sent_again(tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps)
    account.faults.cancel = 1
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    assert account.suppressed() == world.desired("email_outbox")[1]


@pytest.mark.parametrize(
    "fault",
    [
        {"throttle": 3, "retry_after": "7"},
        {"throttle": 2, "retry_after": None},
        {"errors_5xx": 3},
        {"timeouts": 2},
        {"drops": 2},
    ],
    ids=["429-retry-after", "429-bare", "5xx-burst", "timeouts", "dropped-connections"],
)
def test_transient_faults_are_retried_and_the_end_state_is_exact(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, fault: dict[str, Any]
) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps)
    for name, value in fault.items():
        setattr(account.faults, name, value)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK, summary.as_json()
    assert email_tags(account) == world.desired("email_outbox")[0]
    assert phone_tags(account) == world.desired("sms_outbox")[0]
    if fault.get("retry_after"):
        assert sleeps.seconds.count(7.0) == 3


def test_a_refused_key_stops_with_a_clear_message_and_no_secret(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    wrong = "pk_live_ffffffffffffffffffffffffffffffff"
    world, account = klaviyo_world(tmp_path, rsps, sleeps, api_key=wrong)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.DESTINATION_FATAL
    problem = summary.checks["email_outbox"]
    assert "refused the API key" in problem and wrong not in problem
    assert account.writes() == 0


def test_persona_lists_follow_the_tags(tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps, lists={"persona:champion": "LstChamp"})
    world.sync(allow_large_changes=True)
    champions = {a for a, t in world.desired("email_outbox")[0].items() if "persona:champion" in t}
    assert champions and account.list_members("LstChamp") == champions
    world.sql("UPDATE customers SET lifetime_value = 1")  # nobody is a champion any more
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    assert account.list_members("LstChamp") == set()


def test_a_missing_list_fails_the_check(tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps, lists={"persona:champion": "LstChamp"})
    del account.lists["LstChamp"]
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.DESTINATION_FATAL
    assert (
        "list 'LstChamp'" in summary.checks["email_outbox"] and "not found" in summary.checks["email_outbox"]
    )


def test_requests_match_the_shapes_in_klaviyos_spec(rsps: responses.RequestsMock, sleeps: Sleeps) -> None:
    """Bodies compared with the examples of Klaviyo's OpenAPI spec (klaviyo/openapi,
    openapi/stable.json, revision 2026-07-15: ``bulk_import_profiles``,
    ``bulk_suppress_profiles``, ``bulk_unsubscribe_profiles``, ``create_or_update_profile``),
    with our values in place of theirs."""
    from sync.changes import Change, ChangeKind

    account = KlaviyoModel(API_KEY, polls_to_finish=1)
    account.attach(rsps)
    email = klaviyo.build(
        "k", API_KEY, klaviyo.KlaviyoSettings("email"), timeout=(1, 5), sleep=sleeps, clock=sleeps.clock
    )
    sms = klaviyo.build(
        "k", API_KEY, klaviyo.KlaviyoSettings("sms"), timeout=(1, 5), sleep=sleeps, clock=sleeps.clock
    )

    def change(kind: ChangeKind, address: str, tag: str | None = None) -> Change:
        return Change(kind, "1", address, None, None, "f", tag, ())

    many = [change(ChangeKind.ADD_TAG, f"p{i}@example.com", "persona:champion") for i in range(11)]
    email.apply(ChangeKind.ADD_TAG, many)
    email.apply(ChangeKind.REMOVE_TAG, [change(ChangeKind.REMOVE_TAG, "p1@example.com", "persona:champion")])
    email.apply(ChangeKind.SUPPRESS, [change(ChangeKind.SUPPRESS, "p2@example.com")])
    sms.apply(ChangeKind.SUPPRESS, [change(ChangeKind.SUPPRESS, "+15005550006")])
    sent = [(c.request.method, c.request.path_url, c.request) for c in rsps.calls]
    posts = [(path, json.loads(r.body or b"{}")) for method, path, r in sent if method == "POST"]
    assert all(r.headers["revision"] == "2026-07-15" and r.headers["Content-Type"] == JSON_API
               for m, _, r in sent if m == "POST")  # fmt: skip
    assert posts[0] == ("/api/profile-bulk-import-jobs", {"data": {
        "type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": f"p{i}@example.com"},
             "meta": {"patch_properties": {"append": {"personas": ["persona:champion"]}}}}
            for i in range(11)]}}}})  # fmt: skip
    assert posts[1] == ("/api/profile-import", {"data": {
        "type": "profile", "attributes": {"email": "p1@example.com"},
        "meta": {"patch_properties": {"unappend": {"personas": ["persona:champion"]}}}}})  # fmt: skip
    assert posts[2] == ("/api/profile-suppression-bulk-create-jobs", {"data": {
        "type": "profile-suppression-bulk-create-job",
        "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": "p2@example.com"}}]}}}})  # fmt: skip
    assert posts[3] == ("/api/profile-subscription-bulk-delete-jobs", {"data": {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {
            "phone_number": "+15005550006",
            "subscriptions": {"sms": {"marketing": {"consent": "UNSUBSCRIBED"}}}}}]}}}})  # fmt: skip


def test_an_address_klaviyo_already_suppresses_is_confirmed_by_lookup_not_assumed(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, account = klaviyo_world(tmp_path, rsps, sleeps)
    _, suppressed = world.desired("email_outbox")
    bounced = sorted(suppressed)[0]
    account.add_profile(bounced).suppression = "HARD_BOUNCE"  # the job will skip it
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK
    lookups = [p for m, p in account.calls if m == "GET" and p == "/api/profiles"]
    assert len(lookups) > 2  # the check, and the look-up of the skipped batch's addresses
    assert {r.address for r in world.ledger_rows("email_outbox") if r.suppressed} == suppressed
    assert account.find("email", bounced).suppression == "HARD_BOUNCE"  # type: ignore[union-attr]


def test_a_thousand_suppressions_go_as_ten_jobs_polled_together(
    rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    """A job answers "queued" at first; waiting for each of ten jobs in turn would spend ten
    poll schedules. Created back to back and polled together, they wait one."""
    account = KlaviyoModel(API_KEY)  # a job finishes on its second poll
    account.attach(rsps)
    addresses = [f"p{i:04d}@example.com" for i in range(1000)]
    email = klaviyo.build(
        "email", API_KEY, klaviyo.KlaviyoSettings("email"), timeout=(1, 5),
        policy=RetryPolicy(max_attempts=2), sleep=sleeps, clock=sleeps.clock,
    )  # fmt: skip
    assert email.capabilities.max_batch[ChangeKind.SUPPRESS] == 1000
    batch = [Change(ChangeKind.SUPPRESS, str(i), a, a, None, "fp") for i, a in enumerate(addresses)]
    result = email.apply(ChangeKind.SUPPRESS, batch)
    assert {r.outcome for r in result.results} == {Outcome.APPLIED} and len(result.results) == 1000
    assert account.suppressed() == set(addresses)
    creates = [p for m, p in account.calls if m == "POST"]
    assert len(creates) == 10
    assert sum(sleeps.seconds) == 1.5  # one job's poll schedule (0.5 s, then 1 s), not ten
