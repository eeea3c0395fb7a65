"""Klaviyo (``type = "klaviyo"``): persona tags as a list-valued profile property, optional
static-list membership per persona, and suppression on the email or SMS channel.

Vendor facts (``shared/vendor-apis.md`` §2, from Klaviyo's OpenAPI spec, revision
2026-07-15):

- ``https://a.klaviyo.com``, ``Authorization: Klaviyo-API-Key <key>``, a ``revision``
  header on every call, JSON:API bodies (``application/vnd.api+json``);
- ``POST /api/profile-bulk-import-jobs`` upserts up to 10,000 profiles per job (5 MB);
  ``GET .../{id}`` reports ``queued|processing|complete|cancelled`` with counts, and
  ``GET .../{id}/import-errors`` one error per refused row (``original_payload``,
  ``source.pointer``), paginated by ``links.next``; 10/s burst, 150/m steady;
- ``POST /api/profile-import`` upserts one profile (75/s, 750/m); both take
  ``meta.patch_properties`` ``append`` / ``unappend`` for array properties;
- ``POST /api/profile-suppression-bulk-create-jobs`` suppresses up to 100 emails
  (reason ``USER_SUPPRESSED``), ``...-bulk-delete-jobs`` lifts only ``USER_SUPPRESSED``
  suppressions; both are pollable jobs with counts but no per-row errors;
- ``POST /api/profile-subscription-bulk-delete-jobs`` unsubscribes up to 100 profiles;
  with a list relationship, "profiles not in the specified list will be globally
  unsubscribed", so we never send one;
- ``GET /api/profiles?filter=any(email,[...])`` finds up to 100 profiles per page;
  ``POST``/``DELETE /api/lists/{id}/relationships/profiles`` take 1,000 profile ids.

What we do with them:

- **We never subscribe anyone**: no call to a subscribe job, no consent set to
  ``SUBSCRIBED``. Creating a profile (an upsert of a tag) gives it no consent.
- Profiles are matched by email (email channel) or E.164 phone (SMS channel) only: never
  by ``external_id``, so a customer who changes address never collides with their old
  profile.
- Email suppression is a Klaviyo suppression we can lift again (``can_unsuppress``);
  SMS suppression is an unsubscribe from SMS marketing, which only the person can undo.
- A job still queued past ``job_timeout`` leaves its records retryable (an upsert is safe
  to resend next run), and the rest of this run's jobs on that queue are not sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from connectors.destinations.errors import apply_batch, unusable_on
from connectors.http import (
    ApiClient,
    ApiError,
    PermanentError,
    RetryPolicy,
    window_rate,
)
from sync.changes import Change, ChangeKind
from sync.ports import BatchResult, Capabilities, ChangeResult, DestinationError, Outcome

BASE_URL: Final = "https://a.klaviyo.com"
REVISION: Final = "2026-07-15"  # the revision this adapter was written and tested against
JSON_API: Final = "application/vnd.api+json"
MAX_PROFILES_PER_IMPORT_JOB: Final = 10_000
MAX_PER_SUPPRESSION_JOB: Final = 100
MAX_PER_UNSUBSCRIBE_JOB: Final = 100
# Suppression jobs created back to back before we poll them: a job answers "queued" for
# about half a second, so one at a time would leave ~70 % of the rate limit unused.
SUPPRESSION_JOBS_IN_FLIGHT: Final = 10
SUPPRESSION_BATCH: Final = MAX_PER_SUPPRESSION_JOB * SUPPRESSION_JOBS_IN_FLIGHT
MAX_IDS_PER_LIST_CALL: Final = 1_000
PROFILE_PAGE: Final = 100  # GET /api/profiles page[size] maximum
SINGLE_IMPORT_UP_TO: Final = 10  # profiles; fewer go one by one through profile-import
IMPORT_WINDOW: Final = (10, 150)  # bulk import jobs, their reads, list membership: per s, per min
GENERAL_WINDOW: Final = (75, 750)  # profile-import, suppression and unsubscribe jobs, profile reads
POLL_SCHEDULE: Final = (0.5, 1.0, 2.0, 4.0, 5.0)  # seconds between job polls; the last repeats
IDENTIFIER: Final = {"email": "email", "sms": "phone_number"}


@dataclass(frozen=True)
class KlaviyoSettings:
    channel: str  # "email" or "sms"
    tag_property: str = "personas"
    lists: Mapping[str, str] | None = None  # our tag -> Klaviyo list id
    job_timeout: float = 600.0  # seconds a job may stay unfinished before we stop waiting


class _Stalled(Exception):
    """A Klaviyo job did not finish in time; its outcome is unknown."""


class KlaviyoDestination:
    """:class:`sync.ports.Destination` for one Klaviyo account and channel."""

    def __init__(
        self,
        name: str,
        settings: KlaviyoSettings,
        imports: ApiClient,
        general: ApiClient,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.channel not in IDENTIFIER:
            raise ValueError(f"a Klaviyo destination is for email or sms, not {settings.channel!r}")
        self.name = name
        self._settings = settings
        self._imports = imports  # bulk import jobs: their own, lower rate limit
        self._general = general
        self._sleep = sleep
        self._clock = clock
        self._identifier = IDENTIFIER[settings.channel]
        self._lists = dict(settings.lists or {})
        self._stalled: dict[str, str] = {}  # job endpoint -> why we stopped using it this run
        email = settings.channel == "email"
        max_batch = {
            ChangeKind.ADD_TAG: MAX_PROFILES_PER_IMPORT_JOB,
            ChangeKind.REMOVE_TAG: MAX_PROFILES_PER_IMPORT_JOB,
            ChangeKind.SUPPRESS: SUPPRESSION_BATCH if email else MAX_PER_UNSUBSCRIBE_JOB,
        }
        if email:
            max_batch[ChangeKind.UNSUPPRESS] = SUPPRESSION_BATCH
        self._capabilities = Capabilities(
            max_batch=max_batch,
            requests_per_second=window_rate(*IMPORT_WINDOW)[0],  # the slowest queue, for estimates
            concurrency=1,
            can_unsuppress=email,  # SMS: an unsubscribe only the person can undo
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def requests_sent(self) -> int:
        return self._imports.requests_sent + self._general.requests_sent

    # --- check -------------------------------------------------------------------------------
    def check(self) -> None:
        self._stalled.clear()  # a new run: give every job queue a fresh chance
        with unusable_on(self.name, "Klaviyo", auth_hint=", or it lacks the profiles:read scope"):
            self._general.request(
                "GET", "/api/profiles", params={"page[size]": 1, "fields[profile]": "email"}
            )
        for tag, list_id in sorted(self._lists.items()):
            try:
                self._general.request("GET", f"/api/lists/{list_id}", params={"fields[list]": "name"})
            except PermanentError:
                raise DestinationError(f"{self.name}: list {list_id!r} (for tag {tag!r}) not found") from None
            except ApiError as exc:
                raise DestinationError(f"{self.name}: list {list_id!r}: {exc}") from None

    # --- apply -------------------------------------------------------------------------------
    def apply(self, kind: ChangeKind, batch: Sequence[Change]) -> BatchResult:
        def send() -> list[ChangeResult]:
            if kind is ChangeKind.SUPPRESS and self._settings.channel == "sms":
                return self._unsubscribe_sms(batch)
            if kind in (ChangeKind.SUPPRESS, ChangeKind.UNSUPPRESS):
                return self._suppression_job(kind, batch)
            return self._tags(kind, batch)

        return apply_batch(self.name, "Klaviyo", batch, send, lambda: self.requests_sent, _reason)

    # --- tags --------------------------------------------------------------------------------
    def _tags(self, kind: ChangeKind, batch: Sequence[Change]) -> list[ChangeResult]:
        verb = "append" if kind is ChangeKind.ADD_TAG else "unappend"
        by_address = _group(batch, lambda c: c.address)
        listed = any(c.tag in self._lists for c in batch)
        if len(by_address) <= SINGLE_IMPORT_UP_TO and not listed:
            return [r for changes in by_address.values() for r in self._import_one(verb, changes)]
        if kind is ChangeKind.REMOVE_TAG:
            results = self._import_job(verb, by_address, ())
            return self._leave_lists(results)
        # profiles joining the same lists share a job (the job adds all its profiles to them)
        by_lists = _group(by_address.items(), lambda item: self._lists_for(item[1]))
        results = []
        for lists, items in by_lists.items():
            results.extend(self._import_job(verb, dict(items), lists))
        return results

    def _lists_for(self, changes: list[Change]) -> tuple[str, ...]:
        return tuple(sorted({self._lists[c.tag] for c in changes if c.tag in self._lists}))

    def _profile(self, verb: str, address: str, changes: list[Change]) -> dict[str, Any]:
        tags = sorted({c.tag for c in changes if c.tag is not None})
        return {
            "type": "profile",
            "attributes": {self._identifier: address},
            "meta": {"patch_properties": {verb: {self._settings.tag_property: tags}}},
        }

    def _import_one(self, verb: str, changes: list[Change]) -> list[ChangeResult]:
        body = {"data": self._profile(verb, changes[0].address, changes)}
        try:
            self._general.request("POST", "/api/profile-import", json_body=body)
        except PermanentError as exc:
            return [ChangeResult(c, Outcome.PERMANENT, _reason(exc)) for c in changes]
        return [ChangeResult(c, Outcome.APPLIED) for c in changes]

    def _import_job(
        self, verb: str, by_address: Mapping[str, list[Change]], lists: tuple[str, ...]
    ) -> list[ChangeResult]:
        changes = [c for group in by_address.values() for c in group]
        profiles = [self._profile(verb, address, group) for address, group in by_address.items()]
        body: dict[str, Any] = {
            "data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": profiles}}}
        }
        if lists:
            body["data"]["relationships"] = {"lists": {"data": [{"type": "list", "id": i} for i in lists]}}
        # not repeated blindly: a job created but unanswered would be a second job
        job = self._run_job(self._imports, "/api/profile-bulk-import-jobs", body, changes, idempotent=False)
        if isinstance(job, list):
            return job
        failed = int(job.get("failed_count") or 0)
        refused = self._import_errors(job["id"], list(by_address)) if failed else {}
        if len(refused) < failed:  # errors we cannot tie to a row: claim nothing for the job
            why = f"Klaviyo import job {job['id']} reported {failed} failures it did not itemise"
            return [ChangeResult(c, Outcome.RETRYABLE, why) for c in changes]
        return [
            ChangeResult(c, Outcome.PERMANENT, refused[address])
            if address in refused
            else ChangeResult(c, Outcome.APPLIED)
            for address, group in by_address.items()
            for c in group
        ]

    def _import_errors(self, job_id: str, addresses: list[str]) -> dict[str, str]:
        """Address -> Klaviyo's reason, for every row the job refused."""
        refused: dict[str, str] = {}
        wanted = {_normal(a): a for a in addresses}
        url: str | None = f"/api/profile-bulk-import-jobs/{job_id}/import-errors"
        params: dict[str, Any] | None = {"page[size]": 100}
        while url:
            page = self._imports.request("GET", url, params=params).json()
            for error in page.get("data", []):
                attributes = error.get("attributes", {})
                address = self._address_of(attributes, addresses, wanted)
                if address is not None:
                    refused[address] = f"{attributes.get('code', 'invalid')}: {attributes.get('detail', '')}"
            url, params = (page.get("links") or {}).get("next"), None
        return refused

    def _address_of(
        self, attributes: Mapping[str, Any], addresses: list[str], wanted: Mapping[str, str]
    ) -> str | None:
        payload = attributes.get("original_payload") or {}
        value = payload.get(self._identifier) or (payload.get("attributes") or {}).get(self._identifier)
        if isinstance(value, str) and _normal(value) in wanted:
            return wanted[_normal(value)]
        pointer = str((attributes.get("source") or {}).get("pointer") or "")
        prefix = "/data/attributes/profiles/data/"
        if pointer.startswith(prefix):
            index = pointer[len(prefix) :].split("/")[0]
            if index.isdigit() and int(index) < len(addresses):
                return addresses[int(index)]
        return None

    def _leave_lists(self, results: list[ChangeResult]) -> list[ChangeResult]:
        """Take untagged profiles out of the persona's list too; a failure keeps the change open."""
        by_list = _group(
            (r for r in results if r.outcome is Outcome.APPLIED and r.change.tag in self._lists),
            lambda r: self._lists[r.change.tag or ""],
        )
        if not by_list:
            return results
        ids = self._profile_ids({r.change.address for group in by_list.values() for r in group})
        for list_id, group in by_list.items():
            members = sorted({ids[r.change.address] for r in group if r.change.address in ids})
            for start in range(0, len(members), MAX_IDS_PER_LIST_CALL):
                chunk = members[start : start + MAX_IDS_PER_LIST_CALL]
                self._imports.request(  # list membership shares the import jobs' 10/s, 150/m limit
                    "DELETE",
                    f"/api/lists/{list_id}/relationships/profiles",
                    json_body={"data": [{"type": "profile", "id": i} for i in chunk]},
                )
        return results

    def _profile_ids(self, addresses: Iterable[str]) -> dict[str, str]:
        """Address -> Klaviyo profile id, for those that have a profile."""
        return {address: str(profile["id"]) for address, profile in self._profiles(addresses, {})}

    def _profiles(self, addresses: Iterable[str], params: Mapping[str, str]) -> Iterator[tuple[str, Any]]:
        """(our address, Klaviyo's profile resource) for each address that has a profile,
        looked up 100 at a time by this channel's identifier."""
        ordered = sorted(set(addresses))
        wanted = {_normal(a): a for a in ordered}
        for start in range(0, len(ordered), PROFILE_PAGE):
            chunk = ordered[start : start + PROFILE_PAGE]
            answer = self._general.request(
                "GET",
                "/api/profiles",
                params={
                    "filter": f"any({self._identifier},{json.dumps(chunk)})",
                    "fields[profile]": self._identifier,
                    "page[size]": PROFILE_PAGE,
                    **params,
                },
            ).json()
            for profile in answer.get("data", []):
                value = (profile.get("attributes") or {}).get(self._identifier)
                if isinstance(value, str) and _normal(value) in wanted:
                    yield wanted[_normal(value)], profile

    # --- suppression -------------------------------------------------------------------------
    def _suppression_job(self, kind: ChangeKind, batch: Sequence[Change]) -> list[ChangeResult]:
        """One job per 100 addresses, all created before any is polled."""
        verb = "create" if kind is ChangeKind.SUPPRESS else "delete"
        by_address = _group(batch, lambda c: c.address)
        addresses = sorted(by_address)
        parts = []
        for start in range(0, len(addresses), MAX_PER_SUPPRESSION_JOB):
            chunk = addresses[start : start + MAX_PER_SUPPRESSION_JOB]
            profiles = [{"type": "profile", "attributes": {"email": a}} for a in chunk]
            body = {
                "data": {
                    "type": f"profile-suppression-bulk-{verb}-job",
                    "attributes": {"profiles": {"data": profiles}},
                }
            }
            parts.append((body, [c for a in chunk for c in by_address[a]]))
        results: list[ChangeResult] = []
        endpoint = f"/api/profile-suppression-bulk-{verb}-jobs"
        for (_, changes), job in zip(parts, self._run_jobs(self._general, endpoint, parts), strict=True):
            if isinstance(job, list):
                results += job
            elif kind is ChangeKind.SUPPRESS and job.get("skipped_count"):
                results += self._confirm_suppressed(changes)
            else:
                results += [ChangeResult(c, Outcome.APPLIED) for c in changes]
        return results

    def _confirm_suppressed(self, batch: Sequence[Change]) -> list[ChangeResult]:
        """The job skipped some addresses and does not say which: look them up, and claim
        only the ones Klaviyo now holds as suppressed (already suppressed counts)."""
        fields = {
            "fields[profile]": "email,subscriptions.email.marketing.suppression",
            "additional-fields[profile]": "subscriptions",
        }
        found = self._profiles((c.address for c in batch), fields)
        suppressed = {address for address, profile in found if _email_suppressed(profile)}
        return [
            ChangeResult(c, Outcome.APPLIED)
            if c.address in suppressed
            else ChangeResult(c, Outcome.PERMANENT, "skipped by Klaviyo's suppression job (invalid email?)")
            for c in batch
        ]

    def _unsubscribe_sms(self, batch: Sequence[Change]) -> list[ChangeResult]:
        """Unsubscribe from SMS marketing, with no list relationship (a list would make
        Klaviyo unsubscribe everyone else in the batch globally, by its own warning; without
        one it is a global SMS unsubscribe, which is what a suppression means)."""
        phones = sorted({c.address for c in batch})
        unsubscribed = {"sms": {"marketing": {"consent": "UNSUBSCRIBED"}}}
        body = {
            "data": {
                "type": "profile-subscription-bulk-delete-job",
                "attributes": {
                    "profiles": {
                        "data": [
                            {
                                "type": "profile",
                                "attributes": {"phone_number": p, "subscriptions": unsubscribed},
                            }
                            for p in phones
                        ]
                    }
                },
            }
        }
        self._general.request("POST", "/api/profile-subscription-bulk-delete-jobs", json_body=body)
        return [ChangeResult(c, Outcome.APPLIED) for c in batch]  # 202: accepted, no job to poll

    # --- jobs --------------------------------------------------------------------------------
    def _run_job(
        self,
        client: ApiClient,
        endpoint: str,
        body: Mapping[str, Any],
        changes: Sequence[Change],
        *,
        idempotent: bool = True,
    ) -> dict[str, Any] | list[ChangeResult]:
        """Create a job and wait for it (see :meth:`_run_jobs`)."""
        return self._run_jobs(client, endpoint, [(body, changes)], idempotent=idempotent)[0]

    def _run_jobs(
        self,
        client: ApiClient,
        endpoint: str,
        parts: Sequence[tuple[Mapping[str, Any], Sequence[Change]]],
        *,
        idempotent: bool = True,
    ) -> list[dict[str, Any] | list[ChangeResult]]:
        """Create one job per part, then wait for them all. Per part: the finished job's
        attributes (with its ``id``), or, when its outcome is not known (the queue stalled
        earlier this run, the job still unfinished at the deadline, or cancelled), every
        change back as retryable."""
        jobs: list[dict[str, Any] | None] = []
        for body, _ in parts:
            if endpoint in self._stalled:
                jobs.append(None)
                continue
            answer = client.request("POST", endpoint, json_body=body, idempotent=idempotent)
            jobs.append(answer.json()["data"])
        finished = self._wait_for(client, endpoint, [job for job in jobs if job is not None])
        outcomes: list[dict[str, Any] | list[ChangeResult]] = []
        for job, (_, changes) in zip(jobs, parts, strict=True):
            if job is None:  # the queue stalled earlier: not sent
                outcomes.append(
                    [ChangeResult(c, Outcome.RETRYABLE, self._stalled[endpoint]) for c in changes]
                )
                continue
            status = finished[str(job["id"])]
            if isinstance(status, _Stalled):
                self._stalled[endpoint] = f"not confirmed: {status}; sent again next run"
                outcomes.append([ChangeResult(c, Outcome.RETRYABLE, str(status)) for c in changes])
            elif status["status"] == "cancelled":
                why = f"Klaviyo cancelled job {job['id']}"
                outcomes.append([ChangeResult(c, Outcome.RETRYABLE, why) for c in changes])
            else:
                outcomes.append({**status, "id": job["id"]})
        return outcomes

    def _wait_for(
        self, client: ApiClient, endpoint: str, jobs: Sequence[Mapping[str, Any]]
    ) -> dict[str, dict[str, Any] | _Stalled]:
        """Poll jobs until each is complete or cancelled: job id -> its attributes, or
        :class:`_Stalled` for a job still unfinished at the deadline. Each round waits the
        next step of the poll schedule, less the time the last round of requests took."""
        pending = {str(job["id"]): dict(job.get("attributes") or {}) for job in jobs}
        done: dict[str, dict[str, Any] | _Stalled] = {}
        started = last_round = self._clock()
        polls = 0
        while True:
            for job_id, attributes in list(pending.items()):
                if attributes.get("status") in ("complete", "cancelled"):
                    done[job_id] = pending.pop(job_id)
            waited = self._clock() - started
            if not pending or waited >= self._settings.job_timeout:
                for job_id, attributes in pending.items():
                    status = attributes.get("status", "queued")
                    done[job_id] = _Stalled(f"Klaviyo job {job_id} still {status} after {waited:.0f} s")
                return done
            step = POLL_SCHEDULE[min(polls, len(POLL_SCHEDULE) - 1)]
            self._sleep(max(0.0, step - (self._clock() - last_round)))
            polls += 1
            last_round = self._clock()
            for job_id in pending:
                answer = client.request("GET", f"{endpoint}/{job_id}").json()
                pending[job_id] = dict(answer["data"]["attributes"])


