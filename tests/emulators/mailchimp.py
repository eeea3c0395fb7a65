"""Mailchimp over real sockets: :class:`tests.fakes.mailchimp.MailchimpModel` behind an
:class:`~tests.emulators.server.Emulator` that enforces Mailchimp's connection cap.

Mailchimp limits a user by concurrency, not by a request count over a window: at most 10
simultaneous connections per user across all apps, 429 beyond, with no rate-limit headers
and no ``Retry-After`` (``shared/vendor-apis.md`` §1 and §3; api-evangelist/mailchimp
``rate-limits/mailchimp-rate-limits.yml``, quoting
https://mailchimp.com/developer/marketing/docs/fundamentals/). No per-second or
per-minute quota is published, so there are no :class:`~tests.emulators.server.Limit`
windows here: the emulator's ``max_concurrent`` counts requests being answered (latency
included) and refuses the 11th with :meth:`MailchimpModel.throttled_reply` (problem
details, ``Retry-After`` only if ``model.faults.retry_after`` is set).

The cap is written down here, apart from the adapter's own ``MAX_CONCURRENCY``
(``connectors/destinations/mailchimp.py``), so that a wrong number there shows up as 429s
instead of being agreed with.

The API lives under ``/3.0``: give the adapter :func:`api_url` (``emulator.url + "/3.0"``)
as its ``base_url``; the Mailchimp destination's config takes the same ``base_url`` key.
"""

from __future__ import annotations

from tests.emulators.server import Emulator
from tests.fakes.mailchimp import API_ROOT, MailchimpModel

MAX_CONNECTIONS = 10  # simultaneous connections per user


def mailchimp_emulator(
    model: MailchimpModel,
    latency: float = 0.05,
    enforce_limits: bool = True,
    *,
    max_concurrent: int = MAX_CONNECTIONS,
    max_seconds: float = 120.0,
) -> Emulator:
    """An emulator serving ``model`` (start it with ``with``; :func:`api_url` is the base URL
    to give ``connectors.destinations.mailchimp.build``)."""
    return Emulator(
        model.handle,
        latency=latency,
        max_seconds=max_seconds,
        throttled=model.throttled_reply,
        max_concurrent=max_concurrent if enforce_limits else None,
    )


def api_url(emulator: Emulator) -> str:
    """``http://127.0.0.1:PORT/3.0``: where the adapter finds the API, as at ``https://{dc}.api.mailchimp.com/3.0``."""
    return emulator.url + API_ROOT
