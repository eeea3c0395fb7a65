"""HubSpot over real sockets: :class:`tests.fakes.hubspot.HubSpotModel` behind an
:class:`~tests.emulators.server.Emulator` that enforces HubSpot's burst limit.

HubSpot limits an account (all its apps together) per rolling ten seconds and per day.
Professional and Enterprise private apps get 190 requests in any 10 seconds; the API
limit increase pack raises that to 250 (:data:`CAPACITY_PACK`; vendor-apis.md §12,
developers.hubspot.com/changelog/increasing-our-api-limits). Every path we call counts
(the spec exempts only CRM search, which we do not call). Over the limit the emulator
answers as HubSpot does: 429, ``policyName: TEN_SECONDLY_ROLLING``, the
``X-HubSpot-RateLimit-*`` headers with ``Remaining: 0`` and no ``Retry-After`` unless
``model.faults.retry_after`` is set (:meth:`HubSpotModel.throttled_reply`). The daily
limit is the model's own (``HubSpotModel(daily_limit=...)``, ``faults.daily_exhausted``).

The numbers are written down here, apart from the adapter's own constants
(``connectors/destinations/hubspot.py``), so that a wrong number in the adapter shows up
as 429s instead of being agreed with.
"""

from __future__ import annotations

from collections.abc import Iterable

from tests.emulators.server import Emulator, Limit
from tests.fakes.hubspot import HubSpotModel

TEN_SECONDLY = Limit("ten-secondly", r"^/", per_ten_seconds=190, rolling=True)
CAPACITY_PACK = Limit("ten-secondly", r"^/", per_ten_seconds=250, rolling=True)
LIMITS: tuple[Limit, ...] = (TEN_SECONDLY,)


def hubspot_emulator(
    model: HubSpotModel,
    latency: float = 0.05,
    enforce_limits: bool = True,
    *,
    limits: Iterable[Limit] = LIMITS,
    max_seconds: float = 120.0,
) -> Emulator:
    """An emulator serving ``model`` (start it with ``with``; its ``url`` is the base URL to
    give the HubSpot adapter in place of ``https://api.hubapi.com``)."""
    return Emulator(
        model.handle,
        latency=latency,
        limits=tuple(limits) if enforce_limits else (),
        max_seconds=max_seconds,
        throttled=model.throttled_reply,
    )
