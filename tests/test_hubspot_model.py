"""The HubSpot fake itself, through ``responses`` and over real sockets: the rules an
adapter has to live with, checked once here so adapter tests can rely on them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses

from tests.emulators.hubspot import hubspot_emulator
from tests.fakes.hubspot import BASE_URL, HubSpotModel

TOKEN = "pat-na1-00000000-0000-0000-0000-000000000000"
PERSONAS = "personasync_personas"
UPSERT = "/crm/v3/objects/contacts/batch/upsert"
READ = "/crm/v3/objects/contacts/batch/read"
Account = tuple[HubSpotModel, str]


@pytest.fixture(params=["responses", "sockets"])
def account(request: pytest.FixtureRequest) -> Iterator[Account]:
    """A model with a persona property, served through ``responses`` or the emulator."""
    model = HubSpotModel(TOKEN)
    model.add_property(PERSONAS, ["champion", "churn_risk", "vip"])
    if request.param == "responses":
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            model.attach(rsps)
            yield model, BASE_URL
    else:
        with hubspot_emulator(model, latency=0.0, max_seconds=20) as emulator:
            yield model, emulator.url


def call(base: str, method: str, path: str, body: Any = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return requests.request(method, base + path, json=body, headers=headers, timeout=5)


def upsert(email: str, personas: str, trace: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"id": email, "idProperty": "email", "properties": {PERSONAS: personas}}
    return {**item, "objectWriteTraceId": trace} if trace else item


def test_with_trace_ids_a_bad_option_answers_207_and_only_the_good_contacts_change(account: Account) -> None:
    model, base = account
    model.add_contact("old@example.com", **{PERSONAS: "vip"})
    inputs = [
        upsert("Old@Example.com", "champion;vip", "t1"),
        upsert("bad@example.com", "champion;astronaut", "t2"),
        upsert("new@example.com", "churn_risk", "t3"),
    ]
    answer = call(base, "POST", UPSERT, {"inputs": inputs})
    assert answer.status_code == 207
    body = answer.json()
    assert {(r["properties"]["email"], r["new"], r["objectWriteTraceId"]) for r in body["results"]} == {
        ("old@example.com", False, "t1"),
        ("new@example.com", True, "t3"),
    }
    assert body["numErrors"] == 1
    [error] = body["errors"]
    assert error["category"] == "VALIDATION_ERROR" and error["context"] == {"objectWriteTraceId": ["t2"]}
    assert "astronaut was not one of the allowed options" in error["message"]
    assert model.tags(PERSONAS) == {
        "old@example.com": frozenset({"champion", "vip"}),
        "new@example.com": frozenset({"churn_risk"}),
    }
    assert model.contact("bad@example.com") is None


def test_without_trace_ids_one_bad_input_refuses_the_whole_batch(account: Account) -> None:
    model, base = account
    inputs = [upsert("a@example.com", "vip"), upsert("not-an-email", "vip"), upsert("b@example.com", "nope")]
    answer = call(base, "POST", UPSERT, {"inputs": inputs})
    assert answer.status_code == 400
    body = answer.json()
    assert body["category"] == "VALIDATION_ERROR" and body["status"] == "error" and body["correlationId"]
    assert "not-an-email" in body["message"] and "nope" not in body["message"]  # the first bad input only
    assert model.contacts == {} and model.writes() == 1


def test_a_batch_read_of_a_missing_email_answers_207_naming_it(account: Account) -> None:
    model, base = account
    known = model.add_contact("known@example.com", **{PERSONAS: "vip"})
    document = {
        "idProperty": "email",
        "inputs": [{"id": "known@example.com"}, {"id": "gone@example.com"}],
        "properties": [PERSONAS, "firstname", "no_such_property"],
        "propertiesWithHistory": [],
    }
    answer = call(base, "POST", READ, document)
    assert answer.status_code == 207
    body = answer.json()
    [found] = body["results"]
    assert found["id"] == known.id and found["archived"] is False
    assert found["properties"] == {
        PERSONAS: "vip",
        "firstname": None,  # defined but unset; unknown names are left out
        "email": "known@example.com",
        "hs_object_id": known.id,
        "createdate": known.created_at,
        "lastmodifieddate": known.updated_at,
    }
    assert body["numErrors"] == 1 and body["status"] == "COMPLETE"
    [error] = body["errors"]
    assert error["category"] == "OBJECT_NOT_FOUND" and error["context"] == {"ids": ["gone@example.com"]}
    assert model.writes() == 0  # a batch read is a POST, but not a write

    del document["propertiesWithHistory"]  # required by the spec
    assert call(base, "POST", READ, document).status_code == 400


def test_the_101st_input_is_refused(account: Account) -> None:
    model, base = account
    inputs = [upsert(f"p{i}@example.com", "vip") for i in range(101)]
    answer = call(base, "POST", UPSERT, {"inputs": inputs})
    assert answer.status_code == 400 and "at most 100" in answer.json()["message"]
    assert call(base, "POST", UPSERT, {"inputs": inputs[:100]}).status_code == 200
    reads = {"inputs": [{"id": i["id"]} for i in inputs], "properties": [], "propertiesWithHistory": []}
    assert call(base, "POST", READ, {**reads, "idProperty": "email"}).status_code == 400
    assert len(model.contacts) == 100


def test_a_daily_429_names_its_policy_and_empties_the_daily_header(account: Account) -> None:
    model, base = account
    model.faults.daily_exhausted = True
    answer = call(base, "GET", f"/crm/v3/properties/contacts/{PERSONAS}")
    assert answer.status_code == 429
    body = answer.json()
    assert body["policyName"] == "DAILY" and body["errorType"] == "RATE_LIMIT"
    assert body["message"] == "You have reached your daily limit."
    assert body["status"] == "error" and body["correlationId"] and body["requestId"]
    assert answer.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
    assert answer.headers["X-HubSpot-RateLimit-Daily"] == "650000"
    assert "Retry-After" not in answer.headers


def test_list_memberships_and_subscription_statuses(account: Account) -> None:
    model, base = account
    ada, bob = model.add_contact("ada@example.com"), model.add_contact("bob@example.com")
    model.add_list(7).members.add(bob.id)
    model.add_list(8, processing_type="DYNAMIC")
    change = {"recordIdsToAdd": [ada.id, bob.id, "999"], "recordIdsToRemove": [bob.id]}
    answer = call(base, "PUT", "/crm/v3/lists/7/memberships/add-and-remove", change)
    assert answer.json() == {
        "recordIdsMissing": ["999"],
        "recordsIdsAdded": [ada.id],  # sic: the schema's spelling
        "recordIdsRemoved": [bob.id],
    }
    assert model.list_members(7) == {"ada@example.com"}
    assert call(base, "PUT", "/crm/v3/lists/8/memberships/add-and-remove", change).status_code == 400

    model.add_subscription(123, "Marketing")
    basis = {"channel": "EMAIL", "legalBasis": "LEGITIMATE_INTEREST_CLIENT", "legalBasisExplanation": "x"}
    inputs = [
        {**basis, "subscriberIdString": email, "statusState": state, "subscriptionId": subscription}
        for email, state, subscription in (
            ("ada@example.com", "UNSUBSCRIBED", 123),
            ("bob@example.com", "SUBSCRIBED", 123),
            ("cy@example.com", "UNSUBSCRIBED", 9),  # no such subscription type
        )
    ]
    answer = call(base, "POST", "/communication-preferences/v4/statuses/batch/write", {"inputs": inputs})
    assert answer.status_code == 200  # the spec declares only 200: failures are inside
    body = answer.json()
    assert [r["subscriberIdString"] for r in body["results"]] == ["ada@example.com", "bob@example.com"]
    assert [e["context"] for e in body["errors"]] == [{"subscriberIdString": ["cy@example.com"]}]
    assert model.unsubscribed(123) == {"ada@example.com"}
    assert model.status("bob@example.com", 123) == "SUBSCRIBED"  # applied, as HubSpot would
    assert model.violations == ["subscribed bob@example.com"]
    definitions = call(base, "GET", "/communication-preferences/v4/definitions").json()["results"]
    assert [(d["id"], d["name"]) for d in definitions] == [("123", "Marketing")]


def test_patching_options_replaces_the_whole_list(account: Account) -> None:
    _, base = account
    path = f"/crm/v3/properties/contacts/{PERSONAS}"
    options = [{"label": "Champion", "value": "champion", "hidden": False}]
    assert call(base, "PATCH", path, {"options": options}).status_code == 200
    assert [o["value"] for o in call(base, "GET", path).json()["options"]] == ["champion"]
    twice = {"options": options * 2}
    assert call(base, "PATCH", path, twice).status_code == 400  # option values must be unique
    again = {"name": PERSONAS, "label": "P", "type": "enumeration", "fieldType": "checkbox", "groupName": "g"}
    assert call(base, "POST", "/crm/v3/properties/contacts", {**again, "options": []}).status_code == 409
    assert call(base, "GET", "/crm/v3/properties/contacts/nothing").json()["category"] == "OBJECT_NOT_FOUND"
    refused = requests.get(base + path, headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert refused.status_code == 401 and refused.json()["category"] == "INVALID_AUTHENTICATION"
    assert refused.headers["X-HubSpot-RateLimit-Max"] == "190"


def test_the_emulator_allows_190_requests_in_any_ten_seconds() -> None:
    model = HubSpotModel(TOKEN)
    with hubspot_emulator(model, latency=0.0, max_seconds=20) as emulator, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        url = f"{emulator.url}/crm/v3/properties/contacts/email"
        answers = [session.get(url, timeout=5) for _ in range(200)]
    throttled = [a for a in answers if a.status_code == 429]
    assert len(throttled) == 10 and emulator.throttled == 10 and len(model.calls) == 190
    assert [a.status_code for a in answers[:190]] == [200] * 190
    for answer in throttled:
        assert json.loads(answer.text)["policyName"] == "TEN_SECONDLY_ROLLING"
        assert answer.json()["message"] == "You have reached your ten_secondly_rolling limit."
        assert answer.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        assert "Retry-After" not in answer.headers
    assert answers[0].headers["X-HubSpot-RateLimit-Remaining"] == "189"
