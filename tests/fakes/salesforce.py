"""A stateful fake of the parts of Salesforce's REST API personasync uses.

:class:`SalesforceModel` holds one org: a connected app's OAuth credentials and the sessions
it issued, the daily API quota, the Contact and Lead schema (including custom fields a test
adds) and their records. Like the Klaviyo model it answers one request at a time and knows
nothing of the transport, so a ``responses`` mock (:meth:`SalesforceModel.attach`) or a real
HTTP server (``tests/emulators/salesforce.py``) can serve it. What it follows:

- **Refresh token flow** [doc https://developer.salesforce.com/docs/atlas.en-us.222.0.api_rest.meta/api/intro_understanding_refresh_token_oauth.htm]:
  ``POST /services/oauth2/token`` form-encoded ``grant_type=refresh_token``, ``client_id``,
  ``client_secret`` (optional unless the app requires it; also accepted as HTTP Basic), and
  ``refresh_token``; the answer carries ``access_token``, ``instance_url``, ``id``,
  ``issued_at``, ``signature``, ``token_type`` [3p jsforce ``oauth2.TokenResponse``]. With
  rotation on, "the connected app issues a new refresh token along with the access token
  each time the flow is invoked. The previous refresh token is automatically invalidated"
  [doc https://help.salesforce.com/apex/HTViewHelpDoc?id=remoteaccess_oauth_refresh_token_flow.htm].
  Refusals: 400 ``invalid_grant`` / "expired access/refresh token", ``invalid_client_id`` /
  "client identifier invalid", ``invalid_client`` / "invalid client credentials" [3p code].
- **Sessions**: an expired access token gets "Session expired or invalid" [doc, same page],
  as 401 ``[{"message", "errorCode": "INVALID_SESSION_ID"}]`` (``shared/vendor-apis.md`` §13).
- **Daily quota**: every REST answer has ``Sforce-Limit-Info: api-usage=used/limit``
  [doc https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm];
  over the limit: 403 ``REQUEST_LIMIT_EXCEEDED`` [doc errorcodes.htm, vendor notes §1] with
  "TotalRequests Limit exceeded." [3p code].
- **sObject Collections upsert** ``PATCH /services/data/vXX.X/composite/sobjects/{Object}/{ExtIdField}``
  (API 46.0+) [doc https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-upsert.html]:
  up to 200 records, only of the URI's type, each with ``attributes.type``; "Only external
  ids are supported"; results in request order; malformed request: 400; else 200 with a
  ``success`` flag and ``errors`` per item; ``allOrNone`` defaults to false. An UpsertResult
  has ``id`` (null on error), ``success``, ``errors``, ``created``
  [doc https://developer.salesforce.com/docs/atlas.en-us.248.0.api.meta/api/sforce_api_calls_upsert_upsertresult.htm].
  With all-or-none, records without errors of their own "indicate that they were rolled back
  due to other errors" [doc https://developer.salesforce.com/docs/platform/api/guide/sforce-api-header-allornoneheader.md]:
  ``ALL_OR_NONE_OPERATION_ROLLED_BACK`` "Record rolled back because not all records were
  valid and the request was using AllOrNone header" [3p code]. 201 records: 400
  ``EXCEEDED_ID_LIMIT`` "record limit reached. cannot submit more than 200 records into
  this call" [3p issues sorenkrabbe/Chrome-Salesforce-inspector#134, superfell/Beatbox#3].
- **Per-record errors**, codes and message shapes as the API returns them [3p code]:
  ``INVALID_FIELD`` "No such column 'X' on sobject of type Contact";
  ``REQUIRED_FIELD_MISSING`` "Required fields are missing: [LastName]" with ``fields``;
  ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`` "<Label>: bad value for restricted picklist
  field: <value>" ("Users can't load unapproved values through the API" [doc
  https://developer.salesforce.com/docs/platform/object-reference/guide/access-for-fields.html]);
  ``INVALID_TYPE_ON_FIELD_IN_RECORD`` "<Label>: value not of required type: <value>" (a
  checkbox sent null gets it); ``DUPLICATE_VALUE`` "Duplicate external id specified: <v>"
  (the same key twice in one call: every record with it fails); ``DUPLICATE_EXTERNAL_ID``
  "<Label>: more than one record found for external id field: [ids]"; ``MISSING_ARGUMENT``
  "<Field> not specified"; ``INVALID_FIELD_FOR_INSERT_UPDATE`` "Unable to create/update
  fields: Id. ...".
- **Query** ``GET /services/data/vXX.X/query?q=`` (only ``SELECT f, ... FROM Object WHERE
  Field IN ('a', ...)``): string comparisons are case-insensitive except on unique
  case-sensitive fields [doc https://developer.salesforce.com/docs/platform/salesforce-soql-sosl/guide/sforce-api-calls-soql-select-comparisonoperators.html];
  escapes ``\\' \\" \\\\ \\n \\r \\t \\b \\f \\uXXXX`` (and upper-case letters), any other backslash
  is an error [doc https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm];
  at most 2,000 rows per answer, then ``nextRecordsUrl``; URI and headers together at most
  16,384 bytes, else 431 (414 when the URI alone is too long) [doc
  https://help.salesforce.com/s/articleView?id=000386264&type=1]. Unknown field:
  ``INVALID_FIELD`` "No such column ... on entity ..."; unsupported syntax ``MALFORMED_QUERY``.
- **Describe** ``GET /services/data/vXX.X/sobjects/{Object}/describe``: a subset of the field
  properties (``name``, ``label``, ``type``, ``length``, ``externalId``, ``idLookup``,
  ``unique``, ``caseSensitive``, ``nillable``, ``createable``, ``updateable``,
  ``defaultedOnCreate``, ``custom``, ``picklistValues``, ``restrictedPicklist``) [doc
  access-for-fields.html above; 3p api-evangelist/salesforce-sales-cloud FieldDescribe schema].

Where the docs are silent we take the harsher reading: an external id matches
case-insensitively on upsert too (so ``ab1`` and ``AB1`` are one record unless the field is
case-sensitive); restricted picklist values match case-sensitively and the stored
multi-select value is re-ordered into the picklist's order, duplicates dropped (an adapter
comparing the string it wrote with the one it reads back sees a difference); field names
in a record body are case-sensitive; a boolean written as a string is refused; the token
endpoint is served only on the login URL (not on My Domain); an empty ``records`` list is a
400; the API version must not be newer than the org's; a 401 carries no
``Sforce-Limit-Info`` (no session, no org); every authenticated call under the quota counts,
whatever its answer, except an injected 503.

personasync promises never to opt a person back in: writing ``HasOptedOutOfEmail: false``
over ``true`` is applied (Salesforce would) and recorded in :attr:`SalesforceModel.violations`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

import requests
import responses

Reply = tuple[int, dict[str, str], str]
JSON = "application/json;charset=UTF-8"
TOKEN_PATH = "/services/oauth2/token"
MAX_RECORDS = 200
MAX_URI_AND_HEADERS = 16_384
FIRST_UPSERT_VERSION = 46.0
KEY_PREFIX = {"Contact": "003", "Lead": "00Q"}
ORG_ID = "00D5g000004ORG1EAA"
USER_ID = "0055g00000USER1AAA"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
EXCEEDED_ID_LIMIT = (
    "EXCEEDED_ID_LIMIT",
    "record limit reached. cannot submit more than 200 records into this call",
)
NO_SUCH_COLUMN = (
    "No such column '{}' on entity '{}'. If you are attempting to use a custom field, be sure to append "
    "the '__c' after the custom field name."
)
NOT_WRITABLE = (
    "Unable to create/update fields: {}. Please check the security settings of this field and verify that "
    "it is read/write for your profile or permission set."
)
ROLLED_BACK = (
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)
SOQL = re.compile(
    r"\s*SELECT\s+(?P<fields>\w+(?:\s*,\s*\w+)*)\s+FROM\s+(?P<sobject>\w+)"
    r"\s+WHERE\s+(?P<field>\w+)\s+IN\s*\((?P<values>.*)\)\s*",
    re.IGNORECASE | re.DOTALL,
)
LITERAL = re.compile(r"\s*'((?:[^'\\]|\\.)*)'\s*", re.DOTALL)
ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
ESCAPES = {
    "n": "\n", "N": "\n", "r": "\r", "R": "\r", "t": "\t", "T": "\t",
    "b": "\b", "B": "\b", "f": "\f", "F": "\f", '"': '"', "'": "'", "\\": "\\",
}  # fmt: skip
V = r"/services/data/(?P<version>v\d+\.\d)"


@dataclass
class FieldSpec:
    """One field of an object's schema, as describe reports it."""

    name: str
    type: str  # id | string | email | boolean | picklist | multipicklist
    label: str = ""
    external_id: bool = False
    unique: bool = False
    case_sensitive: bool = False
    id_lookup: bool = False
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    length: int = 255
    picklist_values: list[str] = field(default_factory=list)
    restricted: bool = False
    custom: bool = False

    @property
    def required(self) -> bool:
        """Must have a value on create (and cannot be cleared)."""
        return not self.nillable and self.createable and not self.defaulted_on_create

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "label": self.label or self.name, "type": self.type, "length": self.length,
            "externalId": self.external_id, "idLookup": self.id_lookup, "unique": self.unique,
            "caseSensitive": self.case_sensitive, "nillable": self.nillable, "createable": self.createable,
            "updateable": self.updateable, "defaultedOnCreate": self.defaulted_on_create,
            "custom": self.custom,
            "picklistValues": [
                {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
                for v in self.picklist_values
            ],
            "restrictedPicklist": self.restricted,
        }  # fmt: skip

    def fold(self, value: Any) -> Any:
        """The value as comparisons see it: case-insensitive unless unique and case-sensitive."""
        if isinstance(value, str) and self.type != "id" and not (self.unique and self.case_sensitive):
            return value.casefold()
        return value


