"""A stateful fake of the parts of Klaviyo's API personasync uses.

:class:`KlaviyoModel` holds the account (profiles, their array properties, suppressions,
SMS consent, lists, jobs) and Klaviyo's rules as its OpenAPI spec states them (revision
header, JSON:API content type, batch limits, job statuses, import errors); it answers one
request at a time and knows nothing of the transport, so a ``responses`` mock
(:meth:`KlaviyoModel.attach`) or a real HTTP server can serve it.

Where the spec is silent we take the harsher reading: ``patch_properties.append`` does not
de-duplicate, and a job finishes only after it has been polled (``polls_to_finish``).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses

Reply = tuple[int, dict[str, str], str]
JSON_API = "application/vnd.api+json"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class Profile:
    id: str
    email: str | None = None
    phone_number: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    suppression: str | None = None  # reason, e.g. USER_SUPPRESSED, HARD_BOUNCE
    sms_consent: str | None = None  # SUBSCRIBED | UNSUBSCRIBED


@dataclass
class Job:
    id: str
    kind: str  # import | suppress | unsuppress
    payload: dict[str, Any]
    status: str = "queued"
    polls: int = 0
    total: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Faults:
    throttle: int = 0  # answer this many calls with 429
    retry_after: str | None = "1"
    errors_5xx: int = 0
    timeouts: int = 0  # raise a read timeout (the call may have been processed)
    drops: int = 0  # drop the connection before answering
    stuck: bool = False  # jobs stay queued
    cancel: int = 0  # cancel this many jobs
    reject: dict[str, tuple[str, str]] = field(default_factory=dict)  # identifier -> (code, detail)
    unitemised: bool = False  # report failures without listing them


class KlaviyoModel:
    def __init__(self, api_key: str, polls_to_finish: int = 2) -> None:
        self.api_key = api_key
        self.polls_to_finish = polls_to_finish
        self.profiles: dict[str, Profile] = {}
        self.lists: dict[str, set[str]] = {}
        self.jobs: dict[str, Job] = {}
        self.faults = Faults()
        self.calls: list[tuple[str, str]] = []
        self.violations: list[str] = []  # things Klaviyo would do that we promised never to cause
        self._origin = "https://a.klaviyo.com"  # scheme://host of the request being answered
        self._ids = itertools.count(1)
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Reply]]] = [
            ("GET", re.compile(r"/api/profiles/?$"), self._get_profiles),
            ("POST", re.compile(r"/api/profile-import/?$"), self._profile_import),
            ("POST", re.compile(r"/api/profile-bulk-import-jobs/?$"), self._create_import),
            (
                "GET",
                re.compile(r"/api/profile-bulk-import-jobs/(?P<id>[^/]+)/import-errors/?$"),
                self._errors,
            ),
            ("GET", re.compile(r"/api/profile-bulk-import-jobs/(?P<id>[^/]+)/?$"), self._get_job),
            ("POST", re.compile(r"/api/profile-suppression-bulk-create-jobs/?$"), self._create_suppress),
            ("GET", re.compile(r"/api/profile-suppression-bulk-create-jobs/(?P<id>[^/]+)/?$"), self._get_job),
            ("POST", re.compile(r"/api/profile-suppression-bulk-delete-jobs/?$"), self._create_unsuppress),
            ("GET", re.compile(r"/api/profile-suppression-bulk-delete-jobs/(?P<id>[^/]+)/?$"), self._get_job),
            ("POST", re.compile(r"/api/profile-subscription-bulk-delete-jobs/?$"), self._unsubscribe),
            ("POST", re.compile(r"/api/profile-subscription-bulk-create-jobs/?$"), self._subscribe),
            ("GET", re.compile(r"/api/lists/(?P<id>[^/]+)/?$"), self._get_list),
            ("POST", re.compile(r"/api/lists/(?P<id>[^/]+)/relationships/profiles/?$"), self._list_add),
            ("DELETE", re.compile(r"/api/lists/(?P<id>[^/]+)/relationships/profiles/?$"), self._list_remove),
        ]

    # --- what tests look at ----------------------------------------------------------------
    def add_profile(self, email: str | None = None, phone: str | None = None, **properties: Any) -> Profile:
        profile = Profile(f"01P{next(self._ids):08d}", email, phone, dict(properties))
        self.profiles[profile.id] = profile
        return profile

    def find(self, identifier: str, value: str) -> Profile | None:
        for profile in self.profiles.values():
            if getattr(profile, identifier) == value:
                return profile
        return None

    def tagged(self, prop: str = "personas", identifier: str = "email") -> dict[str, frozenset[str]]:
        return {
            getattr(p, identifier): frozenset(p.properties[prop])
            for p in self.profiles.values()
            if p.properties.get(prop)
        }

    def suppressed(self) -> set[str]:
        return {p.email for p in self.profiles.values() if p.suppression and p.email}

    def sms_unsubscribed(self) -> set[str]:
        return {
            p.phone_number
            for p in self.profiles.values()
            if p.sms_consent == "UNSUBSCRIBED" and p.phone_number
        }

    def writes(self) -> int:
        return sum(1 for method, _ in self.calls if method != "GET")

    def list_members(self, list_id: str, identifier: str = "email") -> set[str]:
        return {getattr(self.profiles[i], identifier) for i in self.lists.get(list_id, set())}

    # --- transport -------------------------------------------------------------------------
    def attach(self, rsps: responses.RequestsMock, base_url: str = "https://a.klaviyo.com") -> None:
        def callback(request: requests.PreparedRequest) -> Reply:
            raw = request.body or b""
            body = raw.encode() if isinstance(raw, str) else raw
            return self.handle(str(request.method), str(request.url), dict(request.headers), body)

        pattern = re.compile(re.escape(base_url) + r"/api/.*")
        for method in ("GET", "POST", "DELETE", "PATCH"):
            rsps.add_callback(method, pattern, callback)

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
        """One request in, one answer out (or a transport fault raised as requests does)."""
        parts = urlsplit(url)
        self._origin = f"{parts.scheme}://{parts.netloc}"  # links point back where the call came in
        self.calls.append((method, parts.path))
        if headers.get("Authorization") != f"Klaviyo-API-Key {self.api_key}":
            return _error(401, "not_authenticated", "Incorrect authentication credentials.")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.\w+)?", headers.get("revision", "")):
            return _error(400, "invalid", "The revision header is missing or invalid.")
        if body and headers.get("Content-Type") != JSON_API:
            return _error(415, "unsupported_media_type", f"Content-Type must be {JSON_API}.")
        faults = self.faults
        if faults.drops:
            faults.drops -= 1
            raise requests.ConnectionError("Connection aborted: RemoteDisconnected")
        if faults.throttle:
            faults.throttle -= 1
            status, base, text = _error(429, "throttled", "Request was throttled.")
            return (
                status,
                {**base, **({"Retry-After": faults.retry_after} if faults.retry_after else {})},
                text,
            )
        if faults.errors_5xx:
            faults.errors_5xx -= 1
            return _error(503, "service_unavailable", "Service temporarily unavailable.")
        for route_method, pattern, handler in self._routes:
            match = pattern.match(parts.path)
            if match and route_method == method:
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                document = json.loads(body) if body else {}
                reply = handler(query, document, **match.groupdict())
                if faults.timeouts:  # processed, but the answer never arrives
                    faults.timeouts -= 1
                    raise requests.ReadTimeout("read timed out")
                return reply
        return _error(404, "not_found", f"No route for {method} {parts.path}.")

    # --- profiles --------------------------------------------------------------------------
    def _get_profiles(self, query: dict[str, str], document: Any) -> Reply:
        size = int(query.get("page[size]", 20))
        if not 1 <= size <= 100:
            return _error(400, "invalid", "page[size] must be between 1 and 100.")
        chosen = list(self.profiles.values())
        wanted = query.get("filter")
        if wanted:
            match = re.fullmatch(r"any\((email|phone_number),(\[.*\])\)", wanted)
            if match is None:
                return _error(400, "invalid", f"Invalid filter: {wanted}")
            values = set(json.loads(match.group(2)))
            if len(values) > 100:
                return _error(400, "invalid", "any() takes at most 100 values.")
            chosen = [p for p in chosen if getattr(p, match.group(1)) in values]
        return _json(200, {"data": [self._profile_resource(p) for p in chosen[:size]], "links": {"self": ""}})

    def _profile_resource(self, profile: Profile) -> dict[str, Any]:
        suppression = [{"reason": profile.suppression}] if profile.suppression else []
        return {
            "type": "profile",
            "id": profile.id,
            "attributes": {
                "email": profile.email,
                "phone_number": profile.phone_number,
                "properties": profile.properties,
                "subscriptions": {
                    "email": {"marketing": {"suppression": suppression}},
                    "sms": {"marketing": {"consent": profile.sms_consent or "NEVER_SUBSCRIBED"}},
                },
            },
        }

    def _upsert(self, resource: dict[str, Any]) -> tuple[Profile | None, str | None]:
        """Apply one profile resource; (profile, None) or (None, why it was refused)."""
        attributes = resource.get("attributes") or {}
        email, phone = attributes.get("email"), attributes.get("phone_number")
        if not email and not phone:
            return None, "A profile needs an email or a phone number."
        if email is not None and not EMAIL.match(email):
            return None, f"Invalid email address: {email}"
        if phone is not None and not E164.match(phone):
            return None, f"Invalid phone number format (must be E.164): {phone}"
        rejected = self.faults.reject.get(email or phone)
        if rejected:
            return None, rejected[1]
        if (attributes.get("subscriptions") or {}) or "consent" in json.dumps(attributes):
            self.violations.append(f"consent sent in a profile upsert for {email or phone}")
        profile = (self.find("email", email) if email else None) or (
            self.find("phone_number", phone) if phone else None
        )
        if profile is None:
            profile = self.add_profile(email, phone)
        patch = (resource.get("meta") or {}).get("patch_properties") or {}
        for prop, values in (patch.get("append") or {}).items():
            current = profile.properties.setdefault(prop, [])
            current.extend(values if isinstance(values, list) else [values])  # no de-duplication
        for prop, values in (patch.get("unappend") or {}).items():
            gone = set(values if isinstance(values, list) else [values])
            profile.properties[prop] = [v for v in profile.properties.get(prop, []) if v not in gone]
        return profile, None

    def _profile_import(self, query: dict[str, str], document: Any) -> Reply:
        resource = document.get("data") or {}
        known = self.find("email", (resource.get("attributes") or {}).get("email") or "")
        profile, problem = self._upsert(resource)
        if profile is None:
            return _error(400, "invalid", problem or "invalid", pointer="/data/attributes")
        return _json(200 if known else 201, {"data": self._profile_resource(profile)})

    # --- jobs ------------------------------------------------------------------------------
    def _new_job(self, kind: str, payload: dict[str, Any], total: int, type_: str) -> Reply:
        job = Job(f"job{next(self._ids)}", kind, payload, total=total)
        self.jobs[job.id] = job
        return _json(202, {"data": self._job_resource(job, type_)})

    def _job_resource(self, job: Job, type_: str | None = None) -> dict[str, Any]:
        kind = (
            type_
            or {
                "import": "profile-bulk-import-job",
                "suppress": "profile-suppression-bulk-create-job",
                "unsuppress": "profile-suppression-bulk-delete-job",
            }[job.kind]
        )
        return {
            "type": kind,
            "id": job.id,
            "attributes": {
                "status": job.status,
                "total_count": job.total,
                "completed_count": job.completed,
                "failed_count": job.failed,
                "skipped_count": job.skipped,
            },
        }

    def _create_import(self, query: dict[str, str], document: Any) -> Reply:
        profiles = (((document.get("data") or {}).get("attributes") or {}).get("profiles") or {}).get("data")
        if not isinstance(profiles, list) or not profiles:
            return _error(400, "invalid", "profiles.data is required.", pointer="/data/attributes/profiles")
        if len(profiles) > 10_000:
            return _error(400, "invalid", "A job accepts up to 10,000 profiles.", pointer="/data/attributes")
        if len(json.dumps(document)) > 5_000_000:
            return _error(413, "request_too_large", "The maximum allowed payload size is 5MB.")
        return self._new_job("import", document, len(profiles), "profile-bulk-import-job")

    def _get_job(self, query: dict[str, str], document: Any, id: str) -> Reply:
        job = self.jobs.get(id)
        if job is None:
            return _error(404, "not_found", f"Job {id} not found.")
        if job.status in ("queued", "processing") and not self.faults.stuck:
            job.polls += 1
            if job.polls >= self.polls_to_finish:
                self._finish(job)
            else:
                job.status = "processing"
        return _json(200, {"data": self._job_resource(job)})

    def _finish(self, job: Job) -> None:
        if self.faults.cancel:
            self.faults.cancel -= 1
            job.status = "cancelled"
            return
        data = job.payload["data"]
        profiles = data["attributes"]["profiles"]["data"]
        if job.kind == "import":
            lists = [
                item["id"] for item in ((data.get("relationships") or {}).get("lists") or {}).get("data", [])
            ]
            for index, resource in enumerate(profiles):
                profile, problem = self._upsert(resource)
                if profile is None:
                    job.failed += 1
                    if not self.faults.unitemised:
                        job.errors.append({
                            "type": "import-error", "id": f"err{next(self._ids)}",
                            "attributes": {
                                "code": "invalid", "title": "Invalid input", "detail": problem,
                                "source": {"pointer": f"/data/attributes/profiles/data/{index}"},
                                "original_payload": resource.get("attributes"),
                            },
                        })  # fmt: skip
                    continue
                job.completed += 1
                for list_id in lists:
                    self.lists.setdefault(list_id, set()).add(profile.id)
        else:
            for resource in profiles:
                email = (resource.get("attributes") or {}).get("email") or ""
                profile = self.find("email", email)
                if job.kind == "suppress":
                    if not EMAIL.match(email) or (profile is not None and profile.suppression):
                        job.skipped += 1
                        continue
                    (profile or self.add_profile(email)).suppression = "USER_SUPPRESSED"
                elif profile is not None and profile.suppression == "USER_SUPPRESSED":
                    profile.suppression = None  # only USER_SUPPRESSED is ever lifted
                job.completed += 1
        job.status = "complete"

    def _errors(self, query: dict[str, str], document: Any, id: str) -> Reply:
        job = self.jobs.get(id)
        if job is None:
            return _error(404, "not_found", f"Job {id} not found.")
        size = int(query.get("page[size]", 20))
        start = int(query.get("page[cursor]", 0))
        page = job.errors[start : start + size]
        links: dict[str, str] = {"self": ""}
        if start + size < len(job.errors):
            links["next"] = (
                f"{self._origin}/api/profile-bulk-import-jobs/{id}/import-errors"
                f"?page[size]={size}&page[cursor]={start + size}"
            )
        return _json(200, {"data": page, "links": links})

    def _suppression_profiles(self, document: Any) -> list[dict[str, Any]] | Reply:
        profiles = (((document.get("data") or {}).get("attributes") or {}).get("profiles") or {}).get("data")
        if not isinstance(profiles, list) or not profiles:
            return _error(400, "invalid", "profiles.data is required.")
        if len(profiles) > 100:
            return _error(400, "invalid", "Email address per request limit: 100.")
        return profiles

    def _create_suppress(self, query: dict[str, str], document: Any) -> Reply:
        profiles = self._suppression_profiles(document)
        if isinstance(profiles, tuple):
            return profiles
        return self._new_job("suppress", document, len(profiles), "profile-suppression-bulk-create-job")

    def _create_unsuppress(self, query: dict[str, str], document: Any) -> Reply:
        profiles = self._suppression_profiles(document)
        if isinstance(profiles, tuple):
            return profiles
        return self._new_job("unsuppress", document, len(profiles), "profile-suppression-bulk-delete-job")

    # --- consent ---------------------------------------------------------------------------
    def _unsubscribe(self, query: dict[str, str], document: Any) -> Reply:
        data = document.get("data") or {}
        if (data.get("relationships") or {}).get("list"):
            self.violations.append("unsubscribe job with a list: Klaviyo unsubscribes non-members globally")
        profiles = self._suppression_profiles(document)
        if isinstance(profiles, tuple):
            return profiles
        for resource in profiles:
            attributes = resource.get("attributes") or {}
            phone = attributes.get("phone_number")
            if phone is not None and not E164.match(phone):
                return _error(400, "invalid", f"Invalid phone number format (must be E.164): {phone}")
        for resource in profiles:
            attributes = resource.get("attributes") or {}
            sms = ((attributes.get("subscriptions") or {}).get("sms") or {}).get("marketing") or {}
            phone = attributes.get("phone_number")
            if phone and sms.get("consent") == "UNSUBSCRIBED":
                (
                    self.find("phone_number", phone) or self.add_profile(phone=phone)
                ).sms_consent = "UNSUBSCRIBED"
        return 202, {}, ""

    def _subscribe(self, query: dict[str, str], document: Any) -> Reply:
        self.violations.append("bulk subscribe job called")
        return 202, {}, ""

    # --- lists -----------------------------------------------------------------------------
    def _get_list(self, query: dict[str, str], document: Any, id: str) -> Reply:
        if id not in self.lists:
            return _error(404, "not_found", f"A list with id {id} does not exist.")
        return _json(200, {"data": {"type": "list", "id": id, "attributes": {"name": id}}})

    def _list_ids(self, document: Any, id: str) -> list[str] | Reply:
        if id not in self.lists:
            return _error(404, "not_found", f"A list with id {id} does not exist.")
        ids = [item["id"] for item in document.get("data", [])]
        if len(ids) > 1000:
            return _error(400, "invalid", "A maximum of 1000 profiles per call.")
        return ids

    def _list_add(self, query: dict[str, str], document: Any, id: str) -> Reply:
        ids = self._list_ids(document, id)
        if isinstance(ids, tuple):
            return ids
        self.lists[id].update(i for i in ids if i in self.profiles)
        return 204, {}, ""

    def _list_remove(self, query: dict[str, str], document: Any, id: str) -> Reply:
        ids = self._list_ids(document, id)
        if isinstance(ids, tuple):
            return ids
        self.lists[id].difference_update(ids)
        return 204, {}, ""


def _json(status: int, body: object) -> Reply:
    return status, {"Content-Type": JSON_API}, json.dumps(body)


def _error(status: int, code: str, detail: str, pointer: str = "/data") -> Reply:
    body = {
        "errors": [
            {
                "id": "00000000-0000-0000-0000-000000000000",
                "status": status,
                "code": code,
                "title": detail.split(".")[0],
                "detail": detail,
                "source": {"pointer": pointer},
            }
        ]
    }
    return status, {"Content-Type": JSON_API}, json.dumps(body)
