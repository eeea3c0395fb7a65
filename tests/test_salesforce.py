"""Salesforce end to end: the engine against a stateful fake org (`responses`): OAuth refresh,
a restricted multi-select picklist, external-ID upserts, the daily quota."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
import responses

from connectors.destinations import salesforce
from connectors.http import RetryPolicy
from sync.exit_codes import ExitCode
from sync.ports import DestinationError, SetupStatus
from tests.fakes.salesforce import SalesforceModel
from tests.fakes.sleeps import Sleeps
from tests.sync_world import World, make_world

CLIENT_ID = "3MVG9sf_client_id_0123456789abcdef"
CLIENT_SECRET = "sf_secret_0123456789abcdef0123456789"
REFRESH_TOKEN = "5Aep861_refresh_0123456789abcdef0123"
LOGIN = "https://login.salesforce.com"
CRM = """
[[destinations]]
type = "salesforce"
name = "crm"
channel = "crm"
client_id = "unused-in-tests"
refresh_token = "unused-in-tests"
"""
TAGS = ("persona:champion", "persona:loyal", "persona:new_customer", "persona:at_risk", "persona:win_back")
ALL_TAGS = (*TAGS, "persona:sms_responder")


def salesforce_world(
    tmp_path: Path,
    rsps: responses.RequestsMock,
    sleeps: Sleeps,
    *,
    refresh_token: str = REFRESH_TOKEN,
    missing: int = 0,
    picklist: tuple[str, ...] = (*ALL_TAGS, "Partner"),
    rotate: bool = False,
    token_file: Path | None = None,
) -> tuple[World, SalesforceModel]:
    """The demo world with a CRM destination on a fake org holding a Contact for every
    customer (but the first ``missing``), matched on Warehouse_Id__c."""
    world = make_world(tmp_path, extra_config=CRM)
    org = SalesforceModel(CLIENT_ID, REFRESH_TOKEN, CLIENT_SECRET, rotate_refresh_tokens=rotate)
    org.add_external_id("Contact", "Warehouse_Id__c")
    org.add_picklist("Contact", "Persona_Tags__c", picklist)
    org.attach(rsps, login_url=LOGIN)
    keys = sorted(_customer_keys(world))
    for key in keys[missing:]:
        org.add_record("Contact", Warehouse_Id__c=key, LastName=f"Customer {key}", Email=f"{key}@example.com")
    world.destinations = {"crm": build(refresh_token, sleeps, token_file)}  # type: ignore[dict-item]
    return world, org


def build(
    refresh_token: str, sleeps: Sleeps, token_file: Path | None = None, tags: tuple[str, ...] = ALL_TAGS
) -> salesforce.SalesforceDestination:
    oauth = salesforce.OAuthSettings(
        CLIENT_ID, refresh_token, CLIENT_SECRET, f"{LOGIN}/services/oauth2/token", token_file
    )
    return salesforce.build(
        "crm", oauth, salesforce.SalesforceSettings(tags=tags), timeout=(1, 5),
        policy=RetryPolicy(max_attempts=4), sleep=sleeps, clock=sleeps.clock,
    )  # fmt: skip


def _customer_keys(world: World) -> list[str]:
    with sqlite3.connect(world.warehouse) as conn:
        return [str(row[0]) for row in conn.execute("SELECT customer_id FROM customers")]


def our_tags(org: SalesforceModel) -> dict[str, frozenset[str]]:
    return {k: t - {"Partner"} for k, t in org.tags().items() if t - {"Partner"}}


def test_tags_and_opt_outs_land_on_the_records_and_a_rerun_writes_nothing(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, org = salesforce_world(tmp_path, rsps, sleeps)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK, summary.as_json()
    tagged, suppressed = world.desired_by_key("crm")
    assert our_tags(org) == tagged and suppressed
    assert org.opted_out() == suppressed
    assert org.violations == [] and org.token_requests == 1
    # each batch of up to 200 records is one query and one upsert
    assert org.writes() * 2 == summary.tallies["crm"].requests > 0

    writes = org.writes()
    assert world.sync().exit_code is ExitCode.OK and org.writes() == writes


def test_a_persona_change_keeps_values_we_do_not_own_and_an_email_change_keeps_the_record(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, org = salesforce_world(tmp_path, rsps, sleeps)
    partner = org.record_by("Contact", "Warehouse_Id__c", "7")
    assert partner is not None
    partner["Persona_Tags__c"] = "Partner"  # set by a sales rep, not by us
    world.sync(allow_large_changes=True)
    world.sql("UPDATE customers SET email = 'moved@new.example.com' WHERE customer_id = 7")
    world.sql(
        "UPDATE customers SET orders_count = orders_count + 5, lifetime_value = lifetime_value + 900, "
        "last_order_date = '2026-10-20' WHERE customer_id % 7 = 0"
    )
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK, summary.as_json()
    assert summary.plans[0]["changes"]["remove_tag"] > 0 and summary.plans[0]["changes"]["add_tag"] > 0
    assert our_tags(org) == world.desired_by_key("crm")[0]
    assert "Partner" in org.tags()["7"]


def test_a_suppressed_customer_is_opted_out_untagged_and_never_opted_back_in(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, org = salesforce_world(tmp_path, rsps, sleeps)
    world.sync(allow_large_changes=True)
    key = sorted(our_tags(org))[0]
    world.sql("INSERT INTO do_not_contact VALUES (?, 'asked', '2026-10-01')", int(key))
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    assert key in org.opted_out() and key not in our_tags(org)
    world.sql("DELETE FROM do_not_contact WHERE customer_id = ?", int(key))
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK
    assert key in org.opted_out() and org.violations == []
    assert our_tags(org).get(key) == world.desired_by_key("crm")[0].get(key)


def test_records_salesforce_does_not_have_or_refuses_are_reported_per_record_never_created(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, org = salesforce_world(tmp_path, rsps, sleeps, missing=3)
    tagged, _ = world.desired_by_key("crm")
    absent = sorted(_customer_keys(world))[:3]
    refused = sorted(set(tagged) - set(absent))[0]
    org.faults.reject[refused] = ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Region must be set")
    records = len(org.records["Contact"])
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.RECORD_FAILURES
    reasons = world.failure_reasons(summary.run_id, by_key=True)
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION: Region must be set" in reasons[refused]
    for key in absent:
        if key in tagged:
            assert "no Contact with Warehouse_Id__c" in reasons[key]
    assert len(org.records["Contact"]) == records  # nothing created
    assert our_tags(org) == {k: t for k, t in tagged.items() if k in org.tags() and k != refused}


def test_an_expired_session_is_refreshed_once_and_the_call_replayed(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, org = salesforce_world(tmp_path, rsps, sleeps)
    org.faults.expire_after = 3  # every session dies after three calls
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK, summary.as_json()
    assert our_tags(org) == world.desired_by_key("crm")[0]
    assert org.token_requests >= 2


def test_a_rotated_refresh_token_is_kept_for_the_next_run(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    token_file = tmp_path / "sf-refresh-token"
    world, org = salesforce_world(tmp_path / "w", rsps, sleeps, rotate=True, token_file=token_file)
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    saved = token_file.read_text().strip()
    assert saved == org.refresh_token != REFRESH_TOKEN  # the one we were given is dead now
    assert token_file.stat().st_mode & 0o077 == 0
    world.sql("UPDATE customers SET orders_count = orders_count + 5 WHERE customer_id % 5 = 0")
    world.destinations = {"crm": build(REFRESH_TOKEN, sleeps, token_file)}  # type: ignore[dict-item]
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK, summary.as_json()
    assert our_tags(org) == world.desired_by_key("crm")[0]


def test_a_refused_refresh_token_stops_the_destination_without_showing_secrets(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    wrong = "5Aep861_wrong_ffffffffffffffffffffffff"
    world, org = salesforce_world(tmp_path, rsps, sleeps, refresh_token=wrong)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.DESTINATION_FATAL
    problem = summary.checks["crm"]
    assert "invalid_grant" in problem
    assert not any(secret in problem for secret in (wrong, CLIENT_SECRET, CLIENT_ID))
    assert org.writes() == 0


def test_the_daily_quota_stops_the_run_at_once_and_the_next_run_finishes(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    world, org = salesforce_world(tmp_path, rsps, sleeps)
    org.daily_limit = 3  # describe, one query, one upsert: then 403 REQUEST_LIMIT_EXCEEDED
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.DESTINATION_FATAL
    fatal = summary.tallies["crm"].fatal or ""
    assert "quota is used up" in fatal and "REQUEST_LIMIT_EXCEEDED" in fatal
    refused = [c for c in org.calls if c[1].startswith("/services/data/")][3:]
    assert len(refused) == 1  # one 403, then stop: no retry loop against the quota
    org.daily_limit = 100_000
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    assert our_tags(org) == world.desired_by_key("crm")[0]


def test_a_warning_is_logged_once_near_the_daily_limit(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    world, org = salesforce_world(tmp_path, rsps, sleeps)
    org.daily_limit, org.api_used = 1000, 950
    with caplog.at_level(logging.WARNING, logger="personasync"):
        assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    warnings = [r.getMessage() for r in caplog.records if "daily API requests" in r.getMessage()]
    assert len(warnings) == 1 and "of its 1000" in warnings[0]


def test_check_and_setup_name_the_exact_fix_for_a_missing_picklist_value(
    rsps: responses.RequestsMock, sleeps: Sleeps
) -> None:
    org = SalesforceModel(CLIENT_ID, REFRESH_TOKEN, CLIENT_SECRET)
    org.add_external_id("Contact", "Warehouse_Id__c")
    org.add_picklist("Contact", "Persona_Tags__c", ALL_TAGS[:-1])
    org.attach(rsps, login_url=LOGIN)
    crm = build(REFRESH_TOKEN, sleeps)
    with pytest.raises(DestinationError, match="lacks the values persona:sms_responder"):
        crm.check()
    steps = crm.setup(dry_run=False)
    assert [s.status for s in steps] == [SetupStatus.OK, SetupStatus.MANUAL, SetupStatus.OK]
    assert (
        "Object Manager > Contact > Fields & Relationships > Persona_Tags__c > Values > New" in steps[1].what
    )
    assert org.writes() == 0  # setup never changes a Salesforce org

    bare = SalesforceModel(CLIENT_ID, REFRESH_TOKEN, CLIENT_SECRET)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as other:
        bare.attach(other, login_url=LOGIN)
        steps = build(REFRESH_TOKEN, sleeps).setup(dry_run=True)
    assert [s.status for s in steps[:2]] == [SetupStatus.MANUAL, SetupStatus.MANUAL]
    assert "create a Text field with API name Warehouse_Id__c" in steps[0].what
    assert "Picklist (Multi-Select) with API name Persona_Tags__c" in steps[1].what


def test_keys_with_quotes_are_escaped_in_soql() -> None:
    assert salesforce.soql_string("o'brien\\x") == "'o\\'brien\\\\x'"


def test_a_rotated_refresh_token_without_a_file_to_keep_it_is_called_out(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    world, org = salesforce_world(tmp_path, rsps, sleeps, rotate=True)
    with caplog.at_level(logging.WARNING, logger="personasync"):
        assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    assert any("set refresh_token_file" in r.getMessage() for r in caplog.records)
    assert org.refresh_token not in caplog.text  # the new token itself is never logged
