"""Salesforce (``type = "salesforce"``, channel ``crm``): persona tags in a multi-select
picklist on existing Contact or Lead records, matched by an external ID field holding the
customer key; suppression as ``HasOptedOutOfEmail = true``.

Vendor facts (``shared/vendor-apis.md`` §13, from Salesforce's REST API and OAuth docs):

- OAuth refresh-token flow: ``POST {login}/services/oauth2/token`` (form-encoded
  ``grant_type=refresh_token``, ``client_id``, optional ``client_secret``,
  ``refresh_token``) answers an ``access_token`` and the org's ``instance_url``; a connected
  app may rotate the refresh token (the answer then carries a new one and the old one
  stops working); an expired session answers 401 ``INVALID_SESSION_ID``;
- ``PATCH /services/data/vXX.X/composite/sobjects/{Object}/{ExternalIdField}`` upserts up
  to 200 records by external ID; with ``allOrNone: false`` a well-formed request answers
  200 with one ``{id, success, errors, created}`` per record, in request order;
- a multi-select picklist holds its values in one ``;``-separated string, and a write
  replaces it; a restricted picklist refuses values it does not list;
- every answer carries ``Sforce-Limit-Info: api-usage=used/limit`` (the org's rolling day);
  past the limit Salesforce answers **403** ``REQUEST_LIMIT_EXCEEDED`` (not 429).

What we do with them:

- **Existing records only**: a tag or a suppression for a key Salesforce has no record
  for is refused per record ("no Contact with ..."), never created: a CRM record needs
  more than we know (a name, a company), and an empty one is clutter.
- **We only remove values we own**: a write keeps every picklist value that is not one of
  this destination's tags; ``HasOptedOutOfEmail`` is only ever set to true, never back.
- A write is a SOQL read of the current values, then one upsert (2 requests per 200).
- On 401 ``INVALID_SESSION_ID`` the session is refreshed once and the call replayed; a
  rotated refresh token is kept for the rest of the run and, when ``refresh_token_file``
  is set, written there (mode 0600) for the next one, since the old token is dead.
- 403 ``REQUEST_LIMIT_EXCEEDED`` stops the destination for the run (quota exhausted);
  past 90 % of the daily limit we warn once.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import requests

from connectors.destinations.errors import apply_batch, unusable_on
from connectors.destinations.multivalue import split_values, with_tags
from connectors.http import (
    ApiClient,
    AuthError,
    PermanentError,
    RetryPolicy,
)
from sync.changes import Change, ChangeKind
from sync.ports import (
    BatchResult,
    Capabilities,
    ChangeResult,
    DestinationError,
    Outcome,
    SetupStatus,
    SetupStep,
)

LOGIN_URL: Final = "https://login.salesforce.com"  # sandboxes: https://test.salesforce.com
API_VERSION: Final = "v60.0"
AUTH_HINT: Final = " (client id, secret or refresh token)"
MAX_RECORDS: Final = 200  # sObject Collections
OPT_OUT_FIELD: Final = "HasOptedOutOfEmail"
LIMIT_WARNING_SHARE: Final = 0.9
LIMIT_INFO: Final = re.compile(r"api-usage=(\d+)/(\d+)")

log = logging.getLogger("personasync")


@dataclass(frozen=True)
class SalesforceSettings:
    tags: tuple[str, ...]  # every tag this destination may write: each must be a picklist value
    sobject: str = "Contact"  # or "Lead"
    external_id_field: str = "Warehouse_Id__c"  # holds the customer key
    tag_field: str = "Persona_Tags__c"  # a multi-select picklist
    api_version: str = API_VERSION


@dataclass(frozen=True)
class OAuthSettings:
    client_id: str
    refresh_token: str
    client_secret: str | None = None
    token_url: str = f"{LOGIN_URL}/services/oauth2/token"
    refresh_token_file: Path | None = None  # keeps a rotated refresh token between runs

    def secrets(self) -> list[str]:
        return [s for s in (self.client_id, self.refresh_token, self.client_secret) if s]


@dataclass
class _Session:
    """The org's API behind one OAuth grant: refreshed when Salesforce says it expired."""

    oauth: OAuthSettings
    token_client: ApiClient
    make_client: Callable[[str, str], ApiClient]  # (instance URL, access token) -> client
    refresh_token: str = ""
    client: ApiClient | None = None

    def refresh(self) -> ApiClient:
        form = {"grant_type": "refresh_token", "client_id": self.oauth.client_id}
        form["refresh_token"] = self.refresh_token or self.oauth.refresh_token
        if self.oauth.client_secret:
            form["client_secret"] = self.oauth.client_secret
        try:
            answer = self.token_client.request("POST", self.oauth.token_url, form=form).json()
        except PermanentError as exc:  # 400 invalid_grant / invalid_client_id
            raise AuthError(f"the OAuth token request was refused: {exc}", exc.classified) from None
        token, instance = str(answer["access_token"]), str(answer["instance_url"]).rstrip("/")
        rotated = answer.get("refresh_token")
        if rotated and rotated != form["refresh_token"]:
            self.refresh_token = str(rotated)
            self._keep(self.refresh_token)
        if self.client is None or not self.client.base_url.startswith(instance):
            self.client = self.make_client(instance, token)
        self.client.authorize({"Authorization": f"Bearer {token}"}, [token, self.refresh_token])
        return self.client

    def _keep(self, refresh_token: str) -> None:
        path = self.oauth.refresh_token_file
        if path is None:
            log.warning(
                "Salesforce rotated the refresh token; set refresh_token_file so the next run can use it"
            )
            return
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(refresh_token + "\n")

    def request(self, method: str, path: str, **options: Any) -> requests.Response:
        """One API call; on an expired session, refresh once and replay it."""
        client = self.client or self.refresh()
        try:
            return client.request(method, path, **options)
        except AuthError as exc:
            if "INVALID_SESSION_ID" not in exc.classified.reason:
                raise
        return self.refresh().request(method, path, **options)


