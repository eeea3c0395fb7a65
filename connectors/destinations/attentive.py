"""Attentive (``type = "attentive"``, SMS): persona tags as custom attributes on the
subscriber, suppression as an unsubscribe from marketing texts.

Vendor facts (``shared/vendor-apis.md`` §8, from Attentive's OpenAPI file and rate-limit
page):

- ``https://api.attentivemobile.com/v1``, ``Authorization: Bearer <token>``; the user is
  identified by ``user.phone`` in E.164;
- ``POST /attributes/custom`` ``{"properties": {...}, "user": {"phone": ...}}`` sets
  scalar attributes (no objects or arrays), one user per request; 150 requests/s;
- ``POST /subscriptions/unsubscribe`` ``{"user": {"phone"}, "subscriptions": [{"type":
  "MARKETING", "channel": "TEXT"}]}`` answers 202; **Attentive texts the person on every
  unsubscribe call**; 5 requests/s;
- there are no batch endpoints; ``x-ratelimit-*`` headers come on every answer.

What we do with them:

- **We never subscribe anyone**: the subscribe endpoint is never called.
- **An unsubscribe is sent at most once per person** (``Capabilities.at_most_once``): one
  per batch, written down in the state store before the call and settled as sent if the
  run dies before the answer is recorded; an answer that leaves the outcome unknown (a
  timeout, a 500) counts as sent too and is never repeated. Only the person can undo an
  unsubscribe, so this destination never lifts one.
- Tags: either one attribute per persona set to ``true_value`` / ``false_value``
  (``attribute_mode = "per_persona"``), or one attribute holding the customer's persona
  (``"primary"``, for ``first_match`` assignment, where a customer has one persona).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from connectors.destinations.errors import unusable_on
from connectors.http import (
    ApiClient,
    PermanentError,
    RetriesExhausted,
    RetryPolicy,
    UnknownOutcome,
    window_rate,
)
from sync.changes import Change, ChangeKind
from sync.ports import BatchResult, Capabilities, ChangeResult, Outcome

BASE_URL: Final = "https://api.attentivemobile.com/v1"
ATTRIBUTES_PER_SECOND: Final = 150  # Attentive's default per-endpoint limit
UNSUBSCRIBES_PER_SECOND: Final = 5
TAG_BATCH: Final = 100  # changes per commit; each user is still one request
UNKNOWN_COUNTS_AS_SENT: Final = (
    "no answer from Attentive (the text may have gone): counted as sent, never repeated"
)


@dataclass(frozen=True)
class AttentiveSettings:
    attribute_mode: str = "per_persona"  # or "primary"
    true_value: str = "true"
    false_value: str = "false"
    primary_attribute: str = "persona"


class AttentiveDestination:
    """:class:`sync.ports.Destination` for one Attentive account (SMS)."""

    def __init__(
        self, name: str, settings: AttentiveSettings, attributes: ApiClient, unsubscribes: ApiClient
    ) -> None:
        self.name = name
        self._settings = settings
        self._attributes = attributes
        self._unsubscribes = unsubscribes  # its own, much lower rate limit
        self._capabilities = Capabilities(
            max_batch={
                ChangeKind.ADD_TAG: TAG_BATCH,
                ChangeKind.REMOVE_TAG: TAG_BATCH,
                ChangeKind.SUPPRESS: 1,
            },
            requests_per_second=window_rate(UNSUBSCRIBES_PER_SECOND, UNSUBSCRIBES_PER_SECOND * 60)[0],
            can_unsuppress=False,
            at_most_once=frozenset({ChangeKind.SUPPRESS}),
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def requests_sent(self) -> int:
        return self._attributes.requests_sent + self._unsubscribes.requests_sent

    def check(self) -> None:
        """Attentive has no read endpoint we need; an empty attribute call for a test phone
        would create a subscriber, so credentials are checked with ``GET /me``."""
        with unusable_on(self.name, "Attentive"):
            self._attributes.request("GET", "/me")

    def apply(self, kind: ChangeKind, batch: Sequence[Change]) -> BatchResult:
        before = self.requests_sent
        with unusable_on(self.name, "Attentive"):
            if kind is ChangeKind.SUPPRESS:
                results = [self._unsubscribe(change) for change in batch]
            else:
                results = self._tags(kind, batch)
        return BatchResult(results, requests=self.requests_sent - before)

    def _tags(self, kind: ChangeKind, batch: Sequence[Change]) -> list[ChangeResult]:
        by_phone: dict[str, list[Change]] = {}
        for change in batch:
            by_phone.setdefault(change.address, []).append(change)
        results = []
        for phone, changes in by_phone.items():
            body = {"properties": self._properties(kind, changes), "user": {"phone": phone}}
            try:
                self._attributes.request("POST", "/attributes/custom", json_body=body)
            except PermanentError as exc:
                results.extend(ChangeResult(c, Outcome.PERMANENT, str(exc)) for c in changes)
                continue
            except RetriesExhausted as exc:
                results.extend(ChangeResult(c, Outcome.RETRYABLE, str(exc)) for c in changes)
                continue
            results.extend(ChangeResult(c, Outcome.APPLIED) for c in changes)
        return results

    def _properties(self, kind: ChangeKind, changes: list[Change]) -> dict[str, str]:
        adding = kind is ChangeKind.ADD_TAG
        settings = self._settings
        if settings.attribute_mode == "primary":
            return {settings.primary_attribute: changes[-1].tag or "" if adding else ""}
        value = settings.true_value if adding else settings.false_value
        return {c.tag: value for c in changes if c.tag is not None}

    def _unsubscribe(self, change: Change) -> ChangeResult:
        body: dict[str, Any] = {
            "user": {"phone": change.address},
            "subscriptions": [{"type": "MARKETING", "channel": "TEXT"}],
        }
        try:
            self._unsubscribes.request("POST", "/subscriptions/unsubscribe", json_body=body, idempotent=False)
        except UnknownOutcome:
            return ChangeResult(change, Outcome.APPLIED, UNKNOWN_COUNTS_AS_SENT)
        except PermanentError as exc:
            return ChangeResult(change, Outcome.PERMANENT, str(exc))
        except RetriesExhausted as exc:  # 429 / 503 answers: Attentive did nothing
            return ChangeResult(change, Outcome.RETRYABLE, str(exc))
        return ChangeResult(change, Outcome.APPLIED)


def build(
    name: str,
    api_key: str,
    settings: AttentiveSettings,
    *,
    base_url: str = BASE_URL,
    timeout: tuple[float, float],
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rate_share: float = 1.0,
    **client_options: Any,
) -> AttentiveDestination:
    """``rate_share``: the part of Attentive's per-endpoint limits this process may use (a
    sharded run splits them between its workers)."""

    def client(per_second: int) -> ApiClient:
        rate, burst = window_rate(per_second, per_second * 60, share=rate_share)
        return ApiClient(
            base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            secrets=[api_key],
            timeout=timeout,
            requests_per_second=rate,
            burst=burst,
            policy=policy,
            sleep=sleep,
            clock=clock,
            **client_options,
        )

    return AttentiveDestination(
        name, settings, client(ATTRIBUTES_PER_SECOND), client(UNSUBSCRIBES_PER_SECOND)
    )
