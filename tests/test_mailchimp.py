"""Mailchimp end to end: the engine against a stateful fake audience (`responses`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import responses

from connectors.destinations import mailchimp
from connectors.http import RetryPolicy
from sync import app
from sync.exit_codes import ExitCode
from tests.fakes.mailchimp import MailchimpModel
from tests.fakes.sleeps import Sleeps
from tests.sync_world import World, make_world

API_KEY = "0123456789abcdef0123456789abcdef-us6"


def mailchimp_world(tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, api_key: str = API_KEY
                    ) -> tuple[World, MailchimpModel]:  # fmt: skip
    world = make_world(tmp_path)
    fake = MailchimpModel(API_KEY)
    fake.attach(rsps)
    tagged, suppressed = world.desired("email_outbox")
    fake.add_members(sorted(tagged) + sorted(suppressed)[: len(suppressed) // 2])  # some suppressed are new
    world.destinations = {
        "email_outbox": mailchimp.build(  # type: ignore[dict-item]
            "email_outbox", api_key, "aud1", base_url=None, requests_per_second=None, timeout=(1, 5),
            policy=RetryPolicy(max_attempts=4), sleep=sleeps, clock=sleeps.clock,
        )
    }  # fmt: skip
    return world, fake


def test_tags_and_suppressions_land_and_a_rerun_writes_nothing(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, fake = mailchimp_world(tmp_path, rsps, sleeps)
    subscribed_before = fake.with_status("subscribed")
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK, summary.as_json()["destinations"][0]["result"]
    tagged, suppressed = world.desired("email_outbox")
    assert fake.tagged() == tagged
    assert fake.with_status("unsubscribed") == suppressed
    assert fake.with_status("subscribed") <= subscribed_before  # we never subscribe anyone
    assert fake.violations == []
    assert all(len(tag) for tag in fake.segments.values())

    writes = fake.writes()
    again = world.sync()
    assert again.exit_code is ExitCode.OK and fake.writes() == writes


def test_consent_revoked_means_unsubscribed_and_untagged_next_run(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, fake = mailchimp_world(tmp_path, rsps, sleeps)
    world.sync(allow_large_changes=True)
    address = sorted(fake.tagged())[0]
    world.sql("UPDATE customers SET email_opt_in = 0 WHERE lower(trim(email)) = ?", address)
    assert world.sync().exit_code is ExitCode.OK
    assert fake.members[address].status == "unsubscribed" and fake.members[address].tags == set()
    world.sql("UPDATE customers SET email_opt_in = 1 WHERE lower(trim(email)) = ?", address)
    summary = world.sync()
    assert summary.plans[0]["changes"]["unsuppress"] == 0  # irreversible in Mailchimp: never lifted
    assert fake.members[address].status == "unsubscribed" and fake.violations == []


def test_a_cleaned_member_is_never_touched_by_a_suppression(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, fake = mailchimp_world(tmp_path, rsps, sleeps)
    _, suppressed = world.desired("email_outbox")
    bounced = sorted(suppressed)[0]
    fake.members[bounced].status = "cleaned"
    world.sync(allow_large_changes=True)
    assert fake.members[bounced].status == "cleaned" and fake.violations == []


@pytest.mark.parametrize("listed", [False, True], ids=["ignored-as-the-spec-says", "listed-in-errors"])
def test_people_not_in_the_audience_are_reported_per_record_not_subscribed(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, listed: bool
) -> None:
    """Mailchimp's spec says a tag call ignores non-members; whether it also lists them in
    ``errors`` is not documented. Either way the outsider is reported, never claimed tagged."""
    world, fake = mailchimp_world(tmp_path, rsps, sleeps)
    fake.non_members_in_errors = listed
    tagged, _ = world.desired("email_outbox")
    outsider = sorted(tagged)[1]
    del fake.members[outsider]
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.RECORD_FAILURES
    assert outsider not in fake.members  # not created, and certainly not subscribed
    assert all(row.address != outsider or not row.tags for row in world.ledger_rows("email_outbox"))
    details = app.run_details(world.config, summary.run_id or 0)
    assert details is not None
    assert {f.address for f in details.failures} == {outsider}
    assert details.failures[0].reason and details.failures[0].reason.startswith("not_in_audience")


def test_429s_are_waited_out_as_asked_and_5xx_bursts_retried(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, fake = mailchimp_world(tmp_path, rsps, sleeps)
    fake.faults.throttle, fake.faults.retry_after = 2, "2"
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK
    assert sleeps.seconds[:2] == [2.0, 2.0]
    fake.faults.errors_5xx = 2
    world.sql("UPDATE customers SET email_opt_in = 0 WHERE customer_id % 50 = 0")
    assert world.sync().exit_code is ExitCode.OK
    assert fake.tagged() == world.desired("email_outbox")[0]


def test_a_refused_key_stops_the_destination_with_a_clear_message_and_no_secret(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    wrong_key = "ffffffffffffffffffffffffffffffff-us6"
    world, fake = mailchimp_world(tmp_path, rsps, sleeps, api_key=wrong_key)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.DESTINATION_FATAL
    problem = summary.checks["email_outbox"]
    assert "refused the API key" in problem and wrong_key not in problem
    assert fake.writes() == 0


def test_the_data_centre_comes_from_the_key() -> None:
    assert mailchimp.data_centre(API_KEY) == "us6"
    with pytest.raises(ValueError, match="data centre"):
        mailchimp.data_centre("nodatacentre")