@dataclass
class Session:
    issued: float  # model clock
    calls: int = 0


@dataclass
class Faults:
    errors_5xx: int = 0  # answer this many API calls 503 before doing anything
    timeouts: int = 0  # process the API call, then raise a read timeout
    drops: int = 0  # drop the connection before the API call is processed
    reject: dict[str, tuple[str, str]] = field(default_factory=dict)  # ext id -> (statusCode, message)
    expire_after: int | None = None  # a session dies after this many API calls
    token_errors_5xx: int = 0  # answer this many token requests 503


@dataclass
class _Plan:
    """What one record of an upsert would do: errors, or the changes to make to target (None: create)."""

    key: Any
    errors: list[dict[str, Any]]
    target: dict[str, Any] | None = None
    changes: dict[str, Any] = field(default_factory=dict)


def _standard_fields(sobject: str) -> list[FieldSpec]:
    fields = [
        FieldSpec("Id", "id", f"{sobject} ID", id_lookup=True, nillable=False, createable=False,
                  updateable=False, defaulted_on_create=True, length=18),
        FieldSpec("Email", "email", "Email", id_lookup=True, length=80),
        FieldSpec("LastName", "string", "Last Name", nillable=False, length=80),
        FieldSpec("HasOptedOutOfEmail", "boolean", "Email Opt Out", nillable=False, defaulted_on_create=True,
                  length=0),
    ]  # fmt: skip
    if sobject == "Lead":
        fields.append(FieldSpec("Company", "string", "Company", nillable=False, length=255))
    return fields


