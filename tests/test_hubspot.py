"""HubSpot end to end: the engine against a stateful fake account (`responses`): a
multiple-checkbox property, multi-status upserts, lists, subscription statuses, the
10-second and daily limits; `destinations setup` creating the property."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import responses
from typer.testing import CliRunner

from connectors.destinations import hubspot
from connectors.http import RetryPolicy
from sync.cli import cli
from sync.destinations import destination_tags
from sync.exit_codes import ExitCode
from sync.ports import DestinationError, SetupStatus
from tests.fakes.hubspot import HubSpotModel
from tests.fakes.sleeps import Sleeps
from tests.sync_world import World, make_world

TOKEN = "pat-na1-5ec12e7c-0ffe-e5ec-12e7-c0ffee5ec12e"
SUBSCRIPTION = 1234
HUBSPOT = """
[[destinations]]
type = "hubspot"
name = "hubspot"
channel = "email"
access_token = "${HUBSPOT_TEST_TOKEN}"
subscription_id = "1234"
"""
CHAMPION = "persona:champion"


def hubspot_world(
    tmp_path: Path,
    rsps: responses.RequestsMock,
    sleeps: Sleeps,
    monkeypatch: pytest.MonkeyPatch,
    *,
    token: str = TOKEN,
    extra: str = "",
    with_property: bool = True,
) -> tuple[World, HubSpotModel]:
    """The demo world with an email destination on a fake HubSpot account that holds the
    tag property (every option) and a marketing subscription type; half the customers are
    contacts already."""
    monkeypatch.setenv("HUBSPOT_TEST_TOKEN", token)
    world = make_world(tmp_path, extra_config=HUBSPOT + extra)
    account = HubSpotModel(TOKEN)
    account.attach(rsps)
    account.add_subscription(SUBSCRIPTION, "Marketing newsletter")
    tags = destination_tags(world.config.destinations[-1], world.config.personas)
    if with_property:
        account.add_property("personasync_personas", [*tags, "partner_program"])
    world.destinations = {"hubspot": build(world, token, sleeps)}  # type: ignore[dict-item]
    tagged, suppressed = world.desired("hubspot")
    for email in sorted(tagged)[::2] + sorted(suppressed)[::2]:
        account.add_contact(email)
    return world, account


def build(world: World, token: str, sleeps: Sleeps) -> hubspot.HubSpotDestination:
    config = world.config.destinations[-1]
    naming = config.naming()
    tags = destination_tags(config, world.config.personas)
    settings = hubspot.HubSpotSettings(
        tags=tuple(tags),
        tag_labels=tags,
        primary_values={naming.tag(p): v for p, v in getattr(config, "hs_persona", {}).items()},
        lists={naming.tag(p): i for p, i in getattr(config, "lists", {}).items()},
        subscription_id=str(SUBSCRIPTION),
    )
    return hubspot.build(
        "hubspot", token, settings, timeout=(1, 5), policy=RetryPolicy(max_attempts=4),
        sleep=sleeps, clock=sleeps.clock,
    )  # fmt: skip


def our_tags(account: HubSpotModel) -> dict[str, frozenset[str]]:
    return {e: t - {"partner_program"} for e, t in account.tags().items() if t - {"partner_program"}}


def test_tags_and_unsubscribes_land_and_a_rerun_writes_nothing(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, account = hubspot_world(tmp_path, rsps, sleeps, monkeypatch)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK, summary.as_json()
    tagged, suppressed = world.desired("hubspot")
    assert our_tags(account) == tagged
    assert account.unsubscribed(SUBSCRIPTION) == suppressed != set()
    assert account.violations == []

    writes = account.writes()
    assert world.sync().exit_code is ExitCode.OK and account.writes() == writes


def test_a_persona_change_keeps_values_we_do_not_own_and_an_identity_change_moves_the_tags(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, account = hubspot_world(tmp_path, rsps, sleeps, monkeypatch)
    world.sync(allow_large_changes=True)
    partner = sorted(our_tags(account))[0]
    contact = account.contact(partner)
    assert contact is not None
    contact.properties["personasync_personas"] += ";partner_program"  # ticked by a sales rep
    world.sql("UPDATE customers SET email = 'moved@new.example.com' WHERE customer_id = 7")
    world.sql(
        "UPDATE customers SET orders_count = orders_count + 5, lifetime_value = lifetime_value + 900, "
        "last_order_date = '2026-10-20' WHERE customer_id % 7 = 0"
    )
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK, summary.as_json()
    assert summary.plans[0]["changes"]["remove_tag"] > 0 and summary.plans[0]["changes"]["add_tag"] > 0
    assert our_tags(account) == world.desired("hubspot")[0]
    assert "partner_program" in account.tags()[partner]


def test_consent_revoked_unsubscribes_and_untags_and_is_never_given_back(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, account = hubspot_world(tmp_path, rsps, sleeps, monkeypatch)
    world.sync(allow_large_changes=True)
    email = sorted(our_tags(account))[0]
    world.sql("UPDATE customers SET email_opt_in = 0 WHERE email = ?", email)
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    assert email in account.unsubscribed(SUBSCRIPTION) and email not in our_tags(account)
    world.sql("UPDATE customers SET email_opt_in = 1 WHERE email = ?", email)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK
    assert summary.plans[0]["changes"]["unsuppress"] == 0
    assert account.status(email, SUBSCRIPTION) == "UNSUBSCRIBED" and account.violations == []


def test_contacts_hubspot_refuses_are_reported_with_its_reason_and_the_rest_applied(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, account = hubspot_world(tmp_path, rsps, sleeps, monkeypatch)
    tagged, suppressed = world.desired("hubspot")
    refused_tag, refused_unsubscribe = sorted(tagged)[5], sorted(suppressed)[1]
    account.faults.reject[refused_tag] = "Email address is on the account's block list"
    account.faults.reject[refused_unsubscribe] = "Contact is in a GDPR deletion request"
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.RECORD_FAILURES
    reasons = world.failure_reasons(summary.run_id)
    assert "block list" in reasons[refused_tag] and "GDPR deletion" in reasons[refused_unsubscribe]
    assert our_tags(account) == {e: t for e, t in tagged.items() if e != refused_tag}
    assert account.unsubscribed(SUBSCRIPTION) == suppressed - {refused_unsubscribe}
    del account.faults.reject[refused_tag], account.faults.reject[refused_unsubscribe]
    assert world.sync(retry_failed=True).exit_code is ExitCode.OK
    assert our_tags(account) == tagged


def test_the_ten_second_limit_is_waited_out_and_the_daily_limit_stops_at_once(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, account = hubspot_world(tmp_path, rsps, sleeps, monkeypatch)
    account.faults.throttle = 3
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.OK, summary.as_json()
    assert our_tags(account) == world.desired("hubspot")[0]

    world.sql("UPDATE customers SET orders_count = orders_count + 5 WHERE customer_id % 5 = 0")
    account.faults.daily_exhausted = True
    calls = len(account.calls)
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.DESTINATION_FATAL
    assert "quota is used up" in summary.checks["hubspot"] and "DAILY" in summary.checks["hubspot"]
    assert len(account.calls) == calls + 1  # one refused call, no retry loop
    account.faults.daily_exhausted = False
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    assert our_tags(account) == world.desired("hubspot")[0]


def test_persona_lists_and_hs_persona_follow_the_tags(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = 'lists = { champion = "41" }\nhs_persona = { champion = "persona_1", loyal = "persona_2" }\n'
    world, account = hubspot_world(tmp_path, rsps, sleeps, monkeypatch, extra=extra)
    account.add_list("41")
    account.add_property("hs_persona", ["persona_1", "persona_2", "persona_3"], field_type="select")
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    tagged = world.desired("hubspot")[0]
    champions = {e for e, t in tagged.items() if CHAMPION in t}
    assert account.list_members("41") == champions != set()
    primary = {
        c.email: c.properties.get("hs_persona") for c in account.contacts.values() if c.email in tagged
    }
    assert {e for e, v in primary.items() if v == "persona_1"} == champions

    lost = sorted(champions)[0]
    world.sql("UPDATE customers SET orders_count = 0, last_order_date = NULL WHERE email = ?", lost)
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    assert lost not in account.list_members("41")
    contact = account.contact(lost)
    assert contact is not None and not contact.properties.get("hs_persona")


def test_check_names_the_missing_property_and_setup_creates_it(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, account = hubspot_world(tmp_path, rsps, sleeps, monkeypatch, with_property=False)
    destination = world.destinations["hubspot"]
    with pytest.raises(DestinationError, match="personasync destinations setup --destination hubspot"):
        destination.check()  # type: ignore[attr-defined]
    steps = destination.setup(dry_run=True)  # type: ignore[attr-defined]
    assert steps[0].status is SetupStatus.WOULD_DO and account.writes() == 0
    steps = destination.setup(dry_run=False)  # type: ignore[attr-defined]
    assert steps[0].status is SetupStatus.DONE
    created = account.properties["personasync_personas"]
    assert created["fieldType"] == "checkbox"
    assert {o["value"] for o in created["options"]} == set(
        destination_tags(world.config.destinations[-1], world.config.personas)
    )
    destination.check()  # type: ignore[attr-defined]


def test_setup_adds_missing_options_and_keeps_the_ones_there(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, account = hubspot_world(tmp_path, rsps, sleeps, monkeypatch, with_property=False)
    account.add_property("personasync_personas", [CHAMPION, "partner_program"])
    steps = world.destinations["hubspot"].setup(dry_run=False)  # type: ignore[attr-defined]
    assert steps[0].status is SetupStatus.DONE and "persona:loyal" in steps[0].what
    values = [o["value"] for o in account.properties["personasync_personas"]["options"]]
    assert values[:2] == [CHAMPION, "partner_program"] and "persona:win_back" in values


def test_the_setup_command_reports_what_it_would_do_and_then_does_it(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, account = hubspot_world(tmp_path, rsps, sleeps, monkeypatch, with_property=False)
    config = str(world.folder / "personasync.toml")
    runner = CliRunner()
    dry = runner.invoke(cli, ["destinations", "setup", "--config", config, "-d", "hubspot", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would do  contact property 'personasync_personas' is missing" in dry.output
    assert "nothing was changed" in dry.output and account.writes() == 0
    done = runner.invoke(cli, ["destinations", "setup", "--config", config, "-d", "hubspot"])
    assert done.exit_code == 0, done.output
    assert "done      created contact property 'personasync_personas'" in done.output
    assert TOKEN not in dry.output + done.output
    again = runner.invoke(cli, ["destinations", "setup", "--config", config, "-d", "hubspot"])
    assert again.exit_code == 0 and "ok        contact property" in again.output
    files = runner.invoke(cli, ["destinations", "setup", "--config", config, "-d", "email_outbox"])
    assert files.exit_code == int(ExitCode.CONFIG) and "nothing to set up" in files.output


def test_a_missing_subscription_type_is_a_manual_step_with_the_exit_code_for_it(
    tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, account = hubspot_world(tmp_path, rsps, sleeps, monkeypatch)
    account.subscriptions.clear()
    result = CliRunner().invoke(
        cli, ["destinations", "setup", "--config", str(world.folder / "personasync.toml"), "-d", "hubspot"]
    )
    assert result.exit_code == int(ExitCode.DESTINATION_FATAL)
    assert "manual    no email subscription type with id '1234'" in result.output


def test_a_warning_is_logged_once_when_the_daily_limit_runs_low(
    tmp_path: Path,
    rsps: responses.RequestsMock,
    sleeps: Sleeps,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world, account = hubspot_world(tmp_path, rsps, sleeps, monkeypatch)
    account.daily_limit, account.daily_used = 1000, 970  # 3 % left, shared with every app
    with caplog.at_level(logging.WARNING, logger="personasync"):
        assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    warnings = [r.getMessage() for r in caplog.records if "daily API limit" in r.getMessage()]
    assert len(warnings) == 1 and "of 1000 left" in warnings[0]