def _group(items: Iterable[Any], key: Callable[[Any], Any]) -> dict[Any, list[Any]]:
    groups: dict[Any, list[Any]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def _email_suppressed(profile: Mapping[str, Any]) -> bool:
    subscriptions = (profile.get("attributes") or {}).get("subscriptions") or {}
    return bool(((subscriptions.get("email") or {}).get("marketing") or {}).get("suppression"))


def _normal(address: str) -> str:
    return address.strip().lower()


def _reason(error: ApiError) -> str:
    """Klaviyo's JSON:API error detail, without the HTTP framing when we can read it."""
    text = str(error)
    start = text.find("{")
    if start >= 0:
        try:
            errors = json.loads(text[start:]).get("errors") or []
        except ValueError:
            return text
        if errors:
            first = errors[0]
            return f"{first.get('code', 'invalid')}: {first.get('detail') or first.get('title', '')}"
    return text


def build(
    name: str,
    api_key: str,
    settings: KlaviyoSettings,
    *,
    base_url: str = BASE_URL,
    revision: str = REVISION,
    rate_share: float = 1.0,
    timeout: tuple[float, float],
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    **client_options: Any,
) -> KlaviyoDestination:
    """Two clients sharing nothing but settings: Klaviyo limits bulk import jobs (10/s,
    150/m) apart from the other calls we make (75/s, 750/m), so each gets its own bucket."""
    headers = {"Authorization": f"Klaviyo-API-Key {api_key}", "revision": revision, "Accept": JSON_API}

    def client(window: tuple[int, int]) -> ApiClient:
        rate, burst = window_rate(*window, share=rate_share)
        return ApiClient(
            base_url,
            headers=headers,
            secrets=[api_key],
            timeout=timeout,
            requests_per_second=rate,
            burst=burst,
            policy=policy,
            sleep=sleep,
            clock=clock,
            content_type=JSON_API,
            **client_options,
        )

    return KlaviyoDestination(
        name, settings, client(IMPORT_WINDOW), client(GENERAL_WINDOW), sleep=sleep, clock=clock
    )
