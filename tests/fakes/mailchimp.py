"""A stateful fake of the parts of Mailchimp's Marketing API personasync uses.

:class:`MailchimpModel` holds one audience (members with their status and tags; tags as
static segments) and answers one request at a time, knowing nothing of the transport: a
``responses`` mock (:meth:`MailchimpModel.attach`) or a real HTTP server
(``tests/emulators/mailchimp.py``) serves it.

Vendor facts it relies on (``shared/vendor-apis.md`` §1 and §3, from Mailchimp's OpenAPI
spec and SDK, and the pages they cite):

- the API lives under ``/3.0`` at ``https://{dc}.api.mailchimp.com``, ``dc`` being the key's
  suffix after ``-``; HTTP Basic auth with the key as the password (any user name). A key
  sent to another data centre is refused (401, "...the wrong datacenter");
- errors are problem details, ``{type, title, status, detail, instance}`` as
  ``application/problem+json`` (mailchimp.com/developer/marketing/docs/errors/);
- members are keyed by the MD5 of the lower-cased email (the path also accepts the email
  itself); ``PUT /lists/{id}/members/{hash}`` upserts one, ``status_if_new`` applying only
  to a new member; statuses are subscribed, unsubscribed, cleaned, pending, transactional;
- tags are static segments: ``GET /lists/{id}/segments`` (``count`` default 10, at most
  1000, ``offset``, ``total_items``), ``POST /lists/{id}/segments`` ``{name,
  static_segment}`` (emails not in the audience are ignored), ``POST
  /lists/{id}/segments/{segment_id}`` ``{members_to_add, members_to_remove}`` with at most
  500 emails each, answering ``members_added``, ``members_removed``, ``errors[{email_addresses,
  error}]``, ``total_added``, ``total_removed``, ``error_count`` (``count``/``offset`` and
  "not present on the list will be ignored": the parameter docs of the SDKs generated from
  Mailchimp's spec, e.g. mailchimp/mailchimp-client-lib-codegen);
- throttling is by concurrency only (10 simultaneous connections per user, 429 beyond),
  with no rate-limit headers and no ``Retry-After`` (api-evangelist/mailchimp
  ``rate-limits/mailchimp-rate-limits.yml``, quoting mailchimp.com/developer/marketing/docs/
  fundamentals/). The emulator enforces the connection cap; :attr:`Faults.throttle` sends a
  429 here, with ``Retry-After`` only if :attr:`Faults.retry_after` is set.

Where the spec is silent or vague the wording and the reading are ours: the text of a
per-email segment error and of the 429's ``detail``; non-members in a segment call are
ignored as the spec says (in neither ``members_added`` nor ``errors``), or listed in
``errors`` with :attr:`MailchimpModel.non_members_in_errors` (the other reading: the adapter
must give the same outcome under both); a duplicate tag name refused with 400; a PUT whose email does not
match the hash refused with 400; an over-large ``count`` clamped to 1000.

What it records for tests:

- :attr:`violations`: anything personasync promised never to cause. Any write carrying
  ``status`` or ``status_if_new`` ``subscribed`` or ``pending`` (wherever it sits in the
  body, on any path, routed or not), and any change to the status of a member who is
  ``unsubscribed`` or ``cleaned`` (the adapter promises never to touch them). The write is
  still applied, as Mailchimp would apply it;
- :meth:`unsubscribe_count`: per email, how many PUTs left the member ``unsubscribed``
  (moved there, or kept there by a repeat). Repeating one is harmless in Mailchimp as far
  as we know: a PUT is a set operation (§3 "Idempotency", inferred) and a repeat changes
  no status; nothing in §3 says Mailchimp writes to the person. So the adapter does not
  mark suppression at-most-once, and a retried PUT after a timeout shows up here as 2;
- :attr:`calls` (method, path below ``/3.0``), :meth:`writes`, :attr:`injected` (faults
  actually injected, by kind).

Faults (:class:`Faults`, all off by default; counted ones are used up call by call, and
only on calls matching :attr:`Faults.only` when it is set): ``drops`` closes the
connection before doing anything; ``throttle`` answers 429; ``errors_5xx`` answers 503
before doing anything; ``timeouts`` does the work, then never answers (raised as
``requests.ReadTimeout``: the emulator closes the connection); ``reject`` refuses an email
with Mailchimp's per-record shapes (in a segment call's ``errors``; 400 on a member PUT).
``random_5xx`` and ``random_timeouts`` fail that fraction of calls at random from
``random.Random(seed)`` (:meth:`MailchimpModel.chaos`): one draw per call, so the same
calls fail on every run with the same sequence of requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses

Reply = tuple[int, dict[str, str], str]
BASE_URL = "https://us6.api.mailchimp.com/3.0"
API_ROOT = "/3.0"
NOT_A_MEMBER = "Email address is not a member of this audience"
STATUSES = frozenset({"subscribed", "unsubscribed", "cleaned", "pending", "transactional"})
SUBSCRIBING = frozenset({"subscribed", "pending"})  # pending sends the person a confirmation email
LEAVE_ALONE = frozenset({"unsubscribed", "cleaned"})
MAX_EMAILS_PER_SEGMENT_CALL = 500
MAX_COUNT = 1000
THROTTLED_DETAIL = "You have exceeded the limit of 10 simultaneous connections."


@dataclass
class Member:
    status: str  # subscribed | unsubscribed | cleaned | pending | transactional
    tags: set[str] = field(default_factory=set)


@dataclass
class Faults:
    throttle: int = 0  # answer this many calls with 429
    retry_after: str | None = None  # Mailchimp sends none; set it to have the 429s carry one
    errors_5xx: int = 0  # 503 before doing anything
    timeouts: int = 0  # do the work, then never answer
    drops: int = 0  # close the connection before doing anything
    reject: dict[str, str] = field(default_factory=dict)  # email (any case) -> Mailchimp's detail
    random_5xx: float = 0.0  # fraction of calls answered 503 before doing anything
    random_timeouts: float = 0.0  # fraction of calls done, then never answered
    only: str | None = None  # a regex on "METHOD /path": faults hit only the calls it matches


class MailchimpModel:
    def __init__(self, api_key: str, list_id: str = "aud1", *, seed: int = 0) -> None:
        self.api_key = api_key
        self.list_id = list_id
        self.members: dict[str, Member] = {}  # lower-cased email -> member
        self.segments: dict[int, str] = {}  # segment id -> tag name
        self.non_members_in_errors = False  # True: a segment call lists non-members in ``errors``
        self.faults = Faults()
        self.random = random.Random(seed)
        self.calls: list[tuple[str, str]] = []
        self.violations: list[str] = []
        self.injected: Counter[str] = Counter()
        self._unsubscribes: Counter[str] = Counter()
        self._next_segment = 1000
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Reply]]] = [
            ("GET", re.compile(r"/lists/(?P<list>[^/]+)/?$"), self._get_list),
            ("GET", re.compile(r"/lists/(?P<list>[^/]+)/segments/?$"), self._list_segments),
            ("POST", re.compile(r"/lists/(?P<list>[^/]+)/segments/?$"), self._create_segment),
            (
                "POST",
                re.compile(r"/lists/(?P<list>[^/]+)/segments/(?P<segment>\d+)/?$"),
                self._segment_members,
            ),
            ("GET", re.compile(r"/lists/(?P<list>[^/]+)/members/(?P<member>[^/]+)/?$"), self._get_member),
            ("PUT", re.compile(r"/lists/(?P<list>[^/]+)/members/(?P<member>[^/]+)/?$"), self._put_member),
        ]

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

    def unsubscribe_count(self) -> dict[str, int]:
        """Lower-cased email -> PUTs that left the member unsubscribed (moved or kept there)."""
        return dict(self._unsubscribes)

    def chaos(self, rate: float, seed: int) -> None:
        """Fail ``rate`` of the calls at random, reproducibly: half answered 503 before any
        work, half done and never answered."""
        self.random = random.Random(seed)
        self.faults.random_5xx = self.faults.random_timeouts = rate / 2

    def throttled_reply(self, group: str = "concurrent", reset: float = 0.0) -> Reply:
        """Mailchimp's 429: problem details, no rate-limit headers, ``Retry-After`` only if
        :attr:`Faults.retry_after` is set (the emulator's answer over the connection cap)."""
        status, headers, text = _problem(429, "Too Many Requests", THROTTLED_DETAIL)
        if self.faults.retry_after:
            headers = {**headers, "Retry-After": self.faults.retry_after}
        return status, headers, text

    # --- transport -------------------------------------------------------------------------
    def attach(self, rsps: responses.RequestsMock, base_url: str = BASE_URL) -> None:
        def callback(request: requests.PreparedRequest) -> Reply:
            raw = request.body or b""
            body = raw.encode() if isinstance(raw, str) else raw if isinstance(raw, bytes) else b""
            headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
            return self.handle(str(request.method), str(request.url), headers, body)

        pattern = re.compile(re.escape(base_url.rstrip("/")) + r"/.*")
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            rsps.add_callback(method, pattern, callback)

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
        """One request in, one answer out (or a transport fault raised as requests does)."""
        parts = urlsplit(url)
        under_root = parts.path.startswith(API_ROOT + "/")
        path = parts.path.removeprefix(API_ROOT) if under_root else parts.path
        self.calls.append((method, path))
        try:
            document: Any = json.loads(body) if body else {}
        except ValueError:
            document = None
        if method != "GET":
            self._check_subscribing(method, path, document)  # even if refused: the attempt is the bug
        refused = self._authenticate(parts.hostname or "", headers)
        if refused is not None:
            return refused
        if document is None:
            return _problem(400, "JSON Parse Error", "We encountered an unspecified JSON parsing error.")
        if not under_root:
            return _not_found()
        faults = self.faults
        targeted = faults.only is None or re.search(faults.only, f"{method} {path}") is not None
        draw = self.random.random() if targeted and (faults.random_5xx or faults.random_timeouts) else 1.0
        if targeted and faults.drops:
            faults.drops -= 1
            self.injected["drop"] += 1
            raise requests.ConnectionError("Connection aborted: RemoteDisconnected")
        if targeted and faults.throttle:
            faults.throttle -= 1
            self.injected["throttle"] += 1
            return self.throttled_reply()
        if targeted and (faults.errors_5xx or draw < faults.random_5xx):
            if faults.errors_5xx:
                faults.errors_5xx -= 1
            self.injected["5xx"] += 1
            return _problem(503, "Service Unavailable", "Try again later.")
        reply = self._route(method, path, parts.query, document)
        if targeted and (faults.timeouts or draw < faults.random_5xx + faults.random_timeouts):
            if faults.timeouts:
                faults.timeouts -= 1
            self.injected["timeout"] += 1
            raise requests.ReadTimeout("read timed out")  # processed, but the answer never arrives
        return reply

    def _authenticate(self, host: str, headers: dict[str, str]) -> Reply | None:
        refused = _problem(
            401,
            "API Key Invalid",
            "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
        )
        scheme, _, credentials = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return refused
        try:
            _, _, key = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return refused
        if key != self.api_key:
            return refused
        if host.endswith(".api.mailchimp.com") and host.split(".")[0] != key.rpartition("-")[2]:
            return refused  # a key only works in its own data centre
        return None

    def _check_subscribing(self, method: str, path: str, document: Any) -> None:
        for key, value in _status_fields(document):
            if value in SUBSCRIBING:
                self.violations.append(f"{method} {path}: {key} {value}")

    def _route(self, method: str, path: str, query: str, document: Any) -> Reply:
        for route_method, pattern, handler in self._routes:
            match = pattern.match(path)
            if match and route_method == method:
                if match.group("list") != self.list_id:
                    return _not_found()
                params = {k: v[0] for k, v in parse_qs(query).items()}
                arguments = {k: v for k, v in match.groupdict().items() if k != "list"}
                return handler(params, document, **arguments)
        return _not_found()

    # --- lists and tags --------------------------------------------------------------------
    def _get_list(self, query: dict[str, str], document: Any) -> Reply:
        return _json(200, {"id": self.list_id, "name": "Newsletter"})

    def _list_segments(self, query: dict[str, str], document: Any) -> Reply:
        kind = query.get("type")
        if kind not in (None, "static", "saved", "fuzzy"):
            return _problem(400, "Invalid Resource", f"Invalid segment type: {kind}")
        chosen = [] if kind in ("saved", "fuzzy") else sorted(self.segments.items())
        count = min(int(query.get("count", 10)), MAX_COUNT)
        offset = int(query.get("offset", 0))
        page = [{"id": sid, "name": name, "type": "static"} for sid, name in chosen[offset : offset + count]]
        return _json(200, {"segments": page, "list_id": self.list_id, "total_items": len(chosen)})

    def _create_segment(self, query: dict[str, str], document: Any) -> Reply:
        name = document.get("name")
        if not isinstance(name, str) or not name:
            return _problem(400, "Invalid Resource", "The segment name is required.")
        if name in self.segments.values():
            return _problem(400, "Invalid Resource", "A tag with this name already exists.")
        self._next_segment += 1
        self.segments[self._next_segment] = name
        for email in document.get("static_segment") or []:
            member = self.members.get(str(email).lower())
            if member is not None:  # non-members are ignored
                member.tags.add(name)
        return _json(200, {"id": self._next_segment, "name": name, "type": "static", "list_id": self.list_id})

    def _segment_members(self, query: dict[str, str], document: Any, segment: str) -> Reply:
        tag = self.segments.get(int(segment))
        if tag is None:
            return _not_found()
        adding = document.get("members_to_add") or []
        removing = document.get("members_to_remove") or []
        if len(adding) > MAX_EMAILS_PER_SEGMENT_CALL or len(removing) > MAX_EMAILS_PER_SEGMENT_CALL:
            return _problem(400, "Invalid Resource", "A maximum of 500 members can be sent.")
        errors: list[dict[str, Any]] = []
        added: list[str] = []
        removed: list[str] = []
        for emails, done, change in ((adding, added, set.add), (removing, removed, set.discard)):
            for email in emails:
                member = self.members.get(str(email).lower())
                rejected = self._rejected(str(email))
                if rejected is not None or (member is None and self.non_members_in_errors):
                    errors.append({"email_addresses": [email], "error": rejected or NOT_A_MEMBER})
                    continue
                if member is None:
                    continue  # "not present on the list will be ignored": no error, not added
                change(member.tags, tag)
                done.append(email)
        return _json(200, {
            "members_added": [{"email_address": e} for e in added],
            "members_removed": [{"email_address": e} for e in removed],
            "errors": errors, "total_added": len(added), "total_removed": len(removed),
            "error_count": len(errors),
        })  # fmt: skip

    # --- members ---------------------------------------------------------------------------
    def _rejected(self, email: str) -> str | None:
        return next((why for who, why in self.faults.reject.items() if who.lower() == email.lower()), None)

    def _find(self, key: str) -> tuple[str, Member] | None:
        """A member by subscriber hash, or by email (the spec accepts both in the path)."""
        if "@" in key:
            email = key.lower()
            return (email, self.members[email]) if email in self.members else None
        for email, member in self.members.items():
            if subscriber_hash(email) == key.lower():
                return email, member
        return None

    def _get_member(self, query: dict[str, str], document: Any, member: str) -> Reply:
        found = self._find(member)
        if found is None:
            return _not_found()
        email, held = found
        return _json(200, _member_resource(email, held))

    def _put_member(self, query: dict[str, str], document: Any, member: str) -> Reply:
        email = document.get("email_address")
        if not isinstance(email, str) or "@" not in email:
            return _problem(400, "Invalid Resource", "The resource submitted could not be validated.")
        if subscriber_hash(email) != member.lower() and email.lower() != member.lower():
            return _problem(400, "Invalid Resource", "The email address does not match the subscriber hash.")
        for key in ("status", "status_if_new"):
            if key in document and document[key] not in STATUSES:
                return _problem(400, "Invalid Resource", f"{key} is not one of {sorted(STATUSES)}.")
        rejected = self._rejected(email)
        if rejected is not None:
            return _problem(400, "Invalid Resource", rejected)
        found = self._find(member)
        if found is None:
            status = document.get("status_if_new") or document.get("status")
            if status is None:
                return _problem(400, "Invalid Resource", "status_if_new is required for a new member.")
            held = self.members[email.lower()] = Member(str(status))
        else:
            held = found[1]
            status = document.get("status", held.status)
            if held.status in LEAVE_ALONE and status != held.status:
                self.violations.append(f"{email.lower()}: {held.status} changed to {status}")
            held.status = str(status)
        if held.status == "unsubscribed":
            self._unsubscribes[email.lower()] += 1
        return _json(200, _member_resource(email.lower(), held))


def subscriber_hash(email: str) -> str:
    """Computed here rather than taken from the adapter, so a bug there cannot agree with itself."""
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def _status_fields(document: Any) -> list[tuple[str, Any]]:
    """Every (key, value) for a ``status``/``status_if_new`` key anywhere in a JSON body."""
    found: list[tuple[str, Any]] = []
    if isinstance(document, dict):
        for key, value in document.items():
            if key in ("status", "status_if_new"):
                found.append((key, value))
            found.extend(_status_fields(value))
    elif isinstance(document, list):
        for item in document:
            found.extend(_status_fields(item))
    return found


def _member_resource(email: str, member: Member) -> dict[str, Any]:
    return {
        "id": subscriber_hash(email),
        "email_address": email,
        "status": member.status,
        "tags": [{"name": tag} for tag in sorted(member.tags)],
    }


def _json(status: int, body: object) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(body)


def _not_found() -> Reply:
    return _problem(404, "Resource Not Found", "The requested resource could not be found.")


def _problem(status: int, title: str, detail: str) -> Reply:
    body = {
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": "00000000-0000-0000-0000-000000000000",
    }
    return status, {"Content-Type": "application/problem+json"}, json.dumps(body)
