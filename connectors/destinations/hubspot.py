"""HubSpot (``type = "hubspot"``, channel ``crm`` or ``email``): persona tags as a
multiple-checkbox contact property, optionally the primary persona in ``hs_persona`` and
static list membership per persona; suppression as an unsubscribe from one email
subscription type.

Vendor facts (``shared/vendor-apis.md`` §12, from HubSpot's public API specs and docs):

- ``https://api.hubapi.com``, ``Authorization: Bearer <private-app token>``;
- ``POST /crm/v3/objects/contacts/batch/read`` and ``.../batch/upsert`` take up to 100
  inputs keyed by ``idProperty=email``; the answer is 200, or **207 multi-status** with
  ``results`` for the contacts that worked and ``errors`` (``context.ids``) for the others;
- a multiple-checkbox property holds every checked option in one ``;``-separated string,
  and a write replaces it, so adding or removing one value is a read, then a write of the
  whole set; each value must be one of the property's options;
- ``PUT /crm/v3/lists/{id}/memberships/add-and-remove`` takes record ids and ignores
  records already in (or already out of) the list; only MANUAL and SNAPSHOT lists;
- ``POST /communication-preferences/v4/statuses/batch/write`` sets a subscription status
  per email (``UNSUBSCRIBED``, ``SUBSCRIBED``, ``NOT_SPECIFIED``);
- limits: a number of requests per rolling 10 s (100 on Free/Starter, 190 on
  Professional/Enterprise private apps, shared by every app on the account) and per day;
  a 429 body's ``policyName`` says which (``DAILY``: resets at midnight, account time).

What we do with them:

- **We never subscribe anyone**: the only status we ever write is ``UNSUBSCRIBED``, and we
  never lift one (``can_unsuppress`` is false).
- **We only remove values we own**: a tag write keeps every value of the property that is
  not one of this destination's tags, and ``hs_persona`` is cleared only while it still
  holds the value we set.
- A tag for a contact HubSpot does not have creates the contact (an upsert by email), with
  no subscription status; removing a tag from a contact that is gone is already done.
- A DAILY 429 stops the destination for the run with a clear message (quota exhausted);
  the 10-second limit is kept by the token bucket and, past it, waited out.
- Contacts whose outcome HubSpot's answer does not state are left retryable, never
  recorded as synced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import requests

from connectors.destinations.errors import apply_batch, unusable_on
from connectors.destinations.multivalue import split_values, with_tags
from connectors.http import (
    ApiClient,
    PermanentError,
    RetriesExhausted,
    RetryPolicy,
    UnknownOutcome,
    bucket_for_windows,
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

BASE_URL: Final = "https://api.hubapi.com"
MAX_INPUTS: Final = 100  # batch read / upsert / status write
DEFAULT_REQUESTS_PER_TEN_SECONDS: Final = 100  # Free/Starter; Professional/Enterprise have 190
PRIMARY_PROPERTY: Final = "hs_persona"
CONTACTS: Final = "/crm/v3/objects/contacts"
PROPERTIES: Final = "/crm/v3/properties/contacts"
LIST_TYPES_WE_CAN_WRITE: Final = ("MANUAL", "SNAPSHOT")
DAILY_WARNING_SHARE: Final = 0.05  # warn once when less than this share of the daily limit is left
SETUP_HINT: Final = "run `personasync destinations setup --destination {name}`"

log = logging.getLogger("personasync")


@dataclass(frozen=True)
class HubSpotSettings:
    tags: tuple[str, ...]  # every tag this destination may write: each needs an option
    tag_property: str = "personasync_personas"
    tag_labels: Mapping[str, str] = field(default_factory=dict)  # tag -> option label, for setup
    primary_values: Mapping[str, str] = field(default_factory=dict)  # tag -> hs_persona option value
    lists: Mapping[str, str] = field(default_factory=dict)  # tag -> static list id
    subscription_id: str | None = None  # email subscription type SUPPRESS unsubscribes from
    legal_basis: str | None = None
    legal_basis_explanation: str | None = None


@dataclass(frozen=True)
class _PropertyFix:
    """What ``setup`` would do to the tag property: create it (``missing`` empty) or add options."""

    prop: str
    missing: tuple[str, ...] = ()


@dataclass
class _Contact:
    id: str
    properties: Mapping[str, Any]

    def values(self, prop: str) -> list[str]:
        return split_values(self.properties.get(prop))


class HubSpotDestination:
    """:class:`sync.ports.Destination` for one HubSpot account."""

    def __init__(
        self, name: str, settings: HubSpotSettings, client: ApiClient, requests_per_second: float
    ) -> None:
        """``requests_per_second``: the client's bucket rate (this process's share of the limit)."""
        self.name = name
        self._settings = settings
        self._client = client
        self._ours = frozenset(settings.tags)
        self._daily_warned = False
        max_batch = {ChangeKind.ADD_TAG: MAX_INPUTS, ChangeKind.REMOVE_TAG: MAX_INPUTS}
        if settings.subscription_id is not None:
            max_batch[ChangeKind.SUPPRESS] = MAX_INPUTS
        self._capabilities = Capabilities(
            max_batch=max_batch,
            requests_per_second=requests_per_second,
            can_unsuppress=False,  # we never write SUBSCRIBED
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def requests_sent(self) -> int:
        return self._client.requests_sent

    # --- check and setup ---------------------------------------------------------------------
    def check(self) -> None:
        problems = [step.what for step, _ in self._inspect() if step.status is SetupStatus.MANUAL]
        if problems:
            raise DestinationError(f"{self.name}: " + "; ".join(problems))

    def setup(self, dry_run: bool) -> list[SetupStep]:
        """Create the tag property, or add the options it lacks; report what only a person
        can fix (a missing list, an ``hs_persona`` value, the subscription type)."""
        steps = []
        for step, fix in self._inspect(fixable=True):
            if fix is not None and not dry_run:
                step = self._fix(fix)
            steps.append(step)
        return steps

    def _inspect(self, fixable: bool = False) -> list[tuple[SetupStep, _PropertyFix | None]]:
        """What stands between this account and our config. Fixable steps come back as
        WOULD_DO from ``setup`` and as MANUAL (with the command that fixes them) from ``check``."""
        with unusable_on(self.name, "HubSpot", auth_hint=", or it lacks the crm.objects.contacts scopes"):
            steps = [self._inspect_tag_property(fixable)]
            others = [self._inspect_primary()] if self._settings.primary_values else []
            others += [
                self._inspect_list(tag, list_id) for tag, list_id in sorted(self._settings.lists.items())
            ]
            if self._settings.subscription_id is not None:
                others.append(self._inspect_subscription(self._settings.subscription_id))
        return steps + [(step, None) for step in others]

    def _property(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._client.request("GET", f"{PROPERTIES}/{name}").json()
        except PermanentError as exc:
            if exc.classified.reason.startswith("HTTP 404"):
                return None
            raise
        return found

    def _inspect_tag_property(self, fixable: bool) -> tuple[SetupStep, _PropertyFix | None]:
        prop = self._settings.tag_property
        fix = SetupStatus.WOULD_DO if fixable else SetupStatus.MANUAL
        hint = "" if fixable else f" ({SETUP_HINT.format(name=self.name)})"
        found = self._property(prop)
        if found is None:
            return SetupStep(fix, f"contact property {prop!r} is missing{hint}"), _PropertyFix(prop)
        if found.get("type") != "enumeration" or found.get("fieldType") != "checkbox":
            kind = f"{found.get('fieldType')} {found.get('type')}"
            why = "persona tags need a multiple checkboxes property: name another one in tag_property"
            return SetupStep(
                SetupStatus.MANUAL, f"contact property {prop!r} is a {kind} property; {why}"
            ), None
        options = {str(o.get("value")) for o in found.get("options", [])}
        missing = sorted(self._ours - options)
        if missing:
            what = f"contact property {prop!r} has no option for {', '.join(missing)}{hint}"
            return SetupStep(fix, what), _PropertyFix(prop, tuple(missing))
        return SetupStep(SetupStatus.OK, f"contact property {prop!r} has an option for every tag"), None

    def _inspect_primary(self) -> SetupStep:
        found = self._property(PRIMARY_PROPERTY) or {}
        options = {str(o.get("value")) for o in found.get("options", [])}
        missing = sorted(v for v in set(self._settings.primary_values.values()) if v not in options)
        if missing:
            return SetupStep(
                SetupStatus.MANUAL,
                f"{PRIMARY_PROPERTY} has no option {', '.join(map(repr, missing))}: "
                "add the personas in HubSpot (Settings > Personas) and map their internal values",
            )
        return SetupStep(SetupStatus.OK, f"{PRIMARY_PROPERTY} has every mapped value")

    def _inspect_list(self, tag: str, list_id: str) -> SetupStep:
        try:
            found = self._client.request("GET", f"/crm/v3/lists/{list_id}").json()
        except PermanentError:
            return SetupStep(SetupStatus.MANUAL, f"list {list_id!r} (for tag {tag!r}) not found")
        kind = str((found.get("list") or found).get("processingType", ""))
        if kind not in LIST_TYPES_WE_CAN_WRITE:
            return SetupStep(
                SetupStatus.MANUAL,
                f"list {list_id!r} (for tag {tag!r}) is {kind or 'of unknown type'}; "
                "only a MANUAL or SNAPSHOT list takes members through the API",
            )
        return SetupStep(SetupStatus.OK, f"list {list_id!r} takes the members of {tag!r}")

    def _inspect_subscription(self, subscription_id: str) -> SetupStep:
        answer = self._client.request("GET", "/communication-preferences/v4/definitions").json()
        if not any(str(d.get("id")) == subscription_id for d in answer.get("results", [])):
            return SetupStep(
                SetupStatus.MANUAL,
                f"no email subscription type with id {subscription_id!r} "
                "(Settings > Marketing > Email > Subscription types)",
            )
        return SetupStep(SetupStatus.OK, f"subscription type {subscription_id} exists")

    def _fix(self, fix: _PropertyFix) -> SetupStep:
        prop = fix.prop
        labels = self._settings.tag_labels
        with unusable_on(
            self.name, "HubSpot", auth_hint=", or it lacks the crm.schemas.contacts.write scope"
        ):
            if not fix.missing:
                options = [_option(tag, labels, i) for i, tag in enumerate(sorted(self._ours))]
                body = {
                    "name": prop,
                    "label": "Personas (personasync)",
                    "description": "Persona tags written by personasync; other values are left alone.",
                    "groupName": "contactinformation",
                    "type": "enumeration",
                    "fieldType": "checkbox",
                    "options": options,
                }
                self._client.request("POST", PROPERTIES, json_body=body, idempotent=False)
                return SetupStep(
                    SetupStatus.DONE, f"created contact property {prop!r} with {len(options)} options"
                )
            current = self._property(prop) or {}
            kept = list(current.get("options", []))  # an update replaces the whole option list
            added = [_option(tag, labels, len(kept) + i) for i, tag in enumerate(fix.missing)]
            self._client.request("PATCH", f"{PROPERTIES}/{prop}", json_body={"options": kept + added})
        return SetupStep(SetupStatus.DONE, f"added options {', '.join(fix.missing)} to {prop!r}")

    # --- apply -------------------------------------------------------------------------------
    def apply(self, kind: ChangeKind, batch: Sequence[Change]) -> BatchResult:
        def send() -> list[ChangeResult]:
            return self._unsubscribe(batch) if kind is ChangeKind.SUPPRESS else self._tags(kind, batch)

        return apply_batch(self.name, "HubSpot", batch, send, lambda: self.requests_sent)

    def _tags(self, kind: ChangeKind, batch: Sequence[Change]) -> list[ChangeResult]:
        by_email: dict[str, list[Change]] = {}
        for change in batch:
            by_email.setdefault(change.address, []).append(change)
        found, unreadable = self._read(list(by_email))
        outcome: dict[str, ChangeResult | None] = {}  # email -> a result for all its changes (None: applied)
        inputs: dict[str, dict[str, str]] = {}
        for email, changes in by_email.items():
            if email in unreadable:
                outcome[email] = ChangeResult(changes[0], Outcome.RETRYABLE, unreadable[email])
            elif email not in found and kind is ChangeKind.REMOVE_TAG:
                outcome[email] = None  # no contact, no tag: already done
            else:
                properties = self._new_values(kind, found.get(email), changes)
                if properties:
                    inputs[email] = properties
                else:
                    outcome[email] = None
        record_ids = {email: contact.id for email, contact in found.items()}
        if inputs:
            written, refused = self._upsert(inputs)
            record_ids.update(written)
            for email in inputs:
                reason = refused.get(email)
                if email in written:
                    outcome[email] = None
                else:
                    why = reason or "HubSpot's answer did not report on this contact"
                    status = Outcome.PERMANENT if reason else Outcome.RETRYABLE
                    outcome[email] = ChangeResult(by_email[email][0], status, why)
        list_failures = self._lists(kind, by_email, outcome, record_ids)
        results = []
        for email, changes in by_email.items():
            for change in changes:
                settled = outcome[email]
                if settled is not None:
                    results.append(ChangeResult(change, settled.outcome, settled.reason))
                elif change.tag in list_failures:
                    results.append(ChangeResult(change, Outcome.RETRYABLE, list_failures[change.tag]))
                else:
                    results.append(ChangeResult(change, Outcome.APPLIED))
        return results

    def _new_values(
        self, kind: ChangeKind, contact: _Contact | None, changes: list[Change]
    ) -> dict[str, str]:
        """The properties to write for one contact, or {} when it already holds them. Values
        that are not our tags are kept as they are."""
        prop = self._settings.tag_property
        current = contact.values(prop) if contact else []
        tags = [c.tag for c in changes if c.tag is not None]
        wanted = with_tags(kind, current, tags)
        properties = {prop: ";".join(wanted)} if wanted != current or contact is None else {}
        primary = self._settings.primary_values
        held = str(contact.properties.get(PRIMARY_PROPERTY) or "") if contact else ""
        mapped = [primary[t] for t in tags if t in primary]
        if kind is ChangeKind.ADD_TAG and mapped and held != mapped[-1]:
            properties[PRIMARY_PROPERTY] = mapped[-1]
        elif kind is ChangeKind.REMOVE_TAG and held and held in mapped:
            properties[PRIMARY_PROPERTY] = ""  # clears it; only while it holds the value we set
        return properties

    def _read(self, emails: list[str]) -> tuple[dict[str, _Contact], dict[str, str]]:
        """Contacts HubSpot holds for these emails, and emails it could not read (with why)."""
        wanted = [self._settings.tag_property] + ([PRIMARY_PROPERTY] if self._settings.primary_values else [])
        body = {
            "idProperty": "email",
            "inputs": [{"id": e} for e in emails],
            "properties": ["email", *wanted],
            "propertiesWithHistory": [],  # required by the spec, even empty
        }
        answer = self._call("POST", f"{CONTACTS}/batch/read", body)
        found = {}
        for record in answer.get("results", []):
            email = str((record.get("properties") or {}).get("email") or "").lower()
            if email:
                found[email] = _Contact(str(record["id"]), record.get("properties") or {})
        unreadable = {}
        for error in answer.get("errors", []):
            if error.get("category") == "OBJECT_NOT_FOUND":
                continue
            for email in _error_ids(error) or [e for e in emails if e not in found]:
                unreadable[email.lower()] = _error_text(error)
        return found, unreadable

    def _upsert(self, inputs: Mapping[str, Mapping[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
        """Write the properties; (email -> record id) for contacts HubSpot confirms, and
        (email -> HubSpot's reason) for those it refused."""
        body = {
            "inputs": [
                # a trace id per input turns on multi-status: without one, a single bad input
                # fails the whole call; with them HubSpot writes the rest and answers 207
                {
                    "id": email,
                    "idProperty": "email",
                    "objectWriteTraceId": email,
                    "properties": dict(properties),
                }
                for email, properties in inputs.items()
            ]
        }
        answer = self._call("POST", f"{CONTACTS}/batch/upsert", body)
        written = {}
        for record in answer.get("results", []):
            traced = record.get("objectWriteTraceId") or (record.get("properties") or {}).get("email")
            email = str(traced or "").lower()
            if email in inputs:
                written[email] = str(record["id"])
        refused = {}
        for error in answer.get("errors", []):
            for email in _error_ids(error):
                if email.lower() in inputs and email.lower() not in written:
                    refused[email.lower()] = _error_text(error)
        return written, refused

    def _lists(
        self,
        kind: ChangeKind,
        by_email: Mapping[str, list[Change]],
        outcome: Mapping[str, ChangeResult | None],
        record_ids: Mapping[str, str],
    ) -> dict[str, str]:
        """Keep each persona's list in step with its tag for the contacts whose property
        write worked; tag -> why, for the lists that could not be updated."""
        members: dict[str, set[str]] = {}
        for email, changes in by_email.items():
            if outcome.get(email) is None and email in record_ids:
                for change in changes:
                    if change.tag in self._settings.lists:
                        members.setdefault(change.tag, set()).add(record_ids[email])
        failures = {}
        key = "recordIdsToAdd" if kind is ChangeKind.ADD_TAG else "recordIdsToRemove"
        for tag, ids in sorted(members.items()):
            list_id = self._settings.lists[tag]
            body = {"recordIdsToAdd": [], "recordIdsToRemove": [], key: sorted(ids)}
            try:
                self._call("PUT", f"/crm/v3/lists/{list_id}/memberships/add-and-remove", body)
            except (PermanentError, RetriesExhausted, UnknownOutcome) as exc:
                failures[tag] = f"tag written, but list {list_id} was not updated: {exc}"
        return failures

    def _unsubscribe(self, batch: Sequence[Change]) -> list[ChangeResult]:
        settings = self._settings
        extra = {}
        if settings.legal_basis:
            extra["legalBasis"] = settings.legal_basis
            extra["legalBasisExplanation"] = settings.legal_basis_explanation or "Unsubscribed by personasync"
        inputs = [
            {
                "subscriberIdString": email,
                "channel": "EMAIL",
                "statusState": "UNSUBSCRIBED",  # the only state we ever write
                "subscriptionId": int(settings.subscription_id or 0),
                **extra,
            }
            for email in dict.fromkeys(c.address for c in batch)
        ]
        answer = self._call("POST", "/communication-preferences/v4/statuses/batch/write", {"inputs": inputs})
        done = {
            str(r.get("subscriberIdString", "")).lower()
            for r in answer.get("results", [])
            if r.get("status") == "UNSUBSCRIBED"
        }
        refused = {
            e.lower(): _error_text(error) for error in answer.get("errors", []) for e in _error_ids(error)
        }
        results = []
        for change in batch:
            if change.address in done:
                results.append(ChangeResult(change, Outcome.APPLIED))
            elif change.address in refused:
                results.append(ChangeResult(change, Outcome.PERMANENT, refused[change.address]))
            else:
                results.append(
                    ChangeResult(change, Outcome.RETRYABLE, "HubSpot's answer did not report on this email")
                )
        return results

    # --- transport ---------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any) -> dict[str, Any]:
        response = self._client.request(method, path, json_body=body)
        self._watch_daily(response)
        answer: dict[str, Any] = response.json() if response.content else {}
        return answer

    def _watch_daily(self, response: requests.Response) -> None:
        """Warn once per run when the account's daily limit runs low (it is shared by every
        app on the account; running out stops this destination until midnight)."""
        limit = _number(response.headers.get("X-HubSpot-RateLimit-Daily"))
        left = _number(response.headers.get("X-HubSpot-RateLimit-Daily-Remaining"))
        if limit and left is not None and left < limit * DAILY_WARNING_SHARE and not self._daily_warned:
            self._daily_warned = True
            log.warning("%s: HubSpot daily API limit nearly used up: %d of %d left", self.name, left, limit)


def _option(tag: str, labels: Mapping[str, str], order: int) -> dict[str, Any]:
    return {"label": labels.get(tag, tag), "value": tag, "hidden": False, "displayOrder": order}


def _error_ids(error: Mapping[str, Any]) -> list[str]:
    """The inputs an error is about: HubSpot names them in ``context`` under the key of the
    identifier the call used (``ids``, ``objectWriteTraceId``, ``subscriberIdString``)."""
    context = error.get("context") or {}
    named: list[str] = []
    for key in ("ids", "objectWriteTraceId", "subscriberIdString"):
        values = context.get(key) or []
        named.extend(str(v) for v in (values if isinstance(values, list) else [values]))
    return named


def _error_text(error: Mapping[str, Any]) -> str:
    category = error.get("category") or error.get("subCategory") or "error"
    return f"{category}: {error.get('message', '')}".strip()


def _number(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def build(
    name: str,
    token: str,
    settings: HubSpotSettings,
    *,
    base_url: str = BASE_URL,
    requests_per_ten_seconds: int = DEFAULT_REQUESTS_PER_TEN_SECONDS,
    rate_share: float = 1.0,  # a sharded run's part of the account's limit
    timeout: tuple[float, float],
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    **client_options: Any,
) -> HubSpotDestination:
    rate, burst = bucket_for_windows({10.0: requests_per_ten_seconds}, share=rate_share)
    client = ApiClient(
        base_url,
        headers={"Authorization": f"Bearer {token}"},
        secrets=[token],
        timeout=timeout,
        requests_per_second=rate,
        burst=burst,
        policy=policy,
        sleep=sleep,
        clock=clock,
        **client_options,
    )
    return HubSpotDestination(name, settings, client, rate)
