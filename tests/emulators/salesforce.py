"""Salesforce over real sockets: :class:`tests.fakes.salesforce.SalesforceModel` behind an
:class:`~tests.emulators.server.Emulator`.

One server plays both hosts: the login host's token endpoint (``/services/oauth2/token``)
and the org's instance (``/services/data/...``). The model hands out the origin a token
request came in on as ``instance_url``, so the client's data calls come back here: give the
client ``emulator.url`` as its login URL and check it uses the ``instance_url`` it is given.

No per-second windows: Salesforce's limit is the org's daily request quota, which the model
keeps (``daily_limit``, ``api_used``, ``Sforce-Limit-Info``, 403 ``REQUEST_LIMIT_EXCEEDED``).
"""

from __future__ import annotations

from tests.emulators.server import Emulator
from tests.fakes.salesforce import SalesforceModel


def salesforce_emulator(
    model: SalesforceModel, latency: float = 0.05, *, max_seconds: float = 120.0
) -> Emulator:
    """An emulator serving ``model`` (start it with ``with``; ``url`` is both the login URL and,
    through the token answer, the instance URL). Undoes a ``responses`` attach's fixed
    instance URL on the model."""
    model.instance_url = None
    return Emulator(model.handle, latency=latency, limits=(), max_seconds=max_seconds)
