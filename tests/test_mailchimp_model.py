"""The Mailchimp adapter against the Mailchimp emulator: real sockets, the real client,
the model's faults. Waits go through :class:`~tests.fakes.sleeps.Sleeps`, so a test sees
what the client was asked to wait without waiting it."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Sequence

import pytest
import requests

from connectors.destinations import mailchimp
from connectors.http import RetryPolicy
from sync.changes import Change, ChangeKind
from sync.ports import ChangeResult, Outcome
from tests.emulators.mailchimp import MAX_CONNECTIONS, api_url, mailchimp_emulator
from tests.fakes.mailchimp import MailchimpModel
from tests.fakes.sleeps import Sleeps

API_KEY = "0123456789abcdef0123456789abcdef-us6"
CHAMPION = "persona:champion"
FAKE_LOOKING = "looks fake or invalid, please enter a real email address."
SEGMENT_MEMBERS = r"^POST /lists/[^/]+/segments/\d+$"
SEGMENT_CREATE = r"^POST /lists/[^/]+/segments$"


def change(kind: ChangeKind, address: str, tag: str | None = None) -> Change:
    return Change(kind, address, address, address, None, "f", tag, ())


def tag(addresses: Sequence[str]) -> list[Change]:
    return [change(ChangeKind.ADD_TAG, a, CHAMPION) for a in addresses]


def suppress(addresses: Sequence[str]) -> list[Change]:
    return [change(ChangeKind.SUPPRESS, a) for a in addresses]


def destination(base_url: str, sleeps: Sleeps, attempts: int = 4) -> mailchimp.MailchimpDestination:
    return mailchimp.build(
        "newsletter", API_KEY, "aud1", base_url=base_url, requests_per_second=None, timeout=(1, 2),
        policy=RetryPolicy(max_attempts=attempts, max_seconds=30, backoff_base=0.01),
        sleep=sleeps, clock=sleeps.clock,
    )  # fmt: skip


def apply(dest: mailchimp.MailchimpDestination, changes: list[Change]) -> dict[str, ChangeResult]:
    """Every change applied in batches of the size the destination declares, as the engine does;
    address -> result. A batch refused as a whole fails the test."""
    kind = changes[0].kind
    size = dest.capabilities.max_batch[kind]
    results: dict[str, ChangeResult] = {}
    for start in range(0, len(changes), size):
        answer = dest.apply(kind, changes[start : start + size])
        assert answer.batch_error is None, answer.batch_error
        results.update({r.change.address: r for r in answer.results})
    return results


def outcomes(results: dict[str, ChangeResult]) -> dict[str, Outcome]:
    return {address: result.outcome for address, result in results.items()}


def test_tags_and_suppressions_land_over_real_sockets_and_nobody_is_subscribed() -> None:
    audience = MailchimpModel(API_KEY)
    members = [f"p{i}@example.com" for i in range(600)]  # two segment calls of at most 500
    audience.add_members(members)
    audience.add_members(["gone@example.com"], status="unsubscribed")
    audience.add_members(["bounced@example.com"], status="cleaned")
    newcomers = ["new1@example.com", "new2@example.com"]
    leaving = [members[0], members[1], "gone@example.com", "bounced@example.com", *newcomers]
    sleeps = Sleeps()
    with mailchimp_emulator(audience, latency=0.002, max_seconds=20) as emulator:
        mc = destination(api_url(emulator), sleeps)
        mc.check()
        tags = apply(mc, tag(members))
        suppressions = apply(mc, suppress(leaving))

    assert outcomes(tags) == dict.fromkeys(members, Outcome.APPLIED)
    assert outcomes(suppressions) == dict.fromkeys(leaving, Outcome.APPLIED)
    assert audience.tagged() == dict.fromkeys(members, frozenset({CHAMPION}))
    assert audience.with_status("unsubscribed") == {members[0], members[1], "gone@example.com", *newcomers}
    assert audience.with_status("cleaned") == {"bounced@example.com"}  # left alone
    assert audience.with_status("subscribed") == set(members[2:])
    assert audience.violations == []
    # one PUT each; an address already unsubscribed (or cleaned) is looked up, not written again
    assert audience.unsubscribe_count() == dict.fromkeys([members[0], members[1], *newcomers], 1)
    # check, read tags, create the tag, 2 segment calls; a look-up per suppression, 4 PUTs
    assert emulator.requests == mc.requests_sent == 1 + 1 + 1 + 2 + 6 + 4
    assert emulator.throttled == 0 and emulator.dropped == 0 and sleeps.seconds == []


@pytest.mark.parametrize("retry_after", ["1", None], ids=["retry-after", "mailchimp-sends-none"])
def test_a_429_is_waited_out_then_the_batch_lands(retry_after: str | None) -> None:
    audience = MailchimpModel(API_KEY)
    audience.add_members(["a@example.com", "b@example.com"])
    audience.faults.throttle, audience.faults.retry_after = 1, retry_after
    sleeps = Sleeps()
    with mailchimp_emulator(audience, latency=0.0, max_seconds=20) as emulator:
        mc = destination(api_url(emulator), sleeps)
        results = apply(mc, tag(["a@example.com", "b@example.com"]))

    assert set(outcomes(results).values()) == {Outcome.APPLIED}
    assert audience.tagged() == dict.fromkeys(["a@example.com", "b@example.com"], frozenset({CHAMPION}))
    assert audience.injected == {"throttle": 1}
    [waited] = sleeps.seconds
    if retry_after:
        assert waited == 1.0  # exactly what Mailchimp asked
    else:
        assert 0 <= waited <= 0.01  # no header: the client's own backoff (backoff_base)
    assert emulator.requests == mc.requests_sent == 4  # read tags twice, create the tag, tag the two


def test_the_eleventh_simultaneous_request_is_refused_in_mailchimps_shape() -> None:
    audience = MailchimpModel(API_KEY)
    callers = MAX_CONNECTIONS + 2
    start = threading.Barrier(callers)
    answers: list[tuple[int, dict[str, str], str]] = []
    auth = "Basic " + base64.b64encode(f"anyone:{API_KEY}".encode()).decode()

    def call(connection: http.client.HTTPConnection) -> None:
        start.wait()
        connection.request("GET", "/3.0/lists/aud1", headers={"Authorization": auth})
        answer = connection.getresponse()
        answers.append((answer.status, dict(answer.getheaders()), answer.read().decode()))
        connection.close()

    with mailchimp_emulator(audience, latency=0.5, max_seconds=20) as emulator:
        host, port = emulator.url.removeprefix("http://").split(":")
        connections = [http.client.HTTPConnection(host, int(port), timeout=5) for _ in range(callers)]
        for connection in connections:  # one at a time, each accepted before the next: the listen
            connection.connect()  # backlog is socketserver's 5, and a SYN it drops waits 1 s
            time.sleep(0.01)
        threads = [threading.Thread(target=call, args=(c,)) for c in connections]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(status for status, _, _ in answers) == [200] * MAX_CONNECTIONS + [429] * 2
    for status, headers, text in answers:
        if status == 429:
            problem = json.loads(text)
            assert headers["Content-Type"] == "application/problem+json" and "Retry-After" not in headers
            assert problem["title"] == "Too Many Requests" and problem["status"] == 429
            assert "10 simultaneous connections" in problem["detail"]
    assert emulator.throttled_by == {"concurrent": 2} and emulator.peak_in_flight == MAX_CONNECTIONS
    assert len(audience.calls) == MAX_CONNECTIONS  # a refused request never reached the audience


@pytest.mark.parametrize("fault", ["drops", "timeouts"])
@pytest.mark.parametrize("target", [SEGMENT_MEMBERS, "^PUT "], ids=["tag-call", "member-put"])
def test_a_connection_closed_without_an_answer_on_an_idempotent_call_is_retried(
    fault: str, target: str
) -> None:
    audience = MailchimpModel(API_KEY)
    audience.add_members(["a@example.com", "b@example.com", "c@example.com"])
    audience.faults.only = target
    setattr(audience.faults, fault, 1)
    sleeps = Sleeps()
    with mailchimp_emulator(audience, latency=0.0, max_seconds=20) as emulator:
        mc = destination(api_url(emulator), sleeps)
        tags = apply(mc, tag(["a@example.com", "b@example.com"]))
        suppressions = apply(mc, suppress(["c@example.com"]))

    assert set(outcomes(tags).values()) == set(outcomes(suppressions).values()) == {Outcome.APPLIED}
    assert audience.tagged() == dict.fromkeys(["a@example.com", "b@example.com"], frozenset({CHAMPION}))
    assert audience.with_status("unsubscribed") == {"c@example.com"}
    assert emulator.dropped == 1 and audience.violations == []
    # a timed-out PUT had been applied, so its retry repeats it: harmless in Mailchimp (no status
    # change, nothing sent to the person), which is why suppression is not at-most-once here
    repeated = fault == "timeouts" and target == "^PUT "
    assert audience.unsubscribe_count() == {"c@example.com": 2 if repeated else 1}


def test_a_refused_record_is_reported_alone_with_mailchimps_reason() -> None:
    audience = MailchimpModel(API_KEY)
    audience.add_members(["a@example.com", "b@example.com", "c@example.com", "d@example.com"])
    audience.faults.reject["b@example.com"] = f"b@example.com {FAKE_LOOKING}"
    sleeps = Sleeps()
    with mailchimp_emulator(audience, latency=0.0, max_seconds=20) as emulator:
        mc = destination(api_url(emulator), sleeps)
        tags = apply(mc, tag(["a@example.com", "b@example.com", "c@example.com", "outsider@example.com"]))
        suppressions = apply(mc, suppress(["b@example.com", "d@example.com"]))

    assert outcomes(tags) == {
        "a@example.com": Outcome.APPLIED,
        "b@example.com": Outcome.PERMANENT,
        "c@example.com": Outcome.APPLIED,
        "outsider@example.com": Outcome.PERMANENT,
    }
    assert tags["b@example.com"].reason == f"b@example.com {FAKE_LOOKING}"
    assert (tags["outsider@example.com"].reason or "").startswith(mailchimp.NOT_IN_AUDIENCE)
    assert outcomes(suppressions) == {"b@example.com": Outcome.PERMANENT, "d@example.com": Outcome.APPLIED}
    assert FAKE_LOOKING in (suppressions["b@example.com"].reason or "")
    assert audience.tagged() == dict.fromkeys(["a@example.com", "c@example.com"], frozenset({CHAMPION}))
    assert audience.with_status("unsubscribed") == {"d@example.com"}
    assert "outsider@example.com" not in audience.members  # never added, let alone subscribed
    assert audience.violations == [] and emulator.dropped == 0 and sleeps.seconds == []


def test_a_hostile_api_failing_one_call_in_ten_still_ends_with_the_right_audience() -> None:
    audience = MailchimpModel(API_KEY)
    members = [f"p{i}@example.com" for i in range(120)]
    audience.add_members(members)
    leaving = members[:20] + [f"new{i}@example.com" for i in range(20)]
    audience.chaos(0.1, seed=7)
    sleeps = Sleeps()
    with mailchimp_emulator(audience, latency=0.0, max_seconds=30) as emulator:
        mc = destination(api_url(emulator), sleeps, attempts=6)
        tags: dict[str, ChangeResult] = {}
        for start in range(0, len(members), 10):  # small batches: many calls, many faults
            tags.update(apply(mc, tag(members[start : start + 10])))
        suppressions = apply(mc, suppress(leaving))

    assert set(outcomes(tags).values()) == set(outcomes(suppressions).values()) == {Outcome.APPLIED}
    assert audience.tagged() == dict.fromkeys(members, frozenset({CHAMPION}))
    assert audience.with_status("unsubscribed") == set(leaving)
    assert audience.violations == []
    assert audience.injected["5xx"] >= 1 and audience.injected["timeout"] >= 1
    assert 0.05 <= (audience.injected["5xx"] + audience.injected["timeout"]) / len(audience.calls) <= 0.15
    assert emulator.dropped == audience.injected["timeout"]


def test_the_model_records_a_write_that_would_subscribe_someone() -> None:
    audience = MailchimpModel(API_KEY)
    audience.add_members(["gone@example.com"], status="unsubscribed")
    with mailchimp_emulator(audience, latency=0.0, max_seconds=20) as emulator:
        base = api_url(emulator)
        for email, body in (
            ("new@example.com", {"status_if_new": "pending"}),
            ("gone@example.com", {"status": "transactional"}),
        ):
            path = f"{base}/lists/aud1/members/{mailchimp.subscriber_hash(email)}"
            answer = requests.put(path, json={"email_address": email, **body}, auth=("x", API_KEY), timeout=5)
            assert answer.status_code == 200  # applied, as Mailchimp would
    assert audience.violations == [
        f"PUT /lists/aud1/members/{mailchimp.subscriber_hash('new@example.com')}: status_if_new pending",
        "gone@example.com: unsubscribed changed to transactional",
    ]


def test_a_tag_created_by_a_call_that_timed_out_is_still_used() -> None:
    audience = MailchimpModel(API_KEY)
    audience.add_members(["a@example.com", "b@example.com"])
    audience.faults.only, audience.faults.timeouts = SEGMENT_CREATE, 1
    sleeps = Sleeps()
    with mailchimp_emulator(audience, latency=0.0, max_seconds=20) as emulator:
        mc = destination(api_url(emulator), sleeps)
        answer = mc.apply(ChangeKind.ADD_TAG, tag(["a@example.com", "b@example.com"]))
    assert list(audience.segments.values()) == [CHAMPION]  # created once, by the call that timed out
    assert answer.batch_error is None and {r.outcome for r in answer.results} == {Outcome.APPLIED}
    assert audience.tagged() == dict.fromkeys(["a@example.com", "b@example.com"], frozenset({CHAMPION}))
    assert emulator.dropped == 1
