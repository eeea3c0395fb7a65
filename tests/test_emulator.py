"""The Klaviyo adapter against the Klaviyo emulator: real sockets, real time, short sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from connectors.destinations import klaviyo
from connectors.http import RetryPolicy
from sync.changes import Change, ChangeKind
from sync.ports import Outcome
from tests.emulators import Limit
from tests.emulators.klaviyo import klaviyo_emulator
from tests.fakes.klaviyo import KlaviyoModel

API_KEY = "pk_live_0123456789abcdef0123456789abcdef"
CHAMPION = "persona:champion"


def change(kind: ChangeKind, address: str, tag: str | None = None) -> Change:
    return Change(kind, address, address, address, None, "f", tag, ())


def destination(base_url: str, sleep: Callable[[float], None] = time.sleep) -> klaviyo.KlaviyoDestination:
    return klaviyo.build(
        "klaviyo", API_KEY, klaviyo.KlaviyoSettings("email"), base_url=base_url, timeout=(1, 2),
        policy=RetryPolicy(max_attempts=4, max_seconds=10, backoff_base=0.01), sleep=sleep,
    )  # fmt: skip


def brief_sleep(seconds: float) -> None:
    """Real, but at most 50 ms: shortens the adapter's job-poll waits (0.5 s first). The
    token buckets stay honest: they re-check a real clock after every sleep."""
    time.sleep(min(seconds, 0.05))


def test_tags_and_suppressions_go_over_real_sockets_and_land_in_the_account() -> None:
    account = KlaviyoModel(API_KEY, polls_to_finish=1)
    tagged = [f"p{i}@example.com" for i in range(150)]
    refused = tagged[:130]  # more than one page of import errors: links.next must come back here
    account.faults.reject.update({a: ("invalid", "blocked by a data-sharing rule") for a in refused})
    suppressed = [f"s{i}@example.com" for i in range(100)]
    with klaviyo_emulator(account, latency=0.005, max_seconds=20) as emulator:
        klav = destination(emulator.url, brief_sleep)
        tags = klav.apply(ChangeKind.ADD_TAG, [change(ChangeKind.ADD_TAG, a, CHAMPION) for a in tagged])
        suppressions = klav.apply(ChangeKind.SUPPRESS, [change(ChangeKind.SUPPRESS, a) for a in suppressed])

    outcomes = {r.change.address: r.outcome for r in tags.results}
    assert outcomes == {a: Outcome.PERMANENT if a in refused else Outcome.APPLIED for a in tagged}
    assert {r.outcome for r in suppressions.results} == {Outcome.APPLIED}
    assert account.tagged() == {a: frozenset({CHAMPION}) for a in tagged[130:]}
    assert account.suppressed() == set(suppressed)
    error_pages = [p for m, p in account.calls if p.endswith("/import-errors")]
    assert len(error_pages) == 2
    # import job + poll + 2 error pages, suppression job + poll: every one answered once
    assert emulator.requests == klav.requests_sent == 6
    assert emulator.throttled == 0 and emulator.dropped == 0


def test_going_faster_than_the_window_gets_429s_that_the_client_waits_out() -> None:
    """The client's general bucket lets 37 requests through at once; the emulator allows 5
    a second, so the sixth profile-import is refused and the rest wait for the next window."""
    account = KlaviyoModel(API_KEY)
    addresses = [f"p{i}@example.com" for i in range(klaviyo.SINGLE_IMPORT_UP_TO)]  # one call each
    slow = [Limit("general", r"^/api/", per_second=5)]
    started = time.monotonic()
    with klaviyo_emulator(account, latency=0.0, limits=slow, max_seconds=20) as emulator:
        klav = destination(emulator.url)
        result = klav.apply(ChangeKind.ADD_TAG, [change(ChangeKind.ADD_TAG, a, CHAMPION) for a in addresses])
    assert {r.outcome for r in result.results} == {Outcome.APPLIED}
    assert account.tagged() == {a: frozenset({CHAMPION}) for a in addresses}
    assert emulator.throttled >= 1 and emulator.throttled_by == {"general": emulator.throttled}
    assert emulator.requests == klav.requests_sent == len(addresses) + emulator.throttled
    assert [m for m, p in account.calls] == ["POST"] * len(addresses)  # a 429 never reached the account
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured, in real time


@pytest.mark.parametrize("fault", ["drops", "timeouts"])
def test_a_connection_closed_without_an_answer_is_retried_when_safe(fault: str) -> None:
    account = KlaviyoModel(API_KEY)
    setattr(account.faults, fault, 1)
    with klaviyo_emulator(account, latency=0.0, max_seconds=20) as emulator:
        klav = destination(emulator.url)
        result = klav.apply(ChangeKind.ADD_TAG, [change(ChangeKind.ADD_TAG, "p@example.com", CHAMPION)])
    assert [r.outcome for r in result.results] == [Outcome.APPLIED]
    assert emulator.dropped == 1 and emulator.requests == 2
    assert account.tagged() == {"p@example.com": frozenset({CHAMPION})}
