"""The HTTP core: classify, the retry policy, the rate limiter, redaction. Against
`responses`, with a fake clock: nothing here really sleeps."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
import requests
import responses

from connectors.http import (
    ApiClient,
    AuthError,
    PermanentError,
    QuotaExhausted,
    RateLimiter,
    RetriesExhausted,
    RetryPolicy,
    UnknownOutcome,
    Verdict,
    classify,
    wait_from_headers,
)

BASE = "https://api.vendor.test"
NOW = 1_800_000_000.0  # a fixed "time.time()" for header arithmetic


class FakeClock:
    """A monotonic clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


def response(status: int, body: object = None, headers: dict[str, str] | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    r.headers.update(headers or {})
    return r


@pytest.mark.parametrize(
    ("status", "body", "idempotent", "verdict"),
    [
        (200, {}, True, Verdict.SUCCESS),
        (207, {"results": []}, False, Verdict.SUCCESS),
        (429, {}, False, Verdict.RETRY),
        # HubSpot: the daily limit is a 429 whose policyName says DAILY (vendor-apis.md §12)
        (429, {"errorType": "RATE_LIMIT", "policyName": "DAILY"}, True, Verdict.QUOTA_EXHAUSTED),
        (429, {"errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}, True, Verdict.RETRY),
        # Salesforce: the org quota is a 403 with REQUEST_LIMIT_EXCEEDED (vendor-apis.md §13)
        (403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], True,
         Verdict.QUOTA_EXHAUSTED),
        (403, {"detail": "forbidden"}, True, Verdict.AUTH),
        (401, {}, True, Verdict.AUTH),
        (400, {"errors": [{"detail": "bad payload"}]}, True, Verdict.PERMANENT),
        (404, {}, False, Verdict.PERMANENT),
        (503, {}, False, Verdict.RETRY),
        (500, {}, True, Verdict.RETRY),
        (500, {}, False, Verdict.UNKNOWN),
        (504, {}, False, Verdict.UNKNOWN),
    ],
)  # fmt: skip
def test_classify_table(status: int, body: object, idempotent: bool, verdict: Verdict) -> None:
    assert classify(response(status, body), idempotent=idempotent).verdict is verdict


@pytest.mark.parametrize(
    ("error", "idempotent", "verdict"),
    [
        (requests.ConnectTimeout("connect timed out"), False, Verdict.RETRY),  # never sent
        (requests.ConnectionError("NewConnectionError: Connection refused"), False, Verdict.RETRY),
        (requests.ReadTimeout("read timed out"), True, Verdict.RETRY),
        (requests.ReadTimeout("read timed out"), False, Verdict.UNKNOWN),  # it may have happened
        (requests.ConnectionError("Connection aborted: RemoteDisconnected"), False, Verdict.UNKNOWN),
        (requests.ConnectionError("Connection aborted: RemoteDisconnected"), True, Verdict.RETRY),
    ],
)
def test_classify_exceptions(error: Exception, idempotent: bool, verdict: Verdict) -> None:
    assert classify(error, idempotent=idempotent).verdict is verdict


def test_wait_comes_from_whichever_header_the_vendor_sends() -> None:
    assert wait_from_headers({"Retry-After": "7"}, NOW) == 7
    http_date = format_datetime(datetime.fromtimestamp(NOW + 30, timezone.utc), usegmt=True)
    assert wait_from_headers({"Retry-After": http_date}, NOW) == pytest.approx(30)
    assert wait_from_headers({"RateLimit-Reset": "12"}, NOW) == 12  # Klaviyo: seconds
    assert wait_from_headers({"X-RateLimit-Reset": str(int(NOW + 45))}, NOW) == 45  # SendGrid/Braze: epoch
    assert wait_from_headers({}, NOW) is None
    assert wait_from_headers({"Retry-After": "soon"}, NOW) is None


def client(clock: FakeClock, **kwargs: object) -> ApiClient:
    return ApiClient(
        BASE,
        headers={"Authorization": "Klaviyo-API-Key pk_live_SECRETKEY123"},
        secrets=["pk_live_SECRETKEY123"],
        sleep=clock.sleep,
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )


@responses.activate
def test_a_429_waits_exactly_what_retry_after_says_then_succeeds() -> None:
    clock = FakeClock()
    responses.post(f"{BASE}/jobs", status=429, headers={"Retry-After": "3"})
    responses.post(f"{BASE}/jobs", status=202, json={"id": "job-1"})
    answer = client(clock).request("POST", "/jobs", json_body={"a": 1})
    assert answer.json() == {"id": "job-1"}
    assert len(responses.calls) == 2
    assert sum(clock.sleeps) == pytest.approx(3)  # the vendor's wait, once, not backoff on top


@responses.activate
def test_without_retry_after_it_backs_off_exponentially_and_gives_up_bounded() -> None:
    clock = FakeClock()
    responses.get(f"{BASE}/profiles", status=503)
    with pytest.raises(RetriesExhausted, match="still failing after retries: HTTP 503"):
        client(clock, policy=RetryPolicy(max_attempts=5, backoff_base=1, backoff_max=4)).request(
            "GET", "/profiles"
        )
    assert len(responses.calls) == 5
    assert len(clock.sleeps) == 4 and all(0 <= s <= 4 for s in clock.sleeps)


@responses.activate
def test_a_vendor_asking_for_a_longer_wait_than_allowed_stops_the_call() -> None:
    clock = FakeClock()
    responses.get(f"{BASE}/profiles", status=429, headers={"Retry-After": "3600"})
    with pytest.raises(RetriesExhausted, match="asked to wait 3600 s"):
        client(clock, policy=RetryPolicy(max_seconds=300)).request("GET", "/profiles")
    assert len(responses.calls) == 1 and clock.sleeps == []


@responses.activate
def test_quota_exhausted_and_auth_stop_at_once() -> None:
    clock = FakeClock()
    responses.post(f"{BASE}/batch", status=429, json={"errorType": "RATE_LIMIT", "policyName": "DAILY"})
    responses.get(f"{BASE}/me", status=401, json={"detail": "bad key pk_live_SECRETKEY123"})
    with pytest.raises(QuotaExhausted):
        client(clock).request("POST", "/batch", json_body={})
    with pytest.raises(AuthError) as refused:
        client(clock).request("GET", "/me")
    assert len(responses.calls) == 2 and clock.sleeps == []
    assert "pk_live_SECRETKEY123" not in str(refused.value) and "***" in str(refused.value)


@responses.activate
def test_a_non_idempotent_call_is_not_repeated_after_a_dropped_connection() -> None:
    clock = FakeClock()
    responses.post(f"{BASE}/unsubscribe", body=requests.ConnectionError("Connection aborted"))
    with pytest.raises(UnknownOutcome):
        client(clock).request("POST", "/unsubscribe", json_body={}, idempotent=False)
    assert len(responses.calls) == 1


@responses.activate
def test_an_idempotent_call_is_repeated_after_a_timeout() -> None:
    clock = FakeClock()
    responses.put(f"{BASE}/tags", body=requests.ReadTimeout("read timed out"))
    responses.put(f"{BASE}/tags", json={"ok": True})
    assert client(clock).request("PUT", "/tags", json_body={}).json() == {"ok": True}


@responses.activate
def test_a_bad_request_is_permanent_with_the_vendors_words() -> None:
    responses.post(f"{BASE}/import", status=400, json={"errors": [{"detail": "email is invalid"}]})
    with pytest.raises(PermanentError, match="email is invalid"):
        client(FakeClock()).request("POST", "/import", json_body={})


@responses.activate
def test_every_request_carries_the_user_agent_the_timeouts_and_json() -> None:
    responses.post(f"{BASE}/x", json={})
    client(FakeClock(), timeout=(2.0, 9.0)).request("POST", "/x", json_body={"k": "v"})
    sent = responses.calls[0].request
    assert sent.headers["User-Agent"].startswith("personasync/")
    assert sent.headers["Content-Type"] == "application/json" and json.loads(sent.body or b"") == {"k": "v"}
    assert sent.req_kwargs["timeout"] == (2.0, 9.0)


def test_the_rate_limiter_keeps_to_the_rate_and_honours_pauses() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, burst=1, sleep=clock.sleep, clock=clock)
    for _ in range(11):
        limiter.acquire()
    assert clock.now == pytest.approx(2.0)  # 11 requests at 5/s: the first at once, then one per 0.2 s
    limiter.pause(10)
    limiter.acquire()
    assert clock.now == pytest.approx(12.0)


@responses.activate
def test_the_client_sends_no_faster_than_its_rate() -> None:
    clock = FakeClock()
    responses.get(f"{BASE}/p", json={})
    api = client(clock, requests_per_second=10)
    for _ in range(21):
        api.request("GET", "/p")
    assert clock.now == pytest.approx(2.0) and api.requests_sent == 21


@responses.activate
def test_credentials_never_follow_a_link_to_another_host() -> None:
    """A vendor's pagination link is followed only on the vendor's own host."""
    responses.get(f"{BASE}/page2", json={"ok": True})
    api = client(FakeClock())
    assert api.request("GET", f"{BASE}/page2").json() == {"ok": True}
    with pytest.raises(PermanentError, match="refusing to send credentials to"):
        api.request("GET", "https://collector.example.net/page2")
    assert len(responses.calls) == 1


@responses.activate
def test_a_vendor_echoing_our_credentials_in_an_error_never_gets_them_into_the_message() -> None:
    """Some APIs quote the request in a 400. The redactor knows every form the credential
    travels as: the Basic auth header's encoding, a header value, the key inside it."""

    def echo(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        return 400, {}, json.dumps({"detail": f"you sent {request.headers['Authorization']}"})

    responses.add_callback(responses.POST, f"{BASE}/members", callback=echo)
    basic = ApiClient(BASE, auth=("personasync", "0123456789abcdef-us6"), sleep=FakeClock().sleep)
    with pytest.raises(PermanentError) as refused:
        basic.request("POST", "/members", json_body={})
    assert str(refused.value).endswith('"you sent Basic ***"}')  # the scheme is no secret
    bearer = ApiClient(BASE, headers={"Authorization": "Bearer tok_0123456789"}, sleep=FakeClock().sleep)
    with pytest.raises(PermanentError) as refused:
        bearer.request("POST", "/members", json_body={})
    assert "tok_0123456789" not in str(refused.value)
