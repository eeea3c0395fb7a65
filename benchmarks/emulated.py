"""The vendor models of ``tests/fakes`` made fit for benchmark sizes, and an emulator that
counts what a benchmark reports.

The models look contacts up by scanning every one (fine for a test's few hundred, quadratic
for 100,000): the subclasses here keep an index by email (and phone), which the models
allow because they never change a contact's identifier after creating it. Everything else
(validation, limits, answers) is the models' own.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.emulators.server import Emulator, Handle, Limit, Reply, throttled_reply
from tests.fakes.hubspot import Contact, HubSpotModel
from tests.fakes.klaviyo import Job, KlaviyoModel, Profile

ANY_FILTER = re.compile(r"any\((email|phone_number),(\[.*\])\)")
IDS = re.compile(r"/(?!v\d+(?:/|$))[^/]*\d[^/]*(?=/|$)")  # id segments (not /v3): /lists/12 -> /lists/{id}


class IndexedKlaviyoModel(KlaviyoModel):
    """The Klaviyo model with profiles indexed by email and phone, so that a job of 10,000
    profiles costs 10,000 lookups rather than 10,000 scans of the account."""

    def __init__(self, api_key: str, polls_to_finish: int = 2) -> None:
        super().__init__(api_key, polls_to_finish)
        self._index: dict[str, dict[str, Profile]] = {"email": {}, "phone_number": {}}

    def add_profile(self, email: str | None = None, phone: str | None = None, **properties: Any) -> Profile:
        profile = super().add_profile(email, phone, **properties)
        for identifier, value in (("email", email), ("phone_number", phone)):
            if value is not None:
                self._index[identifier].setdefault(value, profile)
        return profile

    def find(self, identifier: str, value: str) -> Profile | None:
        if identifier in self._index:
            return self._index[identifier].get(value)
        return super().find(identifier, value)

    def _get_profiles(self, query: dict[str, str], document: Any) -> Reply:
        """``GET /api/profiles?filter=any(email,[...])``: the model's own answer (paging,
        checks, resource shape) computed over the profiles the index finds."""
        match = ANY_FILTER.fullmatch(query.get("filter", ""))
        if match is None:
            return super()._get_profiles(query, document)
        index = self._index[match.group(1)]
        found = (index.get(v) for v in json.loads(match.group(2)))
        everyone, self.profiles = self.profiles, {p.id: p for p in found if p is not None}
        try:
            return super()._get_profiles(query, document)
        finally:
            self.profiles = everyone


class EagerKlaviyoModel(IndexedKlaviyoModel):
    """Jobs take effect as soon as they are created, as on Klaviyo, where a job runs whether
    or not anyone polls it; each still reports ``queued`` until its first poll, so a client
    that waits for its jobs makes the same calls as against the real API. Without this, a
    peer that never polls (fire and forget) would change nothing in the account. A finished
    job's body is dropped (the account keeps its counts and errors)."""

    def __init__(self, api_key: str) -> None:
        super().__init__(api_key, polls_to_finish=1)

    def _new_job(self, kind: str, payload: dict[str, Any], total: int, type_: str) -> Reply:
        reply = super()._new_job(kind, payload, total, type_)
        job = self.jobs[json.loads(reply[2])["data"]["id"]]
        KlaviyoModel._finish(self, job)
        job.status, job.payload = "queued", {}
        return reply

    def _finish(self, job: Job) -> None:
        """Called at the first poll: the work is done already."""
        job.status = "complete"


class IndexedHubSpotModel(HubSpotModel):
    """The HubSpot model with contacts indexed by (lower-cased) email."""

    def __init__(self, token: str, **options: Any) -> None:
        super().__init__(token, **options)
        self._by_email: dict[str, Contact] = {}

    def add_contact(self, email: str, **properties: str) -> Contact:
        contact = super().add_contact(email, **properties)
        self._by_email[contact.email] = contact
        return contact

    def contact(self, email: str) -> Contact | None:
        return self._by_email.get(email.lower())


@dataclass
class GroupCount:
    """Requests one rate-limit group of one vendor received, answered or refused (429), and
    the time it kept the client busy: the gaps between two of its requests in a row with
    no request to any other group or vendor in between. ``intervals / busy_s`` is the rate
    the client achieved while it was working with this group: a sync that goes from one
    destination to the other does not count the other's time against this one."""

    requests: int = 0
    throttled: int = 0
    intervals: int = 0
    busy_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "throttled": self.throttled,
            "intervals": self.intervals,
            "busy_s": round(self.busy_s, 3),
        }


class Sequence:
    """The last request any of several emulators received: which group, and when."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: tuple[object, float] | None = None

    def follow(self, key: object, now: float) -> float | None:
        """Note a request; the seconds since the previous one if that was the same ``key``."""
        with self.lock:
            previous, self.last = self.last, (key, now)
        return now - previous[1] if previous is not None and previous[0] == key else None


@dataclass
class Tally:
    """What an emulator counted since the last :meth:`reset`: per rate-limit group (the
    first whose pattern matches, as the emulator's windows count) and per endpoint.
    Emulators sharing one :class:`Sequence` tell each other's requests apart."""

    limits: tuple[Limit, ...]
    sequence: Sequence = field(default_factory=Sequence)
    groups: dict[str, GroupCount] = field(default_factory=dict)
    endpoints: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._patterns = [(limit.name, re.compile(limit.pattern)) for limit in self.limits]

    def group_of(self, path: str) -> str:
        return next((name for name, pattern in self._patterns if pattern.search(path)), "unlimited")

    def count(self, method: str, path: str, group: str | None = None, refused: bool = False) -> None:
        name = group or self.group_of(path)
        counted = self.groups.setdefault(name, GroupCount())
        counted.requests += 1
        counted.throttled += refused
        gap = self.sequence.follow((id(self), name), time.monotonic())
        if gap is not None:
            counted.intervals += 1
            counted.busy_s += gap
        if not refused:
            self.endpoints[f"{method} {IDS.sub('/{id}', path)}"] += 1

    def reset(self) -> None:
        self.groups.clear()
        self.endpoints.clear()

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": sum(g.requests for g in self.groups.values()),
            "throttled": sum(g.throttled for g in self.groups.values()),
            "groups": {name: g.as_json() for name, g in sorted(self.groups.items())},
            "endpoints": dict(sorted(self.endpoints.items())),
        }


def counting_emulator(
    handle: Handle,
    *,
    latency: float,
    limits: Iterable[Limit],
    max_seconds: float,
    throttled: Callable[[str, float], Reply] = throttled_reply,
    sequence: Sequence | None = None,
) -> tuple[Emulator, Tally]:
    """An :class:`Emulator` serving ``handle`` whose requests are also counted in a
    :class:`Tally` (read and reset it under ``emulator.lock``): answered ones as they reach
    the model, refused ones as the emulator builds the 429."""
    tally = Tally(tuple(limits), sequence or Sequence())

    def counted(method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
        tally.count(method, urlsplit(url).path)
        return handle(method, url, headers, body)

    def refused(group: str, reset: float) -> Reply:
        tally.count("", "", group, refused=True)
        return throttled(group, reset)

    emulator = Emulator(
        counted, latency=latency, limits=tally.limits, max_seconds=max_seconds, throttled=refused
    )
    return emulator, tally