class SalesforceModel:
    """One org. Set up with :meth:`add_external_id`, :meth:`add_picklist`, :meth:`add_field`,
    :meth:`add_record`, ``daily_limit``, ``query_page_size``, ``clock`` and :attr:`faults`;
    look at :attr:`records` (object -> Id -> field -> value), :meth:`tags`,
    :meth:`opted_out`, :attr:`calls`, :meth:`writes`, ``api_used``, ``token_requests``,
    ``refresh_token`` (the one that works now) and :attr:`violations`."""

    def __init__(
        self,
        client_id: str,
        refresh_token: str,
        client_secret: str | None = None,
        *,
        api_version: str = "v60.0",
        rotate_refresh_tokens: bool = False,
        session_seconds: float | None = None,
    ) -> None:
        self.client_id = client_id
        self.refresh_token = refresh_token  # the one refresh token that works now
        self.client_secret = client_secret
        self.api_version = api_version  # the newest version this org serves
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.session_seconds = session_seconds
        self.clock: Callable[[], float] = time.monotonic  # for session_seconds; tests may swap it
        self.instance_url: str | None = None  # None: the origin the token request came in on
        self.daily_limit = 100_000
        self.api_used = 0
        self.token_requests = 0
        self.query_page_size = 2000
        self.schema: dict[str, dict[str, FieldSpec]] = {
            sobject: {f.name: f for f in _standard_fields(sobject)} for sobject in KEY_PREFIX
        }
        self.records: dict[str, dict[str, dict[str, Any]]] = {sobject: {} for sobject in KEY_PREFIX}
        self.faults = Faults()
        self.calls: list[tuple[str, str]] = []
        self.violations: list[str] = []  # things Salesforce would do that we promised never to cause
        self._sessions: dict[str, Session] = {}
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Reply]]] = [
            ("GET", re.compile(V + r"/sobjects/(?P<sobject>\w+)/describe/?$"), self._describe),
            ("GET", re.compile(V + r"/query/?$"), self._query),
            ("GET", re.compile(V + r"/query/(?P<locator>\w+)-(?P<offset>\d+)/?$"), self._query_more),
            (
                "PATCH",
                re.compile(V + r"/composite/sobjects/(?P<sobject>\w+)/(?P<field>\w+)/?$"),
                self._upsert,
            ),
        ]

    # --- what tests set up and look at -----------------------------------------------------
    def add_field(self, sobject: str, name: str, type: str, **kw: Any) -> FieldSpec:
        """Add (or replace) a field; ``kw`` are :class:`FieldSpec` attributes."""
        spec = FieldSpec(name, type, **{"label": name, "custom": name.endswith("__c"), **kw})
        self.schema[sobject][name] = spec
        return spec

    def add_external_id(self, sobject: str = "Contact", name: str = "Warehouse_Id__c") -> FieldSpec:
        """A custom text field marked External ID and Unique (case-insensitive), as an admin makes it."""
        return self.add_field(sobject, name, "string", external_id=True, unique=True, length=255)

    def add_picklist(
        self, sobject: str, name: str, values: Iterable[str], restricted: bool = True, *, multi: bool = True
    ) -> FieldSpec:
        """A multi-select (or, with ``multi=False``, single-select) picklist."""
        kind, length = ("multipicklist", 4099) if multi else ("picklist", 255)
        return self.add_field(
            sobject, name, kind, picklist_values=list(values), restricted=restricted, length=length
        )

    def add_record(self, sobject: str, **fields: Any) -> dict[str, Any]:
        """Store a record as if it already existed. Values are checked as an API write would check
        them; required fields and external id uniqueness are not, so a test can set up a
        nameless record or two records sharing an external id."""
        record = self._new_record(sobject)
        for name, value in fields.items():
            stored, problem = self._coerce(self.schema[sobject][name], value)
            if problem:
                raise ValueError(problem["message"])
            record[name] = stored
        return record

    def record_by(self, sobject: str, field: str, value: Any) -> dict[str, Any] | None:
        return next((r for r in self.records[sobject].values() if r.get(field) == value), None)

    def tags(
        self, sobject: str = "Contact", field: str = "Persona_Tags__c", key: str = "Warehouse_Id__c"
    ) -> dict[Any, frozenset[str]]:
        return {
            r[key]: frozenset(v for v in r[field].split(";") if v)
            for r in self.records[sobject].values()
            if r.get(field) and r.get(key) is not None
        }

    def opted_out(self, sobject: str = "Contact", key: str = "Warehouse_Id__c") -> set[Any]:
        return {r[key] for r in self.records[sobject].values() if r.get("HasOptedOutOfEmail")}

    def writes(self) -> int:
        """PATCH/POST calls to the data API (not the token endpoint, not queries)."""
        return sum(1 for m, p in self.calls if m in ("PATCH", "POST") and p.startswith("/services/data/"))

    def expire_sessions(self) -> None:
        """Every access token issued so far stops working (refresh tokens still work)."""
        self._sessions.clear()

    # --- transport -------------------------------------------------------------------------
    def attach(
        self,
        rsps: responses.RequestsMock,
        login_url: str = "https://login.salesforce.com",
        instance_url: str = "https://example.my.salesforce.com",
    ) -> None:
        """Serve the token endpoint on ``login_url`` and the data API on ``instance_url``
        (which the token endpoint hands out)."""
        self.instance_url = instance_url.rstrip("/")

        def callback(request: requests.PreparedRequest) -> Reply:
            raw = request.body or b""
            body = raw.encode() if isinstance(raw, str) else raw if isinstance(raw, bytes) else b""
            headers = {k: v if isinstance(v, str) else v.decode() for k, v in request.headers.items()}
            return self.handle(str(request.method), str(request.url), headers, body)

        rsps.add_callback("POST", login_url.rstrip("/") + TOKEN_PATH, callback)
        data = re.compile(re.escape(self.instance_url) + r"/services/data/.*")
        for method in ("GET", "POST", "PATCH", "DELETE"):
            rsps.add_callback(method, data, callback)

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
        """One request in, one answer out (or a transport fault raised as requests does)."""
        parts = urlsplit(url)
        self.calls.append((method, parts.path))
        lowered = {k.lower(): v for k, v in headers.items()}
        if parts.path.rstrip("/") == TOKEN_PATH:
            return self._token(method, parts, lowered, body)
        return self._api(method, parts, lowered, body)

    # --- OAuth -----------------------------------------------------------------------------
    def _token(self, method: str, parts: SplitResult, headers: dict[str, str], body: bytes) -> Reply:
        self.token_requests += 1
        if self.faults.token_errors_5xx:
            self.faults.token_errors_5xx -= 1
            return 503, {"Content-Type": "text/html"}, "<html>Service Unavailable</html>"
        if method != "POST":
            return _oauth_error("invalid_request", "must use HTTP POST")
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        client_id, secret = _client_credentials(form, headers.get("authorization", ""))
        if form.get("grant_type") != "refresh_token":
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        if client_id != self.client_id:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if self.client_secret is not None and secret != self.client_secret:
            return _oauth_error("invalid_client", "invalid client credentials")
        if form.get("refresh_token") != self.refresh_token:
            return _oauth_error("invalid_grant", "expired access/refresh token")
        return self._issue(f"{parts.scheme}://{parts.netloc}")

    def _issue(self, origin: str) -> Reply:
        n = next(self._ids)
        token = f"{ORG_ID[:15]}!AQ{hashlib.sha256(f'session{n}'.encode()).hexdigest()[:40]}"
        self._sessions[token] = Session(self.clock())
        identity = f"{origin}/id/{ORG_ID}/{USER_ID}"
        issued_at = str(int(time.time() * 1000))
        key = (self.client_secret or self.client_id).encode()
        signature = base64.b64encode(hmac.new(key, (identity + issued_at).encode(), "sha256").digest())
        answer = {
            "access_token": token, "instance_url": self.instance_url or origin, "id": identity,
            "token_type": "Bearer", "issued_at": issued_at, "signature": signature.decode(),
            "scope": "api refresh_token",
        }  # fmt: skip
        if self.rotate_refresh_tokens:
            self.refresh_token = f"5Aep861{hashlib.sha256(f'refresh{n}'.encode()).hexdigest()[:60]}"
            answer["refresh_token"] = self.refresh_token
        return _json(200, answer)

    def _authorised(self, authorization: str) -> bool:
        """Is this a live session? Counts the call against it."""
        token = authorization[7:] if authorization.startswith("Bearer ") else ""
        session = self._sessions.get(token)
        if session is None:
            return False
        too_old = self.session_seconds is not None and self.clock() - session.issued >= self.session_seconds
        used_up = self.faults.expire_after is not None and session.calls >= self.faults.expire_after
        if too_old or used_up:
            del self._sessions[token]
            return False
        session.calls += 1
        return True

    # --- the data API ----------------------------------------------------------------------
    def _api(self, method: str, parts: SplitResult, headers: dict[str, str], body: bytes) -> Reply:
        faults = self.faults
        if faults.drops:
            faults.drops -= 1
            raise requests.ConnectionError("Connection aborted: RemoteDisconnected")
        uri = len(parts.path) + len(parts.query) + 1
        if uri > MAX_URI_AND_HEADERS:
            return 414, {"Content-Type": "text/html"}, "<html>414 URI Too Long</html>"
        if uri + sum(len(k) + len(v) + 4 for k, v in headers.items()) > MAX_URI_AND_HEADERS:
            return 431, {"Content-Type": "text/html"}, "<html>431 Request Header Fields Too Large</html>"
        if not self._authorised(headers.get("authorization", "")):
            return _error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if self.api_used >= self.daily_limit:
            return self._usage(_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
        if faults.errors_5xx:
            faults.errors_5xx -= 1
            return self._usage(_error(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable."))
        self.api_used += 1
        reply = self._usage(self._route(method, parts, headers, body))
        if faults.timeouts:  # processed, but the answer never arrives
            faults.timeouts -= 1
            raise requests.ReadTimeout("read timed out")
        return reply

    def _usage(self, reply: Reply) -> Reply:
        status, headers, text = reply
        return status, {**headers, "Sforce-Limit-Info": f"api-usage={self.api_used}/{self.daily_limit}"}, text

    def _route(self, method: str, parts: SplitResult, headers: dict[str, str], body: bytes) -> Reply:
        for route_method, pattern, handler in self._routes:
            match = pattern.match(parts.path)
            if match is None:
                continue
            if route_method != method:
                return _error(
                    405,
                    "METHOD_NOT_ALLOWED",
                    f"HTTP Method '{method}' not allowed. Allowed are {route_method}",
                )
            groups = match.groupdict()
            if _version(groups["version"]) > _version(self.api_version):
                return _error(404, "NOT_FOUND", "The requested resource does not exist")
            document = None
            if method == "PATCH":
                content_type = headers.get("content-type", "")
                if not content_type.startswith("application/json"):
                    message = (
                        f"Content-Type header specified in HTTP request is not supported: {content_type}"
                    )
                    return _error(415, "UNSUPPORTED_MEDIA_TYPE", message)
                try:
                    document = json.loads(body)
                except ValueError as error:
                    return _error(400, "JSON_PARSER_ERROR", f"Unexpected character: {error}")
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            return handler(query, document, **groups)
        return _error(404, "NOT_FOUND", "The requested resource does not exist")

    # --- describe ---------------------------------------------------------------------------
    def _describe(self, query: dict[str, str], document: Any, version: str, sobject: str) -> Reply:
        fields = self.schema.get(sobject)
        if fields is None:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        return _json(200, {
            "name": sobject, "label": sobject, "labelPlural": f"{sobject}s", "keyPrefix": KEY_PREFIX[sobject],
            "custom": False, "createable": True, "updateable": True, "queryable": True,
            "fields": [spec.describe() for spec in fields.values()],
        })  # fmt: skip

    # --- query ------------------------------------------------------------------------------
    def _query(self, query: dict[str, str], document: Any, version: str) -> Reply:
        match = SOQL.fullmatch(query.get("q", ""))
        values = _literals(match.group("values")) if match else None
        if match is None or values is None:
            return _error(400, "MALFORMED_QUERY", f"unexpected token in query: {query.get('q', '')[:200]}")
        sobject = match.group("sobject")
        fields = self.schema.get(sobject)
        if fields is None:
            return _error(400, "INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
        names = [n.strip() for n in match.group("fields").split(",")] + [match.group("field")]
        specs = [_resolve(fields, name) for name in names]
        unknown = next((n for n, s in zip(names, specs, strict=True) if s is None), None)
        if unknown is not None:
            return _error(400, "INVALID_FIELD", NO_SUCH_COLUMN.format(unknown, sobject))
        *selected, where = [s for s in specs if s is not None]
        wanted = {where.fold(v) for v in values}
        rows = [
            {
                "attributes": {
                    "type": sobject,
                    "url": f"/services/data/{version}/sobjects/{sobject}/{r['Id']}",
                },
                **{s.name: r.get(s.name) for s in selected},
            }
            for r in self.records[sobject].values()
            if r.get(where.name) is not None and where.fold(r[where.name]) in wanted
        ]
        return self._page(rows, 0, version, None)

    def _query_more(
        self, query: dict[str, str], document: Any, version: str, locator: str, offset: str
    ) -> Reply:
        rows = self._cursors.get(locator)
        if rows is None or int(offset) > len(rows):
            return _error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(rows, int(offset), version, locator)

    def _page(self, rows: list[dict[str, Any]], start: int, version: str, locator: str | None) -> Reply:
        end = start + self.query_page_size
        body: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows), "records": rows[start:end]}
        if end < len(rows):
            locator = locator or f"01g5g00000Q{next(self._ids):05d}"
            self._cursors[locator] = rows
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{end}"
        return _json(200, body)

    # --- upsert -----------------------------------------------------------------------------
    def _upsert(self, query: dict[str, str], document: Any, version: str, sobject: str, field: str) -> Reply:
        if _version(version) < FIRST_UPSERT_VERSION:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        fields = self.schema.get(sobject)
        if fields is None:
            return _error(400, "INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
        key = fields.get(field)
        if key is None or not key.external_id:
            message = f"Field name provided, {field} is not an External ID or indexed field for {sobject}"
            return _error(400, "INVALID_FIELD", message)
        records = document.get("records") if isinstance(document, dict) else None
        all_or_none = document.get("allOrNone", False) if isinstance(document, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            return _error(400, "JSON_PARSER_ERROR", "records must be a list of sObjects")
        if not isinstance(all_or_none, bool):
            return _error(400, "JSON_PARSER_ERROR", "allOrNone must be a boolean")
        if not records:
            return _error(400, "MISSING_ARGUMENT", "records not specified")
        if len(records) > MAX_RECORDS:
            return _error(400, *EXCEEDED_ID_LIMIT)
        plans = self._plans(sobject, key, records)
        if all_or_none and any(plan.errors for plan in plans):
            return _json(200, [_failure(plan.errors or [_record_error(*ROLLED_BACK)]) for plan in plans])
        return _json(200, [self._commit(sobject, plan) for plan in plans])

    def _plans(self, sobject: str, key: FieldSpec, records: list[dict[str, Any]]) -> list[_Plan]:
        folded = [key.fold(r.get(key.name)) if isinstance(r.get(key.name), str) else None for r in records]
        seen = Counter(k for k in folded if k is not None)
        return [
            self._plan(sobject, key, record, duplicated=k is not None and seen[k] > 1)
            for record, k in zip(records, folded, strict=True)
        ]

    def _plan(self, sobject: str, key: FieldSpec, record: dict[str, Any], duplicated: bool) -> _Plan:
        value = record.get(key.name)
        attributes = record.get("attributes")
        type_ = attributes.get("type") if isinstance(attributes, dict) else None
        if not type_:
            return _Plan(value, [_record_error("INVALID_TYPE", "Must send a concrete entity type.")])
        if type_ != sobject:
            message = (
                f"Record of type {type_} in a {sobject} collection: objects must be of the type in the URI."
            )
            return _Plan(value, [_record_error("INVALID_TYPE", message)])
        changes, errors = self._changes(sobject, record)
        if errors:
            return _Plan(value, errors)
        if value is None or value == "":
            return _Plan(value, [_record_error("MISSING_ARGUMENT", f"{key.name} not specified", [key.name])])
        if duplicated:
            message = f"Duplicate external id specified: {value}"
            return _Plan(value, [_record_error("DUPLICATE_VALUE", message, [key.name])])
        if value in self.faults.reject:
            return _Plan(value, [_record_error(*self.faults.reject[value])])
        matches = [r for r in self.records[sobject].values() if key.fold(r.get(key.name)) == key.fold(value)]
        if len(matches) > 1:
            ids = ", ".join(r["Id"] for r in matches)
            message = f"{key.label}: more than one record found for external id field: [{ids}]"
            return _Plan(value, [_record_error("DUPLICATE_EXTERNAL_ID", message, [key.name])])
        target = matches[0] if matches else None
        missing = self._missing(sobject, changes, target)
        if missing:
            message = f"Required fields are missing: [{', '.join(missing)}]"
            return _Plan(value, [_record_error("REQUIRED_FIELD_MISSING", message, missing)])
        return _Plan(value, [], target, changes)

    def _changes(self, sobject: str, record: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The record's field values as they would be stored, or why they cannot be."""
        fields = self.schema[sobject]
        changes: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for name, value in record.items():
            if name == "attributes":
                continue
            spec = fields.get(name)
            if spec is None:
                errors.append(
                    _record_error("INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}")
                )
            elif not spec.createable and not spec.updateable:
                errors.append(
                    _record_error("INVALID_FIELD_FOR_INSERT_UPDATE", NOT_WRITABLE.format(name), [name])
                )
            else:
                stored, problem = self._coerce(spec, value)
                if problem:
                    errors.append(problem)
                else:
                    changes[name] = stored
        return changes, errors

    def _coerce(self, spec: FieldSpec, value: Any) -> tuple[Any, dict[str, Any] | None]:
        """(value as stored, None) or (None, the per-record error)."""
        wrong_type = _record_error(
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            f"{spec.label}: value not of required type: {value}",
            [spec.name],
        )
        if spec.type == "boolean":
            return (value, None) if isinstance(value, bool) else (None, wrong_type)
        if value is None or value == "":
            return None, None
        if not isinstance(value, str):
            return None, wrong_type
        if spec.type in ("picklist", "multipicklist"):
            return _picklist(spec, value)
        if len(value) > spec.length:
            message = f"{spec.label}: data value too large: {value} (max length={spec.length})"
            return None, _record_error("STRING_TOO_LONG", message, [spec.name])
        if spec.type == "email" and not EMAIL.match(value):
            message = f"{spec.label}: invalid email address: {value}"
            return None, _record_error("INVALID_EMAIL_ADDRESS", message, [spec.name])
        return value, None

    def _missing(self, sobject: str, changes: dict[str, Any], target: dict[str, Any] | None) -> list[str]:
        required = [spec.name for spec in self.schema[sobject].values() if spec.required]
        if target is None:
            return [name for name in required if changes.get(name) is None]
        return [name for name in required if name in changes and changes[name] is None]

    def _commit(self, sobject: str, plan: _Plan) -> dict[str, Any]:
        if plan.errors:
            return _failure(plan.errors)
        record = plan.target if plan.target is not None else self._new_record(sobject)
        if record.get("HasOptedOutOfEmail") is True and plan.changes.get("HasOptedOutOfEmail") is False:
            self.violations.append(f"opted back in {plan.key}")
        record.update(plan.changes)
        return {"id": record["Id"], "success": True, "errors": [], "created": plan.target is None}

    def _new_record(self, sobject: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            spec.name: False if spec.type == "boolean" else None for spec in self.schema[sobject].values()
        }
        record["Id"] = _record_id(KEY_PREFIX[sobject], next(self._ids))
        self.records[sobject][record["Id"]] = record
        return record


# --- helpers ---------------------------------------------------------------------------------
def _version(version: str) -> float:
    return float(version.lstrip("v"))


def _record_id(prefix: str, n: int) -> str:
    """An 18-character id: 15 characters and the case-safe checksum Salesforce appends."""
    base = f"{prefix}5g{n:010d}"
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, c in enumerate(base[chunk * 5 : chunk * 5 + 5]) if c.isupper())
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return base + suffix


def _client_credentials(form: dict[str, str], authorization: str) -> tuple[str | None, str | None]:
    """client_id and client_secret from the form, or from HTTP Basic."""
    if authorization.startswith("Basic "):
        decoded = base64.b64decode(authorization[6:]).decode("utf-8", "replace")
        client_id, _, secret = decoded.partition(":")
        return client_id, secret
    return form.get("client_id"), form.get("client_secret")


def _resolve(fields: dict[str, FieldSpec], name: str) -> FieldSpec | None:
    """SOQL field names are case-insensitive."""
    return next((spec for spec in fields.values() if spec.name.lower() == name.lower()), None)


def _literals(text: str) -> list[str] | None:
    """The values of ``'a', 'b\\'c'`` (SOQL escapes undone), or None if not such a list."""
    values: list[str] = []
    position = 0
    while True:
        match = LITERAL.match(text, position)
        value = _unescape(match.group(1)) if match else None
        if match is None or value is None:
            return None
        values.append(value)
        position = match.end()
        if position == len(text):
            return values
        if text[position] != ",":
            return None
        position += 1


def _unescape(raw: str) -> str | None:
    bad = False

    def one(match: re.Match[str]) -> str:
        nonlocal bad
        code = match.group(1)
        if len(code) == 5:
            return chr(int(code[1:], 16))
        bad = bad or code not in ESCAPES
        return ESCAPES.get(code, "")

    text = ESCAPE.sub(one, raw)
    return None if bad else text


def _picklist(spec: FieldSpec, value: str) -> tuple[Any, dict[str, Any] | None]:
    chosen = [v for v in value.split(";") if v] if spec.type == "multipicklist" else [value]
    bad = [v for v in chosen if v not in spec.picklist_values]
    if spec.restricted and bad:
        return None, _record_error(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"{spec.label}: bad value for restricted picklist field: {bad[0]}",
            [spec.name],
        )
    ordered = [v for v in spec.picklist_values if v in chosen] + list(dict.fromkeys(bad))
    return (";".join(ordered) or None), None


def _record_error(code: str, message: str, fields: Iterable[str] = ()) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": list(fields)}


def _failure(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": None, "success": False, "errors": errors, "created": False}


def _json(status: int, body: object) -> Reply:
    return status, {"Content-Type": JSON}, json.dumps(body)


def _error(status: int, code: str, message: str) -> Reply:
    return _json(status, [{"message": message, "errorCode": code}])


def _oauth_error(code: str, description: str) -> Reply:
    return _json(400, {"error": code, "error_description": description})
