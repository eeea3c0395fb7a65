"""A stateful fake of the parts of HubSpot's API personasync uses.

:class:`HubSpotModel` holds the account (contacts keyed by record id with a unique,
lower-cased email; contact property definitions; lists; subscription types and the
subscription status of each email) and HubSpot's rules as its published specs state them
(``HubSpot/HubSpot-public-api-spec-collection``, ``PublicApiSpecs/...``; see
``shared/vendor-apis.md`` §12). Like the Klaviyo model it answers one request at a time
and knows nothing of the transport: :meth:`HubSpotModel.attach` serves it through
``responses``, ``tests.emulators.hubspot`` over real sockets.

What the specs say, and the model does:

- ``CRM/Contacts/.../v3/contacts.json``: batch read and batch upsert answer
  ``{status, results, startedAt, completedAt}`` plus ``numErrors`` and ``errors``
  (``StandardError``: ``status``, ``category``, ``message``, ``context``: name -> list of
  strings) when something failed. Upsert inputs need ``id`` and ``properties``
  (``idProperty`` and ``objectWriteTraceId`` optional); each result has ``id``, ``new``,
  ``properties``, ``createdAt``, ``updatedAt`` (and the input's ``objectWriteTraceId``).
  Batch read *requires* ``inputs``, ``properties`` and ``propertiesWithHistory``; asking
  for history lowers the cap to 50 inputs. Unknown or read-only properties are errors;
  ``""`` clears a value; a multiple-checkbox value is ``;``-separated option values.
- HubSpot answers a batch read that finds only some contacts with 207 and one
  ``OBJECT_NOT_FOUND`` error naming every missing id in ``context.ids`` (the message is
  the one integrators quote; third-party evidence, e.g. HubSpot/hubspot-api-php#619).
- ``CRM/Properties/.../v3/properties.json``: create answers 201; ``name``, ``label``,
  ``type`` (string|number|date|datetime|enumeration|bool), ``fieldType`` (textarea|text|
  date|file|number|select|radio|checkbox|booleancheckbox|calculation_equation) and
  ``groupName`` are required; ``options`` is required for enumerations, each with
  ``label``, ``value`` and ``hidden``. Update is "a partial update ... Provided fields
  will be overwritten": sending ``options`` replaces the whole option list.
- ``CRM/Lists/.../v3/lists.json``: ``GET /crm/v3/lists/{id}`` answers ``{"list": {...}}``;
  ``add-and-remove`` takes ``recordIdsToAdd`` and ``recordIdsToRemove`` (both required,
  record id strings), works only on MANUAL or SNAPSHOT lists, ignores records already
  in (or not in) the list and reports unknown ones in ``recordIdsMissing``. The answer's
  added field is spelled ``recordsIdsAdded`` in the schema (the spec's own example says
  ``recordIdsAdded``; HubSpot's SDKs use the schema's spelling and integrators report
  live answers do too).
- ``Communication Preferences/Subscriptions/.../v4/subscriptions.json``:
  ``GET /communication-preferences/v4/definitions`` lists subscription types (their ``id``
  is a *string* there, while status writes take an integer ``subscriptionId``);
  ``statuses/batch/write`` inputs need ``subscriberIdString``, ``channel`` (only
  ``EMAIL``), ``statusState`` (SUBSCRIBED|UNSUBSCRIBED|NOT_SPECIFIED) and
  ``subscriptionId``; ``legalBasis`` is optional but must be one of the listed bases.
  Each result is a ``PublicStatus`` with ``setStatusSuccessReason``.
- Errors are ``{"status": "error", "message", "correlationId", "category"}``; 429s carry
  ``errorType: RATE_LIMIT`` and a ``policyName`` (``DAILY`` or ``TEN_SECONDLY_ROLLING``);
  every answer carries the ``X-HubSpot-RateLimit-*`` headers (vendor-apis.md §12).

Where the specs are silent we take the harsher reading:

- A batch upsert is all or nothing: one invalid input (unknown or read-only property, a
  value that is not an option, an invalid email, a ``faults.reject``) fails the whole
  call with 400 ``VALIDATION_ERROR`` naming only the first bad input, and nothing is
  written. HubSpot documents 207 partial success only when you enable it by giving every
  input a unique ``objectWriteTraceId`` (developers.hubspot.com/docs/api-reference/
  error-handling, "Multi-status errors", stated for batch create). With unique trace ids
  on every input the model answers 207: the good inputs are written and each bad one is
  an error whose ``context`` names only ``objectWriteTraceId`` (not the email).
- Duplicate ids (case-insensitively) in one batch: 400 for the whole batch. An empty
  ``inputs``, a non-string property value, an ``idProperty`` other than ``email``
  (the only one modelled), a record id that is not a string of digits: 400.
- Only a multiple-checkbox value is split on ``;``: for a select or radio property the
  whole value must be one option (``a;b`` is refused). Other types are stored as given.
- A batch read's requested properties that are defined but unset come back as ``null``;
  histories are not modelled (``propertiesWithHistory`` only lowers the cap).
- The spec declares only 200 for ``statuses/batch/write``: per-input failures (unknown
  subscription, invalid email, ``faults.reject``) come back in ``errors`` of a **200**
  answer, so a client must look inside. At most 100 inputs (no limit is published).
  Every SUBSCRIBED input is recorded in :attr:`HubSpotModel.violations`, applied or
  not: personasync promises never to subscribe anyone. HubSpot applies it all the same.
- No ``Retry-After`` on 429 unless ``faults.retry_after`` is set (unverified either way).
  The ten-secondly window is rolling (the policy's name says so); the model's
  ``X-HubSpot-RateLimit-Remaining`` counts its own calls in the last 10 seconds. The
  daily limit defaults to Professional's 650,000.
- 502 from ``faults.errors_5xx`` has an HTML body, as a gateway's would; 503 is JSON.
- Responses say ``application/json;charset=utf-8``; request bodies must be JSON (415).
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import requests
import responses

Reply = tuple[int, dict[str, str], str]
JSON = "application/json;charset=utf-8"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
BASE_URL = "https://api.hubapi.com"
MAX_INPUTS = 100
MAX_INPUTS_WITH_HISTORY = 50
TEN_SECOND_MAX = 190
FIELD_TYPES = {  # property type -> the field types it may be shown with
    "string": {"text", "textarea", "file"},
    "number": {"number", "calculation_equation"},
    "date": {"date"},
    "datetime": {"date"},
    "enumeration": {"checkbox", "select", "radio", "booleancheckbox"},
    "bool": {"booleancheckbox"},
}
TYPE_OF_FIELD = {"checkbox": "enumeration", "select": "enumeration", "radio": "enumeration",
                 "booleancheckbox": "bool", "text": "string", "textarea": "string", "number": "number",
                 "date": "date"}  # fmt: skip
UPDATABLE = ("label", "description", "groupName", "hidden", "displayOrder", "formField", "type", "fieldType")
READ_ONLY = {"hs_object_id", "createdate", "lastmodifieddate"}
STATES = {"SUBSCRIBED", "UNSUBSCRIBED", "NOT_SPECIFIED"}
LEGAL_BASES = {
    "CONSENT_WITH_NOTICE",
    "LEGITIMATE_INTEREST_CLIENT",
    "LEGITIMATE_INTEREST_OTHER",
    "LEGITIMATE_INTEREST_PQL",
    "NON_GDPR",
    "PERFORMANCE_OF_CONTRACT",
    "PROCESS_AND_STORE",
}
EPOCH = "2026-01-01T00:00:00.000Z"  # when the lists and subscription types were made
NOT_FOUND = "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid."
RATE_LIMITED = {
    "DAILY": "You have reached your daily limit.",
    "TEN_SECONDLY_ROLLING": "You have reached your ten_secondly_rolling limit.",
}


@dataclass
class Contact:
    id: str  # numeric string, HubSpot's record id
    email: str  # lower-cased, unique
    properties: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""


@dataclass
class CrmList:
    list_id: str
    name: str
    processing_type: str = "MANUAL"  # MANUAL | SNAPSHOT | DYNAMIC
    members: set[str] = field(default_factory=set)  # record ids


@dataclass
class Faults:
    throttle: int = 0  # answer this many calls with a TEN_SECONDLY_ROLLING 429
    retry_after: str | None = None  # Retry-After on 429s (HubSpot's is unverified)
    daily_exhausted: bool = False  # every call answers a DAILY 429
    errors_5xx: int = 0  # answer this many calls with error_5xx_status, before doing anything
    error_5xx_status: int = 502  # 502 (HTML body) or 503 (JSON)
    timeouts: int = 0  # process the call, then raise a read timeout
    drops: int = 0  # drop the connection before processing
    reject: dict[str, str] = field(default_factory=dict)  # email -> VALIDATION_ERROR message


class _Refused(Exception):
    """Raised by a validator: the whole request is answered with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply[0])
        self.reply = reply


