"""The contract every destination keeps, run against each one over its stateful fake:

- ``check()`` fails with a clear message, naming the destination, when it cannot be used
  (credentials refused; for files, a folder that cannot be written);
- applying the same batch again changes nothing the vendor holds, and is acknowledged again;
- a record the vendor refuses is reported on its own, with the vendor's reason, and the
  rest of the batch is applied;
- credentials never appear in an exception's text or in a log line.

A new adapter joins by adding a harness below.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import responses

from connectors.destinations import attentive, hubspot, klaviyo, mailchimp, salesforce
from connectors.destinations.file import FileDestination
from connectors.http import RetryPolicy
from sync.changes import Change, ChangeKind
from sync.ports import ChangeResult, Destination, DestinationError, Outcome
from tests.fakes.attentive import AttentiveModel
from tests.fakes.hubspot import HubSpotModel
from tests.fakes.klaviyo import KlaviyoModel
from tests.fakes.mailchimp import MailchimpModel
from tests.fakes.salesforce import SalesforceModel
from tests.fakes.sleeps import Sleeps

MAILCHIMP_KEY = "5ec12e7c0ffee5ec12e7c0ffee5ec12e-us6"
KLAVIYO_KEY = "pk_5ec12e7c0ffee5ec12e7c0ffee5ec12e"
ATTENTIVE_TOKEN = "atn_5ec12e7c0ffee5ec12e7c0ffee5ec12e"
HUBSPOT_TOKEN = "pat-na1-5ec12e7c-0ffe-e5ec-12e7-c0ffee5ec12e"
SALESFORCE_REFRESH = "5Aep8_5ec12e7c0ffee5ec12e7c0ffee5ec12e"
SALESFORCE_CLIENT = "3MVG9_5ec12e7c0ffee5ec12e7c0ffee"
BATCH = 12  # above Klaviyo's one-by-one threshold, so its bulk job path is the one tested


@dataclass
class Harness:
    destination: Destination
    addresses: list[str]
    held: Callable[[], object]  # what the vendor holds now, as a user would look at it
    refuse: Callable[[str], None] | None  # make the vendor refuse this address
    broken: Callable[[], Destination]  # the same destination, unusable (refused key, bad folder)
    secret: str | None


def file_harness(channel: str) -> Callable[[Path, responses.RequestsMock, Sleeps], Harness]:
    def make(tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps) -> Harness:
        folder = tmp_path / "outbox"
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")

        def held() -> object:
            return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.csv"))}

        return Harness(
            FileDestination("files", channel, folder),  # type: ignore[arg-type]
            addresses(channel),
            held,
            None,
            lambda: FileDestination("files", channel, blocker / "outbox"),  # type: ignore[arg-type]
            None,
        )

    return make


def mailchimp_harness(tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps) -> Harness:
    fake = MailchimpModel(MAILCHIMP_KEY)
    fake.attach(rsps)
    fake.add_members(addresses("email"))

    def build(key: str) -> Destination:
        return mailchimp.build(
            "newsletter", key, "aud1", base_url=None, requests_per_second=None, timeout=(1, 5),
            policy=RetryPolicy(max_attempts=3), sleep=sleeps, clock=sleeps.clock,
        )  # fmt: skip

    return Harness(
        build(MAILCHIMP_KEY),
        addresses("email"),
        lambda: (fake.tagged(), fake.with_status("unsubscribed")),
        lambda address: fake.members.pop(address),  # not in the audience: Mailchimp refuses the tag
        lambda: build(MAILCHIMP_KEY.replace("5ec", "bad")),
        MAILCHIMP_KEY,
    )


def klaviyo_harness(channel: str) -> Callable[[Path, responses.RequestsMock, Sleeps], Harness]:
    def make(tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps) -> Harness:
        account = KlaviyoModel(KLAVIYO_KEY)
        account.attach(rsps)
        identifier = "email" if channel == "email" else "phone_number"

        def build(key: str) -> Destination:
            return klaviyo.build(
                "klaviyo", key, klaviyo.KlaviyoSettings(channel), timeout=(1, 5),
                policy=RetryPolicy(max_attempts=3), sleep=sleeps, clock=sleeps.clock,
            )  # fmt: skip

        def refuse(address: str) -> None:
            account.faults.reject[address] = ("invalid", f"{address} is on a blocked-profile rule")

        return Harness(
            build(KLAVIYO_KEY),
            addresses(channel),
            lambda: (account.tagged(identifier=identifier), account.suppressed(), account.sms_unsubscribed()),
            refuse,
            lambda: build(KLAVIYO_KEY.replace("5ec", "bad")),
            KLAVIYO_KEY,
        )

    return make


def attentive_harness(tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps) -> Harness:
    account = AttentiveModel(ATTENTIVE_TOKEN)
    account.attach(rsps)

    def build(token: str) -> Destination:
        return attentive.build(
            "attentive", token, attentive.AttentiveSettings(), timeout=(1, 5),
            policy=RetryPolicy(max_attempts=3), sleep=sleeps, clock=sleeps.clock,
        )  # fmt: skip

    return Harness(
        build(ATTENTIVE_TOKEN),
        addresses("sms"),
        lambda: (account.tagged(), account.unsubscribed(), account.unsubscribe_texts()),
        lambda phone: account.faults.reject.__setitem__(phone, "Phone number is not textable"),
        lambda: build(ATTENTIVE_TOKEN.replace("5ec", "bad")),
        ATTENTIVE_TOKEN,
    )


def hubspot_harness(tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps) -> Harness:
    account = HubSpotModel(HUBSPOT_TOKEN)
    account.attach(rsps)
    account.add_property("personasync_personas", ["persona:champion"])
    account.add_subscription(7, "Newsletter")
    settings = hubspot.HubSpotSettings(tags=("persona:champion",), subscription_id="7")

    def build(token: str) -> Destination:
        return hubspot.build(
            "hubspot", token, settings, timeout=(1, 5), policy=RetryPolicy(max_attempts=3),
            sleep=sleeps, clock=sleeps.clock,
        )  # fmt: skip

    return Harness(
        build(HUBSPOT_TOKEN),
        addresses("email"),
        lambda: (account.tags(), account.unsubscribed(7)),
        lambda email: account.faults.reject.__setitem__(email, "Email address is on a block list"),
        lambda: build(HUBSPOT_TOKEN.replace("5ec", "bad")),
        HUBSPOT_TOKEN,
    )


def salesforce_harness(tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps) -> Harness:
    org = SalesforceModel(SALESFORCE_CLIENT, SALESFORCE_REFRESH)
    org.add_external_id("Contact", "Warehouse_Id__c")
    org.add_picklist("Contact", "Persona_Tags__c", ["persona:champion"])
    org.attach(rsps)
    emails = addresses("crm")
    for key, email in enumerate(emails):
        org.add_record("Contact", Warehouse_Id__c=str(key), LastName="Doe", Email=email)

    def build(refresh_token: str) -> Destination:
        oauth = salesforce.OAuthSettings(SALESFORCE_CLIENT, refresh_token)
        settings = salesforce.SalesforceSettings(tags=("persona:champion",))
        return salesforce.build(
            "salesforce", oauth, settings, timeout=(1, 5), policy=RetryPolicy(max_attempts=3),
            sleep=sleeps, clock=sleeps.clock,
        )  # fmt: skip

    def refuse(email: str) -> None:
        org.faults.reject[str(emails.index(email))] = (
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "Region is required",
        )

    return Harness(
        build(SALESFORCE_REFRESH),
        emails,
        lambda: (org.tags(), org.opted_out()),
        refuse,
        lambda: build(SALESFORCE_REFRESH.replace("5ec", "bad")),
        SALESFORCE_REFRESH,
    )


HARNESSES = {
    "file-email": file_harness("email"),
    "file-sms": file_harness("sms"),
    "mailchimp": mailchimp_harness,
    "klaviyo-email": klaviyo_harness("email"),
    "klaviyo-sms": klaviyo_harness("sms"),
    "attentive": attentive_harness,
    "hubspot": hubspot_harness,
    "salesforce": salesforce_harness,
}


def addresses(channel: str) -> list[str]:
    if channel == "sms":
        return [f"+1500555{i:04d}" for i in range(BATCH)]
    return [f"person{i}@example.com" for i in range(BATCH)]


def changes(kind: ChangeKind, harness: Harness, tag: str | None = "persona:champion") -> list[Change]:
    email_channel = "@" in harness.addresses[0]
    return [
        Change(
            kind,
            str(i),
            address,
            address if email_channel else None,
            None if email_channel else address,
            f"fp{i}",
            tag if kind in (ChangeKind.ADD_TAG, ChangeKind.REMOVE_TAG) else None,
            (),
        )
        for i, address in enumerate(harness.addresses)
    ]


def apply_in_batches(destination: Destination, kind: ChangeKind, todo: list[Change]) -> list[ChangeResult]:
    """As the engine does: batches no larger than the destination takes, none refused whole."""
    size = destination.capabilities.max_batch[kind]
    results: list[ChangeResult] = []
    for start in range(0, len(todo), size):
        result = destination.apply(kind, todo[start : start + size])
        assert result.batch_error is None
        results.extend(result.results)
    return results


@pytest.fixture(params=sorted(HARNESSES))
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, rsps: responses.RequestsMock, sleeps: Sleeps
) -> Harness:
    return HARNESSES[request.param](tmp_path, rsps, sleeps)


def test_check_fails_clearly_when_the_destination_cannot_be_used(harness: Harness) -> None:
    harness.destination.check()  # the working one passes
    broken = harness.broken()
    with pytest.raises(DestinationError) as failure:
        broken.check()
    message = str(failure.value)
    assert message.startswith(f"{broken.name}: ")
    assert any(word in message for word in ("refused the API key", "cannot create or write"))


@pytest.mark.parametrize(
    "kinds", [(ChangeKind.ADD_TAG,), (ChangeKind.SUPPRESS,), (ChangeKind.ADD_TAG, ChangeKind.REMOVE_TAG)]
)
def test_applying_the_same_batch_again_changes_nothing(
    harness: Harness, kinds: tuple[ChangeKind, ...]
) -> None:
    capabilities = harness.destination.capabilities
    if any(kind in capabilities.at_most_once for kind in kinds):
        pytest.skip("sent at most once: the engine never sends it again (tests/test_sync_engine.py)")

    def apply_all() -> None:
        for kind in kinds:
            outcomes = [
                r.outcome for r in apply_in_batches(harness.destination, kind, changes(kind, harness))
            ]
            assert outcomes == [Outcome.APPLIED] * BATCH

    apply_all()
    once = harness.held()
    apply_all()
    assert harness.held() == once


def test_a_refused_record_is_reported_alone_with_the_vendors_reason(harness: Harness) -> None:
    if harness.refuse is None:
        pytest.skip("a CSV file takes every record")
    refused = harness.addresses[3]
    harness.refuse(refused)
    results = apply_in_batches(harness.destination, ChangeKind.ADD_TAG, changes(ChangeKind.ADD_TAG, harness))
    outcomes = {r.change.address: r for r in results}
    assert outcomes[refused].outcome is Outcome.PERMANENT and outcomes[refused].reason
    assert all(outcomes[a].outcome is Outcome.APPLIED for a in harness.addresses if a != refused)


def test_credentials_never_reach_an_exception_or_a_log_line(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    if harness.secret is None:
        pytest.skip("no credentials")
    caplog.set_level(logging.DEBUG)
    broken = harness.broken()
    texts = []
    for attempt in (
        broken.check,
        lambda: broken.apply(ChangeKind.ADD_TAG, changes(ChangeKind.ADD_TAG, harness)),
    ):
        with pytest.raises(DestinationError) as failure:
            attempt()
        texts += [str(failure.value), repr(failure.value), str(failure.value.__cause__ or "")]
    wrong_key = harness.secret.replace("5ec", "bad")
    logged = caplog.text
    for secret in (wrong_key, harness.secret):
        assert all(secret not in text for text in texts)
        assert secret not in logged
