"""How a vendor adapter turns HTTP failures into outcomes, the same way for every vendor:
per record where the failure can be pinned on the batch, else the engine's
:class:`~sync.ports.DestinationError` with one wording."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from connectors.http import ApiError, AuthError, PermanentError, QuotaExhausted, UnknownOutcome
from sync.changes import Change
from sync.ports import BatchResult, ChangeResult, DestinationError, Outcome


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


def apply_batch(
    name: str,
    vendor: str,
    batch: Sequence[Change],
    send: Callable[[], list[ChangeResult]],
    requests_sent: Callable[[], int],
    reason: Callable[[ApiError], str] = str,
    auth_hint: str = "",
) -> BatchResult:
    """Run ``send`` (the adapter's work for one batch) and settle what it could not:

    - an unknown outcome (a write that timed out) leaves the batch retryable: our writes
      are set-based upserts, safe to send again next round;
    - a request the vendor refused as a whole: several changes go back as a batch error
      for the engine to split; a single change is refused on its own, with ``reason``;
    - credentials, quota, down after retries: :class:`DestinationError` (:func:`unusable_on`).
    """
    before = requests_sent()
    with unusable_on(name, vendor, auth_hint):
        try:
            results = send()
        except UnknownOutcome as exc:
            results = [ChangeResult(c, Outcome.RETRYABLE, str(exc)) for c in batch]
        except PermanentError as exc:
            if len(batch) > 1:
                return BatchResult(batch_error=str(exc), requests=requests_sent() - before)
            results = [ChangeResult(batch[0], Outcome.PERMANENT, reason(exc))]
    return BatchResult(results, requests=requests_sent() - before)
