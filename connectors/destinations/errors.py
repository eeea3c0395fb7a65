"""How a vendor adapter turns an HTTP failure that makes the destination unusable into the
engine's :class:`~sync.ports.DestinationError`, with one wording for every vendor."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from connectors.http import ApiError, AuthError, QuotaExhausted
from sync.ports import DestinationError


@contextmanager
def unusable_on(name: str, vendor: str, auth_hint: str = "") -> Iterator[None]:
    """Credentials refused, quota exhausted, down after retries: stop this destination.

    Failures the adapter can pin on records (a refused row, an unknown outcome) are caught
    inside this block, before they reach it."""
    try:
        yield
    except AuthError as exc:
        raise DestinationError(f"{name}: {vendor} refused the API key{auth_hint} ({exc})") from None
    except QuotaExhausted as exc:
        raise DestinationError(
            f"{name}: {vendor}'s API quota is used up; stopped this destination instead of retrying "
            f"(the rest is sent on the next run once the quota resets) ({exc})"
        ) from None
    except ApiError as exc:
        raise DestinationError(f"{name}: {exc}") from None
