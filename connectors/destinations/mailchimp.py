"""Mailchimp Marketing API (``type = "mailchimp"``): persona tags as Mailchimp tags, and
suppression as ``unsubscribed`` members of one audience.

Vendor facts (``shared/vendor-apis.md`` §3, from Mailchimp's OpenAPI spec and SDK):

- base URL ``https://{dc}.api.mailchimp.com/3.0``, ``dc`` being the API key's suffix after
  ``-``; HTTP Basic auth with the key; at most 10 simultaneous connections, 429 beyond;
- tags are static segments: ``GET /lists/{id}/segments?type=static`` lists them,
  ``POST /lists/{id}/segments`` ``{"name", "static_segment": []}`` creates one, and
  ``POST /lists/{id}/segments/{segment_id}`` ``{"members_to_add": [...],
  "members_to_remove": [...]}`` takes at most 500 emails and answers
  ``errors[{email_addresses, error}]`` for the ones it refused;
- members are keyed by the MD5 of the lower-cased email; ``PUT
  /lists/{id}/members/{hash}`` with ``status_if_new`` and ``status`` upserts one member.

What we do with them:

- **We never subscribe anyone.** Tags go only to members already in the audience (others
  are reported per record as ``not_in_audience``); a suppression puts the address in the
  audience as ``unsubscribed`` (new or existing), which Mailchimp never mails.
- **Unsubscribing is irreversible in Mailchimp** (only the person can opt back in), so
  this destination cannot lift a suppression (``can_unsuppress = False``), and a member
  already ``unsubscribed`` or ``cleaned`` is never touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

from connectors.destinations.errors import apply_batch
from connectors.http import ApiClient, ApiError, AuthError, PermanentError, RetryPolicy, UnknownOutcome
from sync.changes import Change, ChangeKind
from sync.ports import BatchResult, Capabilities, ChangeResult, DestinationError, Outcome

MAX_MEMBERS_PER_TAG_CALL: Final = 500  # POST /lists/{id}/segments/{segment_id}
MAX_CONCURRENCY: Final = 10  # simultaneous connections Mailchimp allows
NOT_IN_AUDIENCE: Final = "not_in_audience"
LEAVE_ALONE: Final = frozenset({"unsubscribed", "cleaned"})


def data_centre(api_key: str) -> str:
    """``"...-us6"`` -> ``"us6"``; raises ValueError for a key without one."""
    _, dash, dc = api_key.rpartition("-")
    if not dash or not dc.isalnum():
        raise ValueError("a Mailchimp API key ends with its data centre, e.g. '-us6'")
    return dc


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


class MailchimpDestination:
    """:class:`sync.ports.Destination` for one Mailchimp audience."""

    def __init__(self, name: str, list_id: str, client: ApiClient, requests_per_second: float | None) -> None:
        self.name = name
        self._list_id = list_id
        self._client = client
        self._segments: dict[str, int] | None = None  # tag name -> segment id, read once per run
        self._capabilities = Capabilities(
            max_batch={
                ChangeKind.ADD_TAG: MAX_MEMBERS_PER_TAG_CALL,
                ChangeKind.REMOVE_TAG: MAX_MEMBERS_PER_TAG_CALL,
                ChangeKind.SUPPRESS: 100,  # one PUT per member: small batches commit often
            },
            requests_per_second=requests_per_second,
            concurrency=1,
            can_unsuppress=False,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def requests_sent(self) -> int:
        return self._client.requests_sent

    def check(self) -> None:
        try:
            self._client.request("GET", f"/lists/{self._list_id}", params={"fields": "id,name"})
        except AuthError as exc:
            raise DestinationError(f"{self.name}: Mailchimp refused the API key ({exc})") from None
        except PermanentError as exc:
            raise DestinationError(f"{self.name}: audience {self._list_id!r} not found ({exc})") from None
        except ApiError as exc:
            raise DestinationError(f"{self.name}: {exc}") from None

    def apply(self, kind: ChangeKind, batch: Sequence[Change]) -> BatchResult:
        def send() -> list[ChangeResult]:
            if kind is ChangeKind.SUPPRESS:
                return [self._unsubscribe(change) for change in batch]
            return self._tags(kind, batch)

        return apply_batch(self.name, "Mailchimp", batch, send, lambda: self._client.requests_sent)

    # --- tags ------------------------------------------------------------------------------
    def _tags(self, kind: ChangeKind, batch: Sequence[Change]) -> list[ChangeResult]:
        by_tag: dict[str, list[Change]] = {}
        for change in batch:
            assert change.tag is not None
            by_tag.setdefault(change.tag, []).append(change)
        results = []
        for tag, changes in by_tag.items():
            segment = self._segment(tag, create=kind is ChangeKind.ADD_TAG)
            if segment is None:  # removing a tag that does not exist: nobody holds it
                results.extend(ChangeResult(c, Outcome.APPLIED) for c in changes)
                continue
            field = "members_to_add" if kind is ChangeKind.ADD_TAG else "members_to_remove"
            answer = self._client.request(
                "POST",
                f"/lists/{self._list_id}/segments/{segment}",
                json_body={field: [c.address for c in changes]},
            ).json()
            refused = _refused(answer)
            added = {str(m.get("email_address", "")).lower() for m in answer.get("members_added") or []}
            unconfirmed = []
            for change in changes:
                error = refused.get(change.address.lower())
                if error is None and (kind is ChangeKind.REMOVE_TAG or change.address.lower() in added):
                    results.append(
                        ChangeResult(change, Outcome.APPLIED)
                    )  # a removal from a non-member: nobody to untag
                elif error is None:
                    unconfirmed.append(change)
                elif kind is ChangeKind.REMOVE_TAG and _not_a_member(error):
                    results.append(ChangeResult(change, Outcome.APPLIED))  # nobody there to untag
                else:
                    reason = f"{NOT_IN_AUDIENCE}: {error}" if _not_a_member(error) else error
                    results.append(ChangeResult(change, Outcome.PERMANENT, reason))
            results.extend(self._confirm_tag(tag, unconfirmed))
        return results

    def _confirm_tag(self, tag: str, changes: Sequence[Change]) -> list[ChangeResult]:
        """Emails a tag call neither added nor refused: Mailchimp ignores non-members without
        an error (and may not list a member who already had the tag), so ask for the member:
        the ledger must never claim a tag Mailchimp does not hold."""
        results = []
        for change in changes:
            path = f"/lists/{self._list_id}/members/{subscriber_hash(change.address)}"
            try:
                member = self._client.request("GET", path, params={"fields": "status,tags"}).json()
            except PermanentError:
                results.append(
                    ChangeResult(change, Outcome.PERMANENT, f"{NOT_IN_AUDIENCE}: not in the audience")
                )
                continue
            held = {str(t.get("name")) for t in member.get("tags") or []}
            if tag in held:
                results.append(ChangeResult(change, Outcome.APPLIED))
            else:
                results.append(ChangeResult(change, Outcome.RETRYABLE, "Mailchimp did not confirm the tag"))
        return results

    def _segment(self, tag: str, *, create: bool) -> int | None:
        if self._segments is None:
            self._segments = self._read_segments()
        if tag not in self._segments and create:
            self._segments[tag] = self._create_segment(tag)
        return self._segments.get(tag)

    def _create_segment(self, tag: str) -> int:
        """Create the tag. Not idempotent (a repeat is refused as a duplicate name), so it is
        never repeated blindly: after an unknown outcome or a refusal, the tags are read again
        and one already there (made by the call whose answer we lost, or by someone else) is used."""
        try:
            answer = self._client.request(
                "POST",
                f"/lists/{self._list_id}/segments",
                json_body={"name": tag, "static_segment": []},
                idempotent=False,
            ).json()
            return int(answer["id"])
        except (UnknownOutcome, PermanentError):
            self._segments = self._read_segments()
            if tag in self._segments:
                return self._segments[tag]
            raise

    def _read_segments(self) -> dict[str, int]:
        segments: dict[str, int] = {}
        offset = 0
        while True:
            page = self._client.request(
                "GET",
                f"/lists/{self._list_id}/segments",
                params={
                    "type": "static",
                    "count": 1000,
                    "offset": offset,
                    "fields": "segments.id,segments.name,total_items",
                },
            ).json()
            for segment in page.get("segments", []):
                segments[str(segment["name"])] = int(segment["id"])
            offset += 1000
            if offset >= int(page.get("total_items", 0)):
                return segments

    # --- suppression -------------------------------------------------------------------------
    def _unsubscribe(self, change: Change) -> ChangeResult:
        path = f"/lists/{self._list_id}/members/{subscriber_hash(change.address)}"
        try:
            member = self._client.request("GET", path, params={"fields": "status"}).json()
        except PermanentError:
            member = None  # not in the audience yet
        if member is not None and member.get("status") in LEAVE_ALONE:
            return ChangeResult(change, Outcome.APPLIED)  # already never mailed; leave it as it is
        try:
            self._client.request(
                "PUT",
                path,
                json_body={
                    "email_address": change.address,
                    "status_if_new": "unsubscribed",
                    "status": "unsubscribed",
                },
            )
        except PermanentError as exc:
            return ChangeResult(change, Outcome.PERMANENT, str(exc))
        return ChangeResult(change, Outcome.APPLIED)


def _refused(answer: dict[str, Any]) -> dict[str, str]:
    """Lower-cased email -> Mailchimp's error, from a segment call's ``errors`` array."""
    refused = {}
    for error in answer.get("errors", []) or []:
        for address in error.get("email_addresses", []) or []:
            refused[str(address).lower()] = str(error.get("error", "refused"))
    return refused


def _not_a_member(error: str) -> bool:
    text = error.lower()
    return "not" in text and (
        "member" in text or "subscribed" in text or "exist" in text or "audience" in text
    )


def build(
    name: str,
    api_key: str,
    list_id: str,
    *,
    base_url: str | None,
    requests_per_second: float | None,
    timeout: tuple[float, float],
    policy: RetryPolicy = RetryPolicy(),
    **client_options: Any,
) -> MailchimpDestination:
    url = base_url or f"https://{data_centre(api_key)}.api.mailchimp.com/3.0"
    client = ApiClient(
        url,
        auth=("personasync", api_key),
        secrets=[api_key],
        timeout=timeout,
        requests_per_second=requests_per_second,
        concurrency=min(MAX_CONCURRENCY - 1, 4),
        policy=policy,
        **client_options,
    )
    return MailchimpDestination(name, list_id, client, requests_per_second)
