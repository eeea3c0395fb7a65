"""A stateful Mailchimp audience behind `responses` callbacks.

It keeps members (status and tags) and tags (static segments) the way the Marketing API
does, answers with its shapes (problem-details errors; a segment call's ``errors`` array),
enforces its limits (500 emails per segment call, Basic auth with the key), and can be
told to misbehave (429 with or without Retry-After, 5xx bursts, timeouts).
Shapes follow Mailchimp's OpenAPI spec as summarised in ``shared/vendor-apis.md`` §3; the
wording of a per-email segment error is not documented there, so the text is ours.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import responses

Reply = tuple[int, dict[str, str], str]
NOT_A_MEMBER = "Email address is not a member of this audience"


@dataclass
class Member:
    status: str  # subscribed | unsubscribed | cleaned | pending | transactional
    tags: set[str] = field(default_factory=set)


@dataclass
class Faults:
    throttle: int = 0  # answer this many calls with 429
    retry_after: str | None = "1"
    errors_5xx: int = 0
    timeouts: int = 0


class MailchimpFake:
    def __init__(self, rsps: responses.RequestsMock, api_key: str, list_id: str = "aud1",
                 base_url: str = "https://us6.api.mailchimp.com/3.0") -> None:  # fmt: skip
        self.api_key = api_key
        self.list_id = list_id
        self.base_url = base_url
        self.members: dict[str, Member] = {}
        self.segments: dict[int, str] = {}
        self.faults = Faults()
        self.calls: list[tuple[str, str]] = []
        self._next_segment = 1000
        routes: list[tuple[str, str, Callable[[requests.PreparedRequest, re.Match[str]], Reply]]] = [
            ("GET", r"/lists/(?P<list>[^/]+)", self._get_list),
            ("GET", r"/lists/(?P<list>[^/]+)/segments", self._list_segments),
            ("POST", r"/lists/(?P<list>[^/]+)/segments", self._create_segment),
            ("POST", r"/lists/(?P<list>[^/]+)/segments/(?P<segment>\d+)", self._segment_members),
            ("GET", r"/lists/(?P<list>[^/]+)/members/(?P<hash>[0-9a-f]+)", self._get_member),
            ("PUT", r"/lists/(?P<list>[^/]+)/members/(?P<hash>[0-9a-f]+)", self._put_member),
        ]
        for method, pattern, handler in routes:
            url = re.compile(re.escape(base_url) + pattern + r"(\?.*)?$")
            rsps.add_callback(method, url, self._wrap(pattern + "$", handler))

    # --- what tests look at ----------------------------------------------------------------
    def add_members(self, emails: list[str], status: str = "subscribed") -> None:
        for email in emails:
            self.members[email.lower()] = Member(status)

    def tagged(self) -> dict[str, frozenset[str]]:
        return {email: frozenset(m.tags) for email, m in self.members.items() if m.tags}

    def with_status(self, status: str) -> set[str]:
        return {email for email, m in self.members.items() if m.status == status}

    def writes(self) -> int:
        return sum(1 for method, _ in self.calls if method != "GET")

    # --- plumbing --------------------------------------------------------------------------
    def _wrap(
        self, pattern: str, handler: Callable[[requests.PreparedRequest, re.Match[str]], Reply]
    ) -> Callable[[requests.PreparedRequest], Reply]:
        def callback(request: requests.PreparedRequest) -> Reply:
            path = (request.path_url or "").split("?")[0].removeprefix("/3.0")
            self.calls.append((str(request.method), path))
            expected = "Basic " + base64.b64encode(f"personasync:{self.api_key}".encode()).decode()
            if request.headers.get("Authorization") != expected:
                return _problem(
                    401,
                    "API Key Invalid",
                    "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
                )
            if self.faults.timeouts:
                self.faults.timeouts -= 1
                raise requests.ReadTimeout("read timed out")
            if self.faults.throttle:
                self.faults.throttle -= 1
                headers = {"Retry-After": self.faults.retry_after} if self.faults.retry_after else {}
                status, base, body = _problem(
                    429, "Too Many Requests", "You have exceeded the limit of 10 simultaneous connections."
                )
                return status, {**base, **headers}, body
            if self.faults.errors_5xx:
                self.faults.errors_5xx -= 1
                return _problem(503, "Service Unavailable", "Try again later.")
            match = re.search(pattern, path)
            assert match is not None
            if match.group("list") != self.list_id:
                return _problem(404, "Resource Not Found", "The requested resource could not be found.")
            return handler(request, match)

        return callback

    def _get_list(self, request: requests.PreparedRequest, match: re.Match[str]) -> Reply:
        return _json(200, {"id": self.list_id, "name": "Newsletter"})

    def _list_segments(self, request: requests.PreparedRequest, match: re.Match[str]) -> Reply:
        segments = [
            {"id": sid, "name": name, "type": "static"} for sid, name in sorted(self.segments.items())
        ]
        return _json(200, {"segments": segments, "total_items": len(segments)})

    def _create_segment(self, request: requests.PreparedRequest, match: re.Match[str]) -> Reply:
        body = _body(request)
        if body.get("name") in self.segments.values():
            return _problem(400, "Invalid Resource", "A tag with this name already exists.")
        self._next_segment += 1
        self.segments[self._next_segment] = str(body["name"])
        return _json(200, {"id": self._next_segment, "name": body["name"], "type": "static"})

    def _segment_members(self, request: requests.PreparedRequest, match: re.Match[str]) -> Reply:
        tag = self.segments.get(int(match.group("segment")))
        if tag is None:
            return _problem(404, "Resource Not Found", "The requested resource could not be found.")
        body = _body(request)
        adding, removing = body.get("members_to_add", []), body.get("members_to_remove", [])
        if len(adding) > 500 or len(removing) > 500:
            return _problem(400, "Invalid Resource", "A maximum of 500 members can be sent.")
        errors, added, removed = [], [], []
        for email in adding:
            member = self.members.get(email.lower())
            if member is None:
                errors.append({"email_addresses": [email], "error": NOT_A_MEMBER})
                continue
            member.tags.add(tag)
            added.append(email)
        for email in removing:
            member = self.members.get(email.lower())
            if member is None:
                errors.append({"email_addresses": [email], "error": NOT_A_MEMBER})
                continue
            member.tags.discard(tag)
            removed.append(email)
        return _json(200, {
            "members_added": [{"email_address": e} for e in added],
            "members_removed": [{"email_address": e} for e in removed],
            "errors": errors, "total_added": len(added), "total_removed": len(removed),
            "error_count": len(errors),
        })  # fmt: skip

    def _member_by_hash(self, digest: str) -> tuple[str, Member] | None:
        from connectors.destinations.mailchimp import subscriber_hash

        for email, member in self.members.items():
            if subscriber_hash(email) == digest:
                return email, member
        return None

    def _get_member(self, request: requests.PreparedRequest, match: re.Match[str]) -> Reply:
        found = self._member_by_hash(match.group("hash"))
        if found is None:
            return _problem(404, "Resource Not Found", "The requested resource could not be found.")
        return _json(200, {"email_address": found[0], "status": found[1].status})

    def _put_member(self, request: requests.PreparedRequest, match: re.Match[str]) -> Reply:
        body = _body(request)
        found = self._member_by_hash(match.group("hash"))
        if found is None:
            status = body.get("status_if_new")
            if status is None:
                return _problem(400, "Invalid Resource", "status_if_new is required for a new member.")
            self.members[str(body["email_address"]).lower()] = Member(str(status))
        elif "status" in body:
            found[1].status = str(body["status"])
        return _json(200, {"email_address": body["email_address"], "status": body.get("status")})


def _body(request: requests.PreparedRequest) -> dict[str, Any]:
    raw = request.body or b"{}"
    return dict(json.loads(raw if isinstance(raw, str) else raw.decode()))


def _json(status: int, body: object) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(body)


def _problem(status: int, title: str, detail: str) -> Reply:
    body = {
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": "00000000-0000-0000-0000-000000000000",
    }
    return status, {"Content-Type": "application/problem+json"}, json.dumps(body)
