"""The Salesforce fake itself, through ``responses`` and over real sockets: what a test that
leans on it needs to be true (OAuth refresh and rotation, sessions, the daily quota, the
collections upsert's per-record results, queries by external id)."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import responses

from tests.emulators.salesforce import salesforce_emulator
from tests.fakes.salesforce import SalesforceModel

CLIENT_ID = "3MVG9fake.consumer.key"
SECRET = "consumer-secret"
REFRESH = "5Aep861initial.refresh.token"
LOGIN = "https://login.salesforce.com"
INSTANCE = "https://example.my.salesforce.com"
DATA = "/services/data/v60.0"
TAGS = ["high_ltv_loyalist", "vip", "lapsed"]


def org(**kw: Any) -> SalesforceModel:
    model = SalesforceModel(CLIENT_ID, REFRESH, SECRET, **kw)
    model.add_external_id("Contact")
    model.add_picklist("Contact", "Persona_Tags__c", TAGS)
    return model


def refresh(login: str, refresh_token: str = REFRESH, client_id: str = CLIENT_ID) -> requests.Response:
    form = {"grant_type": "refresh_token", "client_id": client_id, "client_secret": SECRET}
    return requests.post(
        f"{login}/services/oauth2/token", data={**form, "refresh_token": refresh_token}, timeout=5
    )


def token(login: str) -> tuple[str, str]:
    """(access token, instance URL) from a refresh."""
    answer = refresh(login).json()
    return answer["access_token"], answer["instance_url"]


def contact(key: str, tags: str | None = None, **fields: Any) -> dict[str, Any]:
    record = {"attributes": {"type": "Contact"}, "Warehouse_Id__c": key, "LastName": key.title(), **fields}
    return {**record, "Persona_Tags__c": tags} if tags is not None else record


def upsert(
    instance: str,
    access: str,
    records: list[dict[str, Any]],
    all_or_none: bool = False,
    sobject: str = "Contact",
) -> requests.Response:
    return requests.patch(
        f"{instance}{DATA}/composite/sobjects/{sobject}/Warehouse_Id__c",
        json={"allOrNone": all_or_none, "records": records},
        headers={"Authorization": f"Bearer {access}"},
        timeout=5,
    )


def get(instance: str, access: str, path: str, **params: str) -> requests.Response:
    return requests.get(
        f"{instance}{DATA}{path}", params=params, headers={"Authorization": f"Bearer {access}"}, timeout=5
    )


def test_an_upsert_stores_the_good_records_and_refuses_a_bad_picklist_value_alone(
    rsps: responses.RequestsMock,
) -> None:
    model = org()
    model.attach(rsps)
    access, instance = token(LOGIN)
    assert instance == INSTANCE
    model.add_record("Contact", Warehouse_Id__c="wh_2", LastName="Two", Persona_Tags__c="lapsed")

    answer = upsert(instance, access, [
        contact("wh_1", "vip;high_ltv_loyalist"), contact("wh_2", "vip"), contact("wh_3", "vip;champion"),
    ])  # fmt: skip

    assert answer.status_code == 200
    results = answer.json()
    assert [(r["success"], r["created"]) for r in results] == [(True, True), (True, False), (False, False)]
    assert results[0]["id"].startswith("003") and len(results[0]["id"]) == 18
    assert results[2] == {
        "id": None, "success": False, "created": False,
        "errors": [{
            "statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "message": "Persona_Tags__c: bad value for restricted picklist field: champion",
            "fields": ["Persona_Tags__c"],
        }],
    }  # fmt: skip
    assert model.tags() == {"wh_1": frozenset({"vip", "high_ltv_loyalist"}), "wh_2": frozenset({"vip"})}
    assert model.record_by("Contact", "Warehouse_Id__c", "wh_1")["Persona_Tags__c"] == "high_ltv_loyalist;vip"
    assert answer.headers["Sforce-Limit-Info"] == "api-usage=1/100000"
    assert model.token_requests == 1 and model.writes() == 1


def test_more_than_200_records_are_refused_whole(rsps: responses.RequestsMock) -> None:
    model = org()
    model.attach(rsps)
    access, instance = token(LOGIN)
    answer = upsert(instance, access, [contact(f"wh_{i}") for i in range(201)])
    assert answer.status_code == 400
    assert answer.json() == [{
        "message": "record limit reached. cannot submit more than 200 records into this call",
        "errorCode": "EXCEEDED_ID_LIMIT",
    }]  # fmt: skip
    assert model.records["Contact"] == {}
    assert upsert(instance, access, [contact(f"wh_{i}") for i in range(200)]).status_code == 200
    assert len(model.records["Contact"]) == 200


def test_records_fail_one_by_one_or_all_together(rsps: responses.RequestsMock) -> None:
    model = org()
    model.attach(rsps)
    access, instance = token(LOGIN)
    model.add_record("Contact", Warehouse_Id__c="out", LastName="Out", HasOptedOutOfEmail=True)
    model.faults.reject["blocked"] = ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "blocked by a validation rule")
    batch = [
        contact("ok"),
        {"attributes": {"type": "Contact"}, "Warehouse_Id__c": "nameless"},
        contact("typo", Favourite__c="x"),
        contact("blocked"),
        contact("twice"), contact("TWICE"),  # keys match case-insensitively
    ]  # fmt: skip

    rolled_back = upsert(instance, access, batch, all_or_none=True).json()
    assert [e["statusCode"] for r in rolled_back for e in r["errors"]] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK", "REQUIRED_FIELD_MISSING", "INVALID_FIELD",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION", "DUPLICATE_VALUE", "DUPLICATE_VALUE",
    ]  # fmt: skip
    assert rolled_back[1]["errors"][0]["fields"] == ["LastName"]
    assert model.record_by("Contact", "Warehouse_Id__c", "ok") is None

    partial = upsert(instance, access, [*batch, contact("OUT", HasOptedOutOfEmail=False)]).json()
    assert [r["success"] for r in partial] == [True, False, False, False, False, False, True]
    assert partial[6]["created"] is False  # matched "out" case-insensitively
    assert model.opted_out() == set() and model.violations == ["opted back in OUT"]

    model.add_external_id("Lead")
    leads = upsert(
        instance, access, [{**contact("l1"), "attributes": {"type": "Lead"}}, contact("c1")], sobject="Lead"
    )
    assert [r["errors"][0]["statusCode"] for r in leads.json()] == ["REQUIRED_FIELD_MISSING", "INVALID_TYPE"]
    assert leads.json()[0]["errors"][0]["fields"] == ["Company"]


def test_a_rotated_refresh_token_replaces_the_old_one(rsps: responses.RequestsMock) -> None:
    model = org(rotate_refresh_tokens=True)
    model.attach(rsps)
    first = refresh(LOGIN).json()
    assert first["refresh_token"] != REFRESH and first["token_type"] == "Bearer"
    assert {"access_token", "instance_url", "id", "issued_at", "signature", "scope"} <= set(first)

    old = refresh(LOGIN, REFRESH)
    assert old.status_code == 400
    assert old.json() == {"error": "invalid_grant", "error_description": "expired access/refresh token"}
    assert refresh(LOGIN, first["refresh_token"]).status_code == 200
    wrong_client = refresh(LOGIN, model.refresh_token, client_id="someone-else")
    assert wrong_client.json()["error"] == "invalid_client_id"
    assert model.token_requests == 4


def test_expired_sessions_answer_401_until_the_client_refreshes(rsps: responses.RequestsMock) -> None:
    model = org()
    model.attach(rsps)
    access, instance = token(LOGIN)
    assert get(instance, access, "/sobjects/Contact/describe").status_code == 200
    model.expire_sessions()

    expired = get(instance, access, "/sobjects/Contact/describe")
    assert expired.status_code == 401
    assert expired.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert get(instance, "garbage", "/sobjects/Contact/describe").status_code == 401

    model.faults.expire_after = 1
    fresh, _ = token(LOGIN)
    assert get(instance, fresh, "/sobjects/Contact/describe").status_code == 200
    assert get(instance, fresh, "/sobjects/Contact/describe").status_code == 401
    assert model.api_used == 2  # a 401 is not counted


def test_a_session_lasts_session_seconds_on_the_model_clock(rsps: responses.RequestsMock) -> None:
    now = [0.0]
    model = org(session_seconds=7200)
    model.clock = lambda: now[0]
    model.attach(rsps)
    access, instance = token(LOGIN)
    now[0] = 7199.0
    assert get(instance, access, "/sobjects/Contact/describe").status_code == 200
    now[0] = 7200.0
    assert get(instance, access, "/sobjects/Contact/describe").status_code == 401


def test_the_daily_quota_runs_out_with_a_403_and_the_header_counts_up(rsps: responses.RequestsMock) -> None:
    model = org()
    model.daily_limit = 2
    model.attach(rsps)
    access, instance = token(LOGIN)
    usage = [get(instance, access, "/sobjects/Lead/describe").headers["Sforce-Limit-Info"] for _ in range(2)]
    assert usage == ["api-usage=1/2", "api-usage=2/2"]

    refused = get(instance, access, "/sobjects/Lead/describe")
    assert refused.status_code == 403
    assert refused.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=2/2"


def test_a_query_by_external_ids_returns_the_records_page_by_page(rsps: responses.RequestsMock) -> None:
    model = org()
    model.query_page_size = 2
    model.attach(rsps)
    access, instance = token(LOGIN)
    for key in ("wh_1", "wh_2", "o'brien\\x", "other"):
        model.add_record("Contact", Warehouse_Id__c=key, LastName="L", Persona_Tags__c="vip")
    soql = "SELECT Id, warehouse_id__c, Persona_Tags__c FROM Contact WHERE Warehouse_Id__c IN ('WH_1','wh_2', 'o\\'brien\\\\x', 'nobody')"  # noqa: E501

    first = get(instance, access, "/query", q=soql).json()
    assert (first["totalSize"], first["done"], len(first["records"])) == (3, False, 2)
    rest = requests.get(
        instance + first["nextRecordsUrl"], headers={"Authorization": f"Bearer {access}"}, timeout=5
    ).json()
    rows = first["records"] + rest["records"]
    assert rest["done"] is True and "nextRecordsUrl" not in rest
    assert {r["Warehouse_Id__c"] for r in rows} == {"wh_1", "wh_2", "o'brien\\x"}
    assert rows[0]["attributes"] == {"type": "Contact", "url": f"{DATA}/sobjects/Contact/{rows[0]['Id']}"}
    assert rows[0]["Persona_Tags__c"] == "vip"

    malformed = get(instance, access, "/query", q="SELECT Id FROM Contact WHERE Warehouse_Id__c = 'wh_1'")
    assert malformed.status_code == 400 and malformed.json()[0]["errorCode"] == "MALFORMED_QUERY"
    unknown = get(instance, access, "/query", q="SELECT Nope__c FROM Contact WHERE Id IN ('x')")
    assert unknown.json()[0]["errorCode"] == "INVALID_FIELD"


def test_the_emulator_serves_the_token_endpoint_and_the_instance_over_real_sockets() -> None:
    model = org()
    model.faults.drops = 1
    with salesforce_emulator(model, latency=0.0, max_seconds=20) as emulator:
        granted = refresh(emulator.url).json()
        assert granted["instance_url"] == emulator.url
        assert granted["id"].startswith(f"{emulator.url}/id/")
        access, instance = granted["access_token"], granted["instance_url"]
        with pytest.raises(requests.ConnectionError):
            get(instance, access, "/sobjects/Contact/describe")
        described = get(instance, access, "/sobjects/Contact/describe").json()
        stored = upsert(instance, access, [contact("wh_1", "vip"), contact("wh_2", "nope")])
        found = get(instance, access, "/query", q="SELECT Id FROM Contact WHERE Warehouse_Id__c IN ('wh_1')")

    fields = {f["name"]: f for f in described["fields"]}
    assert fields["Warehouse_Id__c"]["externalId"] is True
    assert (
        fields["Persona_Tags__c"]["type"] == "multipicklist"
        and fields["Persona_Tags__c"]["restrictedPicklist"]
    )
    assert [r["success"] for r in stored.json()] == [True, False]
    assert stored.headers["Sforce-Limit-Info"] == "api-usage=2/100000"
    assert found.json()["totalSize"] == 1
    assert model.tags() == {"wh_1": frozenset({"vip"})}
    assert emulator.dropped == 1 and emulator.requests == 5