class HubSpotModel:
    def __init__(
        self, token: str, *, daily_limit: int = 650_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.token = token
        self.daily_limit = daily_limit
        self.contacts: dict[str, Contact] = {}  # record id -> contact
        self.properties: dict[str, dict[str, Any]] = {
            name: _definition(name, label, type_, field_type, [], hubspot_defined=True)
            for name, label, type_, field_type in (
                ("email", "Email", "string", "text"),
                ("firstname", "First Name", "string", "text"),
                ("lastname", "Last Name", "string", "text"),
                ("hs_object_id", "Record ID", "number", "number"),
                ("createdate", "Create Date", "datetime", "date"),
                ("lastmodifieddate", "Last Modified Date", "datetime", "date"),
            )
        }
        self.lists: dict[str, CrmList] = {}
        self.subscriptions: dict[int, str] = {}  # subscription id -> name
        self.statuses: dict[tuple[str, int], str] = {}  # (email, subscription id) -> state
        self.faults = Faults()
        self.calls: list[tuple[str, str]] = []
        self.violations: list[str] = []  # things HubSpot would do that we promised never to cause
        self.daily_used = 0
        self._clock = clock
        self._recent: deque[float] = deque()  # times of the calls in the last 10 seconds
        self._ids = itertools.count(1001)
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Reply]]] = [
            ("GET", re.compile(r"/crm/v3/properties/contacts/(?P<name>[^/]+)/?"), self._get_property),
            ("PATCH", re.compile(r"/crm/v3/properties/contacts/(?P<name>[^/]+)/?"), self._update_property),
            ("POST", re.compile(r"/crm/v3/properties/contacts/?"), self._create_property),
            ("POST", re.compile(r"/crm/v3/objects/contacts/batch/read/?"), self._batch_read),
            ("POST", re.compile(r"/crm/v3/objects/contacts/batch/upsert/?"), self._batch_upsert),
            ("GET", re.compile(r"/crm/v3/lists/(?P<list_id>[^/]+)/?"), self._get_list),
            (
                "PUT",
                re.compile(r"/crm/v3/lists/(?P<list_id>[^/]+)/memberships/add-and-remove/?"),
                self._add_and_remove,
            ),
            ("GET", re.compile(r"/communication-preferences/v4/definitions/?"), self._definitions),
            (
                "POST",
                re.compile(r"/communication-preferences/v4/statuses/batch/write/?"),
                self._write_statuses,
            ),
        ]

    # --- what tests set up and look at -----------------------------------------------------
    def add_contact(self, email: str, **properties: str) -> Contact:
        if self.contact(email) is not None:
            raise ValueError(f"a contact with email {email} exists already")
        now = _now()
        contact = Contact(str(next(self._ids)), email.lower(), dict(properties), now, now)
        self.contacts[contact.id] = contact
        return contact

    def add_property(self, name: str, options: list[str], field_type: str = "checkbox") -> dict[str, Any]:
        choices = [{"label": value, "value": value, "hidden": False} for value in options]
        self.properties[name] = _definition(name, name, TYPE_OF_FIELD[field_type], field_type, choices)
        return self.properties[name]

    def add_list(
        self, list_id: str | int, processing_type: str = "MANUAL", name: str | None = None
    ) -> CrmList:
        crm_list = CrmList(str(list_id), name or f"List {list_id}", processing_type)
        self.lists[crm_list.list_id] = crm_list
        return crm_list

    def add_subscription(self, subscription_id: int, name: str) -> None:
        self.subscriptions[subscription_id] = name

    def contact(self, email: str) -> Contact | None:
        return next((c for c in self.contacts.values() if c.email == email.lower()), None)

    def tags(self, prop: str = "personasync_personas") -> dict[str, frozenset[str]]:
        """email -> the ``;``-separated values of ``prop``, for contacts where it is set."""
        tagged = {
            c.email: frozenset(v for v in c.properties.get(prop, "").split(";") if v)
            for c in self.contacts.values()
        }
        return {email: values for email, values in tagged.items() if values}

    def list_members(self, list_id: str | int) -> set[str]:
        return {self.contacts[i].email for i in self.lists[str(list_id)].members}

    def status(self, email: str, subscription_id: int) -> str:
        return self.statuses.get((email.lower(), subscription_id), "NOT_SPECIFIED")

    def unsubscribed(self, subscription_id: int) -> set[str]:
        return {
            e for (e, s), state in self.statuses.items() if s == subscription_id and state == "UNSUBSCRIBED"
        }

    def writes(self) -> int:
        """Calls that may change the account (a batch read is a POST but only reads)."""
        return sum(1 for method, path in self.calls if method != "GET" and not path.endswith("/batch/read"))

    # --- transport -------------------------------------------------------------------------
    def attach(self, rsps: responses.RequestsMock, base_url: str = BASE_URL) -> None:
        def callback(request: requests.PreparedRequest) -> Reply:
            raw = request.body or b""
            body = raw.encode() if isinstance(raw, str) else raw
            return self.handle(str(request.method), str(request.url), dict(request.headers), body)

        pattern = re.compile(re.escape(base_url) + r"/.*")
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            rsps.add_callback(method, pattern, callback)

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
        """One request in, one answer out (or a transport fault raised as requests does)."""
        path = urlsplit(url).path
        self.calls.append((method, path))
        self.daily_used += 1
        now = self._clock()
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - 10:
            self._recent.popleft()
        status, extra, text = self._answer(method, path, {k.lower(): v for k, v in headers.items()}, body)
        return status, {**self._rate_headers(), **extra}, text

    def throttled_reply(self, group: str, reset: float) -> Reply:
        """HubSpot's 429 for a request over the ten-secondly limit; for an emulator whose
        windows refused the request (so it never reached the model and is not counted)."""
        status, extra, text = self._rate_limited("TEN_SECONDLY_ROLLING")
        return status, {**self._rate_headers(), **extra}, text

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
        faults = self.faults
        if faults.drops:
            faults.drops -= 1
            raise requests.ConnectionError("Connection aborted: RemoteDisconnected")
        if faults.daily_exhausted or self.daily_used > self.daily_limit:
            return self._rate_limited("DAILY")
        if faults.throttle:
            faults.throttle -= 1
            return self._rate_limited("TEN_SECONDLY_ROLLING")
        if faults.errors_5xx:
            faults.errors_5xx -= 1
            return _server_error(faults.error_5xx_status)
        for route_method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                try:
                    reply = handler(_document(headers, body), **match.groupdict())
                except _Refused as refused:
                    reply = refused.reply
                if faults.timeouts:  # processed, but the answer never arrives
                    faults.timeouts -= 1
                    raise requests.ReadTimeout("read timed out")
                return reply
        return _error(404, "OBJECT_NOT_FOUND", f"No route for {method} {path}.")

    def _rate_limited(self, policy: str) -> Reply:
        body = {
            "status": "error",
            "message": RATE_LIMITED[policy],
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "requestId": str(uuid.uuid4()),
        }
        headers = {"Content-Type": JSON}
        if policy == "TEN_SECONDLY_ROLLING":
            headers["X-HubSpot-RateLimit-Remaining"] = "0"
        if self.faults.retry_after:
            headers["Retry-After"] = self.faults.retry_after
        return 429, headers, json.dumps(body)

    def _rate_headers(self) -> dict[str, str]:
        daily_left = 0 if self.faults.daily_exhausted else max(0, self.daily_limit - self.daily_used)
        return {
            "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(daily_left),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Max": str(TEN_SECOND_MAX),
            "X-HubSpot-RateLimit-Remaining": str(max(0, TEN_SECOND_MAX - len(self._recent))),
        }

    # --- properties ------------------------------------------------------------------------
    def _property(self, name: str) -> dict[str, Any]:
        if name not in self.properties:
            raise _Refused(
                _error(404, "OBJECT_NOT_FOUND", f"Unable to find property {name} on object CONTACT.")
            )
        return self.properties[name]

    def _get_property(self, document: Any, name: str) -> Reply:
        return _json(200, self._property(name))

    def _create_property(self, document: Any) -> Reply:
        missing = [
            key for key in ("name", "label", "type", "fieldType", "groupName") if not document.get(key)
        ]
        if missing:
            raise _bad(f"Missing required fields: {', '.join(missing)}")
        name = document["name"]
        if not PROPERTY_NAME.match(name):
            raise _bad(f"Invalid property name {name!r}: lower case letters, digits and _ only.")
        _check_types(document["type"], document["fieldType"])
        enumeration = document["type"] == "enumeration"
        if enumeration and "options" not in document:
            raise _bad("options is required for enumeration properties.")
        options = _options(document.get("options") or [])
        if name in self.properties:
            return _error(409, "OBJECT_ALREADY_EXISTS", f"Property named '{name}' already exists.")
        extra = {key: document[key] for key in UPDATABLE if key in document}
        self.properties[name] = {**_definition(name, "", "", "", options), **extra}
        return _json(201, self.properties[name])

    def _update_property(self, document: Any, name: str) -> Reply:
        current = self._property(name)
        _check_types(document.get("type", current["type"]), document.get("fieldType", current["fieldType"]))
        updated = {**current, **{key: document[key] for key in UPDATABLE if key in document}}
        if "options" in document:  # a provided field is overwritten: the list is replaced
            updated["options"] = _options(document["options"])
        updated["updatedAt"] = _now()
        self.properties[name] = updated
        return _json(200, updated)

    def _value_problem(self, name: str, value: str) -> dict[str, Any] | None:
        """Why ``value`` cannot be written to ``name``, as HubSpot words it, or None."""
        definition = self.properties.get(name)
        if definition is None:
            return _problem(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
        if name in READ_ONLY:
            return _problem(
                name, "READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.'
            )
        if value == "" or definition["type"] != "enumeration":
            return None  # "" clears the value; other types are stored as given
        allowed = [option["value"] for option in definition["options"]]
        multiple = definition["fieldType"] == "checkbox"
        for chosen in [v for v in value.split(";") if v] if multiple else [value]:
            if chosen not in allowed:
                why = f"{chosen} was not one of the allowed options: [{', '.join(allowed)}]"
                return _problem(name, "INVALID_OPTION", why)
        return None

    # --- contacts --------------------------------------------------------------------------
    def _batch_read(self, document: Any) -> Reply:
        id_property = document.get("idProperty")
        if id_property not in (None, "email"):
            raise _bad(f"idProperty {id_property!r} is not modelled: use email or record ids.")
        for key in ("properties", "propertiesWithHistory"):
            if not _strings(document.get(key)):
                raise _bad(f"{key} is required: a list of property names (may be empty).")
        limit = MAX_INPUTS_WITH_HISTORY if document["propertiesWithHistory"] else MAX_INPUTS
        ids = [_required_string(item, "id") for item in _inputs(document, limit)]
        started = _now()
        found, missing = [], []
        for record in ids:
            contact = self.contact(record) if id_property == "email" else self.contacts.get(record)
            if contact is None:
                missing.append(record)
            else:
                found.append(self._read_result(contact, document["properties"]))
        errors = [_batch_error("OBJECT_NOT_FOUND", NOT_FOUND, ids=missing)] if missing else []
        return _batch_reply(started, found, errors, partial_status=207)

    def _read_result(self, contact: Contact, requested: list[str]) -> dict[str, Any]:
        values: dict[str, str | None] = {
            n: contact.properties.get(n) for n in requested if n in self.properties
        }
        return {
            "id": contact.id,
            "properties": {**values, **_builtin_values(contact)},
            "createdAt": contact.created_at,
            "updatedAt": contact.updated_at,
            "archived": False,
        }

    def _batch_upsert(self, document: Any) -> Reply:
        inputs = [_upsert_input(item) for item in _inputs(document, MAX_INPUTS)]
        emails = [email.lower() for email, _, _ in inputs]
        duplicates = sorted({e for e in emails if emails.count(e) > 1})
        if duplicates:
            raise _bad(f"Duplicate IDs found in batch input: [{', '.join(duplicates)}]. IDs must be unique.")
        refusals = [self._refusal(email, properties) for email, properties, _ in inputs]
        failures = {i: why for i, why in enumerate(refusals) if why}
        traces = [trace for _, _, trace in inputs]
        multi_status = all(traces) and len(set(traces)) == len(traces)
        if failures and not multi_status:
            raise _Refused(_error(400, "VALIDATION_ERROR", next(iter(failures.values()))))
        started = _now()
        results = [self._upsert(*item) for i, item in enumerate(inputs) if i not in failures]
        errors = [
            _batch_error("VALIDATION_ERROR", why, objectWriteTraceId=[str(inputs[i][2])])
            for i, why in failures.items()
        ]
        return _batch_reply(started, results, errors, partial_status=207)

    def _refusal(self, email: str, properties: dict[str, str]) -> str | None:
        """Why one upsert input would be refused, or None."""
        rejected = self._rejected(email)
        if rejected:
            return rejected
        problems = [self._value_problem(name, value) for name, value in properties.items()]
        if not EMAIL.match(email):
            problems.insert(0, _problem("email", "INVALID_EMAIL", f"Email address {email} is invalid"))
        problems = [problem for problem in problems if problem]
        return f"Property values were not valid: {json.dumps(problems)}" if problems else None

    def _rejected(self, email: str) -> str | None:
        return next((why for who, why in self.faults.reject.items() if who.lower() == email.lower()), None)

    def _upsert(self, email: str, properties: dict[str, str], trace: str | None) -> dict[str, Any]:
        contact = self.contact(email)
        new = contact is None
        contact = contact or self.add_contact(email)
        for name, value in properties.items():
            if name == "email":
                continue
            if value == "":
                contact.properties.pop(name, None)
            else:
                contact.properties[name] = value
        contact.updated_at = _now()
        result = {
            "id": contact.id,
            "new": new,
            "properties": {**properties, **_builtin_values(contact)},
            "createdAt": contact.created_at,
            "updatedAt": contact.updated_at,
            "archived": False,
        }
        return {**result, "objectWriteTraceId": trace} if trace else result

    # --- lists -----------------------------------------------------------------------------
    def _list(self, list_id: str) -> CrmList:
        if list_id not in self.lists:
            raise _Refused(_error(404, "OBJECT_NOT_FOUND", f"List {list_id} does not exist."))
        return self.lists[list_id]

    def _get_list(self, document: Any, list_id: str) -> Reply:
        crm_list = self._list(list_id)
        resource = {
            "listId": crm_list.list_id,
            "name": crm_list.name,
            "processingType": crm_list.processing_type,
            "processingStatus": "COMPLETE",
            "objectTypeId": "0-1",  # contacts
            "listVersion": 1,
            "size": len(crm_list.members),
            "createdAt": EPOCH,
            "updatedAt": EPOCH,
        }
        return _json(200, {"list": resource})

    def _add_and_remove(self, document: Any, list_id: str) -> Reply:
        crm_list = self._list(list_id)
        to_add = _record_ids(document, "recordIdsToAdd")
        to_remove = _record_ids(document, "recordIdsToRemove")
        if crm_list.processing_type not in ("MANUAL", "SNAPSHOT"):
            kind = crm_list.processing_type
            raise _bad(f"List {list_id} is {kind}: only MANUAL and SNAPSHOT lists take membership changes.")
        missing = [i for i in dict.fromkeys(to_add + to_remove) if i not in self.contacts]
        added = [i for i in dict.fromkeys(to_add) if i in self.contacts and i not in crm_list.members]
        removed = [i for i in dict.fromkeys(to_remove) if i in crm_list.members]
        crm_list.members.update(added)
        crm_list.members.difference_update(removed)
        return _json(
            200, {"recordIdsMissing": missing, "recordsIdsAdded": added, "recordIdsRemoved": removed}
        )

    # --- subscriptions ---------------------------------------------------------------------
    def _definitions(self, document: Any) -> Reply:
        started = _now()
        results = [
            {
                "id": str(sid),  # a string here, an integer subscriptionId in status writes
                "name": name,
                "description": "",
                "purpose": "Marketing",
                "communicationMethod": "Email",
                "isActive": True,
                "isDefault": False,
                "isInternal": False,
                "createdAt": EPOCH,
                "updatedAt": EPOCH,
            }
            for sid, name in self.subscriptions.items()
        ]
        return _batch_reply(started, results, [], partial_status=200)

    def _write_statuses(self, document: Any) -> Reply:
        inputs = [_status_input(item) for item in _inputs(document, MAX_INPUTS)]
        started = _now()
        results, errors = [], []
        for item in inputs:
            email = item["subscriberIdString"]
            if item["statusState"] == "SUBSCRIBED":
                self.violations.append(f"subscribed {email}")
            refused = self._status_refusal(email, item["subscriptionId"])
            if refused:
                errors.append(_batch_error(*refused, subscriberIdString=[email]))
            else:
                results.append(self._set_status(item))
        return _batch_reply(started, results, errors, partial_status=200)

    def _status_refusal(self, email: str, subscription_id: int) -> tuple[str, str] | None:
        rejected = self._rejected(email)
        if rejected:
            return "VALIDATION_ERROR", rejected
        if not EMAIL.match(email):
            return "VALIDATION_ERROR", f"Invalid email address: {email}"
        if subscription_id not in self.subscriptions:
            return "OBJECT_NOT_FOUND", f"Subscription {subscription_id} does not exist."
        return None

    def _set_status(self, item: dict[str, Any]) -> dict[str, Any]:
        email, state, subscription = item["subscriberIdString"], item["statusState"], item["subscriptionId"]
        before = self.status(email, subscription)
        self.statuses[(email.lower(), subscription)] = state
        if before == state:
            reason = "NO_STATUS_CHANGE"
        elif before == "UNSUBSCRIBED" and state == "SUBSCRIBED":
            reason = "RESUBSCRIBE_OCCURRED"
        else:
            reason = "REQUESTED_CHANGE_OCCURRED"
        return {
            "subscriberIdString": email,
            "channel": "EMAIL",
            "status": state,
            "subscriptionId": subscription,
            "subscriptionName": self.subscriptions[subscription],
            "source": "API",
            "timestamp": _now(),
            "setStatusSuccessReason": reason,
            **{key: item[key] for key in ("legalBasis", "legalBasisExplanation") if key in item},
        }


# --- request shapes (raise _Refused: the whole call is a 400) ----------------------------------
def _document(headers: dict[str, str], body: bytes) -> Any:
    if not body:
        return {}
    if not headers.get("content-type", "").lower().startswith("application/json"):
        raise _Refused(_error(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json."))
    try:
        return json.loads(body)
    except ValueError as error:
        raise _bad(f"Invalid input JSON: {error}") from None


def _inputs(document: Any, limit: int) -> list[Any]:
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise _bad("inputs is required: a non-empty array.")
    if len(inputs) > limit:
        raise _bad(f"Batch input limit exceeded: at most {limit} inputs, received {len(inputs)}.")
    return inputs


def _required_string(item: Any, key: str) -> str:
    value = item.get(key) if isinstance(item, dict) else None
    if not isinstance(value, str) or not value:
        raise _bad(f"Each input needs {key}: a non-empty string.")
    return value


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _upsert_input(item: Any) -> tuple[str, dict[str, str], str | None]:
    email = _required_string(item, "id")
    if item.get("idProperty") != "email":
        raise _bad("Each input needs idProperty: email (the only unique property modelled).")
    properties = item.get("properties")
    if not isinstance(properties, dict) or not all(isinstance(v, str) for v in properties.values()):
        raise _bad("Each input needs properties: an object of string values.")
    trace = item.get("objectWriteTraceId")
    return email, properties, trace if isinstance(trace, str) and trace else None


def _status_input(item: Any) -> dict[str, Any]:
    _required_string(item, "subscriberIdString")
    if item.get("channel") != "EMAIL":
        raise _bad("channel is required and must be EMAIL.")
    if item.get("statusState") not in STATES:
        raise _bad(f"statusState must be one of {sorted(STATES)}.")
    if not isinstance(item.get("subscriptionId"), int) or isinstance(item["subscriptionId"], bool):
        raise _bad("subscriptionId is required: an integer.")
    if "legalBasis" in item and item["legalBasis"] not in LEGAL_BASES:
        raise _bad(f"legalBasis must be one of {sorted(LEGAL_BASES)}.")
    return dict(item)


def _record_ids(document: Any, key: str) -> list[str]:
    ids = document.get(key) if isinstance(document, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) and i.isdigit() for i in ids):
        raise _bad(f"{key} is required: an array of record id strings.")
    return ids


def _check_types(type_: Any, field_type: Any) -> None:
    if type_ not in FIELD_TYPES:
        raise _bad(f"type must be one of {sorted(FIELD_TYPES)}.")
    if field_type not in FIELD_TYPES[type_]:
        raise _bad(f"fieldType {field_type!r} cannot be used with type {type_!r}.")


def _options(options: Any) -> list[dict[str, Any]]:
    if not isinstance(options, list):
        raise _bad("options must be an array.")
    for option in options:
        if not isinstance(option, dict) or not {"label", "value", "hidden"} <= option.keys():
            raise _bad("Each option needs label, value and hidden.")
    values = [option["value"] for option in options]
    if len(set(values)) != len(values):
        raise _bad(f"Option values must be unique: {values}")
    return [
        {
            "label": option["label"],
            "value": option["value"],
            "hidden": option["hidden"],
            "description": option.get("description", ""),
            "displayOrder": option.get("displayOrder", index),
        }
        for index, option in enumerate(options)
    ]


# --- answers -----------------------------------------------------------------------------------
def _definition(
    name: str, label: str, type_: str, field_type: str, options: list[Any], hubspot_defined: bool = False
) -> dict[str, Any]:
    """A property as ``GET /crm/v3/properties/contacts/{name}`` answers it."""
    now = _now()
    return {
        "name": name,
        "label": label,
        "type": type_,
        "fieldType": field_type,
        "description": "",
        "groupName": "contactinformation",
        "options": _options(options),
        "displayOrder": -1,
        "hidden": False,
        "formField": True,
        "hasUniqueValue": name == "email",
        "hubspotDefined": hubspot_defined,
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": name in READ_ONLY,
        },
        "createdAt": now,
        "updatedAt": now,
        "archived": False,
    }


def _builtin_values(contact: Contact) -> dict[str, str]:
    return {
        "email": contact.email,
        "hs_object_id": contact.id,
        "createdate": contact.created_at,
        "lastmodifieddate": contact.updated_at,
    }


def _problem(name: str, code: str, message: str) -> dict[str, Any]:
    return {"isValid": False, "message": message, "error": code, "name": name}


def _batch_error(category: str, message: str, **context: list[str]) -> dict[str, Any]:
    return {"status": "error", "category": category, "message": message, "context": context}


def _batch_reply(started: str, results: list[Any], errors: list[Any], partial_status: int) -> Reply:
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": _now(),
    }
    if not errors:
        return _json(200, body)
    return _json(partial_status, {**body, "numErrors": len(errors), "errors": errors})


def _json(status: int, body: object) -> Reply:
    return status, {"Content-Type": JSON}, json.dumps(body)


def _error(status: int, category: str, message: str) -> Reply:
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category}
    return _json(status, body)


def _bad(message: str) -> _Refused:
    return _Refused(_error(400, "VALIDATION_ERROR", message))


def _server_error(status: int) -> Reply:
    phrase = HTTPStatus(status).phrase
    if status in (502, 504):  # from the gateway in front of HubSpot: not JSON
        return status, {"Content-Type": "text/html"}, f"<html><body><h1>{status} {phrase}</h1></body></html>"
    return _error(status, "SERVICE_UNAVAILABLE", f"{phrase}: try again in a few seconds.")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
