"""Klaviyo over real sockets: :class:`tests.fakes.klaviyo.KlaviyoModel` behind an
:class:`~tests.emulators.server.Emulator` that enforces Klaviyo's rate limits.

Klaviyo rate-limits per account with two fixed windows per endpoint, a burst (1 s) and a
steady (60 s) one. The groups are written down here, apart from the adapter's own
constants (``connectors/destinations/klaviyo.py``), so that a wrong number in the adapter
shows up as 429s instead of being agreed with:

- bulk profile import jobs, their status and their import errors: 10/s, 150/m;
- everything else we call (profile-import, profile reads, suppression and unsubscribe
  jobs and their status, lists): 75/s, 750/m, as our vendor notes (``shared/vendor-apis.md``
  §2) state it. Klaviyo's published "L" tier is 700/m steady; pass ``limits=`` with
  :data:`GENERAL_700` to hold the client to that reading.
"""

from __future__ import annotations

from collections.abc import Iterable

from tests.emulators.server import Emulator, Limit
from tests.fakes.klaviyo import KlaviyoModel

IMPORT_JOBS = Limit("bulk-import-jobs", r"^/api/profile-bulk-import-jobs(/|$)", per_second=10, per_minute=150)
GENERAL = Limit("general", r"^/api/", per_second=75, per_minute=750)
GENERAL_700 = Limit("general", r"^/api/", per_second=75, per_minute=700)
LIMITS: tuple[Limit, ...] = (IMPORT_JOBS, GENERAL)  # first match wins: the import group comes first


def klaviyo_emulator(
    model: KlaviyoModel,
    latency: float = 0.05,
    enforce_limits: bool = True,
    *,
    limits: Iterable[Limit] = LIMITS,
    max_seconds: float = 120.0,
) -> Emulator:
    """An emulator serving ``model`` (start it with ``with``; its ``url`` is the base URL to
    give ``connectors.destinations.klaviyo.build``)."""
    return Emulator(
        model.handle, latency=latency, limits=tuple(limits) if enforce_limits else (), max_seconds=max_seconds
    )