class SalesforceDestination:
    """:class:`sync.ports.Destination` for one Salesforce org and object."""

    def __init__(self, name: str, settings: SalesforceSettings, session: _Session) -> None:
        self.name = name
        self._settings = settings
        self._session = session
        self._ours = frozenset(settings.tags)
        self._data = f"/services/data/{settings.api_version}"
        self._warned = False
        self._capabilities = Capabilities(
            max_batch={
                kind: MAX_RECORDS for kind in (ChangeKind.ADD_TAG, ChangeKind.REMOVE_TAG, ChangeKind.SUPPRESS)
            },
            can_unsuppress=False,  # HasOptedOutOfEmail is never set back to false by us
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def requests_sent(self) -> int:
        client = self._session.client
        return self._session.token_client.requests_sent + (client.requests_sent if client else 0)

    # --- check and setup ---------------------------------------------------------------------
    def check(self) -> None:
        problems = [step.what for step in self.setup(dry_run=True) if step.status is SetupStatus.MANUAL]
        if problems:
            raise DestinationError(f"{self.name}: " + "; ".join(problems))

    def setup(self, dry_run: bool) -> list[SetupStep]:
        """Salesforce fields are created through the Metadata API or by an admin, so setup
        only reports: each missing piece comes with the exact change to make."""
        settings = self._settings
        with unusable_on(self.name, "Salesforce", auth_hint=AUTH_HINT):
            try:
                describe = self._call("GET", f"{self._data}/sobjects/{settings.sobject}/describe")
            except PermanentError:
                return [SetupStep(SetupStatus.MANUAL, f"object {settings.sobject!r} not found in this org")]
        fields = {str(f.get("name")): f for f in describe.get("fields", [])}
        return [
            self._inspect_external_id(fields),
            self._inspect_tag_field(fields),
            self._inspect_opt_out(fields),
        ]

    def _where(self, field_name: str) -> str:
        return f"Setup > Object Manager > {self._settings.sobject} > Fields & Relationships > {field_name}"

    def _inspect_external_id(self, fields: Mapping[str, Mapping[str, Any]]) -> SetupStep:
        name = self._settings.external_id_field
        found = fields.get(name)
        if found is None:
            return SetupStep(
                SetupStatus.MANUAL,
                f"field {name} is missing: create a Text field with API name {name}, 'Unique' and "
                f"'External ID' ticked ({self._where('New')}), and fill it with the customer key",
            )
        if not found.get("externalId"):
            return SetupStep(
                SetupStatus.MANUAL,
                f"field {name} is not an External ID: tick 'External ID' ({self._where(name)})",
            )
        return SetupStep(SetupStatus.OK, f"{name} is an external ID")

    def _inspect_tag_field(self, fields: Mapping[str, Mapping[str, Any]]) -> SetupStep:
        name = self._settings.tag_field
        values = ", ".join(sorted(self._ours))
        found = fields.get(name)
        if found is None:
            return SetupStep(
                SetupStatus.MANUAL,
                f"field {name} is missing: create a Picklist (Multi-Select) with API name {name} "
                f"and the values {values} ({self._where('New')})",
            )
        if found.get("type") != "multipicklist":
            return SetupStep(
                SetupStatus.MANUAL,
                f"field {name} is a {found.get('type')} field; persona tags need a multi-select picklist",
            )
        listed = {str(v.get("value")) for v in found.get("picklistValues", []) if v.get("active", True)}
        missing = sorted(self._ours - listed)
        if missing and found.get("restrictedPicklist", True):
            return SetupStep(
                SetupStatus.MANUAL,
                f"picklist {name} lacks the values {', '.join(missing)}: "
                f"add them ({self._where(name)} > Values > New)",
            )
        return SetupStep(SetupStatus.OK, f"picklist {name} takes every tag")

    def _inspect_opt_out(self, fields: Mapping[str, Mapping[str, Any]]) -> SetupStep:
        found = fields.get(OPT_OUT_FIELD)
        if found is None or not found.get("updateable", True):
            return SetupStep(
                SetupStatus.MANUAL,
                f"{OPT_OUT_FIELD} is not writable for this user: grant edit access to 'Email Opt Out' "
                "in the integration user's profile or permission set",
            )
        return SetupStep(SetupStatus.OK, f"{OPT_OUT_FIELD} is writable")

    # --- apply -------------------------------------------------------------------------------
    def apply(self, kind: ChangeKind, batch: Sequence[Change]) -> BatchResult:
        def send() -> list[ChangeResult]:
            return self._write(kind, batch)

        return apply_batch(
            self.name, "Salesforce", batch, send, lambda: self.requests_sent, auth_hint=AUTH_HINT
        )

    def _write(self, kind: ChangeKind, batch: Sequence[Change]) -> list[ChangeResult]:
        settings = self._settings
        by_key: dict[str, list[Change]] = {}
        for change in batch:
            by_key.setdefault(change.key, []).append(change)
        current = self._current(list(by_key))
        settled: dict[str, tuple[Outcome, str | None]] = {}
        records = []
        for key, changes in by_key.items():
            if key not in current:
                if kind is ChangeKind.REMOVE_TAG:
                    settled[key] = (Outcome.APPLIED, None)  # no record, no tag
                else:
                    where = f"{settings.external_id_field} = {key!r}"
                    settled[key] = (
                        Outcome.PERMANENT,
                        f"no {settings.sobject} with {where} (existing records only)",
                    )
                continue
            fields = self._new_fields(kind, current[key], changes)
            if not fields:
                settled[key] = (Outcome.APPLIED, None)
                continue
            records.append(
                {"attributes": {"type": settings.sobject}, settings.external_id_field: key, **fields}
            )
        if records:
            settled.update(self._upsert(records))
        return [
            ChangeResult(
                change, *settled.get(key, (Outcome.RETRYABLE, "Salesforce did not report on this record"))
            )
            for key, changes in by_key.items()
            for change in changes
        ]

    def _new_fields(
        self, kind: ChangeKind, record: Mapping[str, Any], changes: list[Change]
    ) -> dict[str, Any]:
        if kind is ChangeKind.SUPPRESS:
            return {} if record.get(OPT_OUT_FIELD) is True else {OPT_OUT_FIELD: True}
        name = self._settings.tag_field
        held = split_values(record.get(name))
        wanted = with_tags(kind, held, [c.tag for c in changes if c.tag is not None])
        return {name: ";".join(wanted) or None} if wanted != held else {}

    def _current(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """External ID -> the record's current values, for the keys Salesforce has."""
        settings = self._settings
        columns = ", ".join(["Id", settings.external_id_field, settings.tag_field, OPT_OUT_FIELD])
        values = ", ".join(soql_string(k) for k in keys)
        soql = f"SELECT {columns} FROM {settings.sobject} WHERE {settings.external_id_field} IN ({values})"
        asked = {k.lower(): k for k in keys}  # Salesforce compares text case-insensitively
        found: dict[str, dict[str, Any]] = {}
        answer = self._call("GET", f"{self._data}/query", params={"q": soql})
        while True:
            for record in answer.get("records", []):
                value = str(record.get(settings.external_id_field))
                found[asked.get(value.lower(), value)] = record
            next_page = answer.get("nextRecordsUrl")
            if answer.get("done", True) or not next_page:
                return found
            answer = self._call("GET", str(next_page))

    def _upsert(self, records: list[dict[str, Any]]) -> dict[str, tuple[Outcome, str | None]]:
        settings = self._settings
        path = f"{self._data}/composite/sobjects/{settings.sobject}/{settings.external_id_field}"
        answer = self._call("PATCH", path, {"allOrNone": False, "records": records})
        items = answer if isinstance(answer, list) else []
        outcomes: dict[str, tuple[Outcome, str | None]] = {}
        for record, item in zip(records, items, strict=False):  # results come in request order
            key = str(record[settings.external_id_field])
            if item.get("success"):
                outcomes[key] = (Outcome.APPLIED, None)
            else:
                errors = item.get("errors") or [{}]
                outcomes[key] = (Outcome.PERMANENT, "; ".join(_error_text(e) for e in errors))
        return outcomes

    # --- transport ---------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None) -> Any:
        response = self._session.request(method, path, json_body=body, params=params)
        self._watch_limit(response)
        return response.json() if response.content else {}

    def _watch_limit(self, response: requests.Response) -> None:
        match = LIMIT_INFO.search(response.headers.get("Sforce-Limit-Info", ""))
        if match and not self._warned:
            used, limit = int(match.group(1)), int(match.group(2))
            if limit and used >= limit * LIMIT_WARNING_SHARE:
                self._warned = True
                log.warning(
                    "%s: Salesforce org has used %d of its %d daily API requests; past the limit "
                    "every integration on the org stops until the window rolls over",
                    self.name,
                    used,
                    limit,
                )


def soql_string(value: str) -> str:
    """A SOQL string literal: quotes and backslashes escaped, as SOQL requires."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _error_text(error: Mapping[str, Any]) -> str:
    code = error.get("statusCode") or error.get("errorCode") or "error"
    fields = error.get("fields") or []
    return f"{code}: {error.get('message', '')}" + (f" ({', '.join(map(str, fields))})" if fields else "")


def saved_refresh_token(oauth: OAuthSettings) -> OAuthSettings:
    """The refresh token a previous run saved after a rotation, if there is one."""
    path = oauth.refresh_token_file
    if path is None or not path.exists():
        return oauth
    saved = path.read_text(encoding="utf-8").strip()
    return OAuthSettings(
        oauth.client_id, saved or oauth.refresh_token, oauth.client_secret, oauth.token_url, path
    )


def build(
    name: str,
    oauth: OAuthSettings,
    settings: SalesforceSettings,
    *,
    timeout: tuple[float, float],
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    **client_options: Any,
) -> SalesforceDestination:
    oauth = saved_refresh_token(oauth)
    token_origin = re.match(r"^https?://[^/]+", oauth.token_url)
    if token_origin is None:
        raise ValueError(f"token_url must be an http(s) URL (got {oauth.token_url!r})")

    def client(base_url: str, token: str) -> ApiClient:
        return ApiClient(
            base_url,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            secrets=[token, *oauth.secrets()],
            timeout=timeout,
            policy=policy,
            sleep=sleep,
            clock=clock,
            **client_options,
        )

    session = _Session(oauth, client(token_origin.group(0), ""), client)
    return SalesforceDestination(name, settings, session)
