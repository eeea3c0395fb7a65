"""The one HTTP client every vendor adapter uses.

- :func:`classify` decides, from a response or an exception and nothing else, whether a
  call succeeded, may be retried, failed for good, was refused for credentials, or hit a
  quota that will not reset soon (HubSpot's daily limit, Salesforce's 403
  ``REQUEST_LIMIT_EXCEEDED``): a table of rules, pure and tested on its own.
- :class:`RateLimiter` is a token bucket fed by the destination's requests per second,
  paused by ``Retry-After``; a semaphore caps concurrent requests.
- :class:`ApiClient` holds one ``requests.Session`` (pooled connections, connect and read
  timeouts, a ``personasync/<version>`` User-Agent) and one tenacity ``Retrying`` policy:
  it waits what the vendor asks (``Retry-After`` in seconds or as an HTTP date,
  ``RateLimit-Reset`` seconds, ``X-RateLimit-Reset`` epoch), else backs off exponentially
  with jitter, bounded by attempts and total time. ``sleep`` and the clock are injected,
  so tests never really sleep. A call that is not idempotent is never retried after an
  answer that leaves its outcome unknown (a timeout, a dropped connection, a 500).

Credentials never reach an exception or a log line: every message goes through the
client's redactor.
"""

from __future__ import annotations

import base64
import email.utils
import importlib.metadata
import json
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay

DEFAULT_TIMEOUT: Final = (5.0, 60.0)  # connect, read (seconds)
EPOCH_THRESHOLD: Final = 1_000_000_000  # a reset header above this is an epoch timestamp, not seconds
MAX_BODY_IN_MESSAGES: Final = 300


class Verdict(str, Enum):
    SUCCESS = "success"
    RETRY = "retry"  # try again after a wait
    PERMANENT = "permanent"  # the request itself is wrong: do not repeat it
    AUTH = "auth"  # credentials refused: nothing will work this run
    QUOTA_EXHAUSTED = "quota_exhausted"  # a daily/org quota: stop, do not hammer
    UNKNOWN = "unknown"  # may or may not have happened (non-idempotent call): never repeat blindly


@dataclass(frozen=True)
class Classified:
    verdict: Verdict
    reason: str
    wait: float | None = None  # seconds the vendor asked us to wait, if it said


@dataclass(frozen=True)
class Rule:
    """``status`` (and, if given, a ``marker`` found in the body) -> verdict. First match wins."""

    status: int | range
    verdict: Verdict
    marker: str | None = None
    only_if_idempotent: bool = False  # for other calls the verdict becomes UNKNOWN

    def matches(self, status: int, body: str) -> bool:
        hit = status in self.status if isinstance(self.status, range) else status == self.status
        return hit and (self.marker is None or self.marker in body)


RULES: Final[tuple[Rule, ...]] = (
    Rule(range(200, 300), Verdict.SUCCESS),  # 207 multi-status: the adapter reads each record
    Rule(429, Verdict.QUOTA_EXHAUSTED, marker='"DAILY"'),  # HubSpot daily limit (policyName)
    Rule(403, Verdict.QUOTA_EXHAUSTED, marker="REQUEST_LIMIT_EXCEEDED"),  # Salesforce org quota
    Rule(429, Verdict.RETRY),  # a rate limit refuses before doing anything: safe to repeat
    Rule(503, Verdict.RETRY),  # unavailable: not processed
    Rule(401, Verdict.AUTH),
    Rule(403, Verdict.AUTH),
    Rule(408, Verdict.RETRY, only_if_idempotent=True),
    Rule(range(500, 600), Verdict.RETRY, only_if_idempotent=True),  # 500, 502, 504, 524...
    Rule(range(400, 500), Verdict.PERMANENT),
)


def classify(
    outcome: requests.Response | BaseException,
    *,
    idempotent: bool = True,
    rules: Iterable[Rule] = RULES,
    now: Callable[[], float] = time.time,
) -> Classified:
    """What to do about one HTTP outcome. Pure: reads only the response or exception."""
    if isinstance(outcome, BaseException):
        return _classify_exception(outcome, idempotent)
    status = outcome.status_code
    body = _body_text(outcome)
    for rule in rules:
        if rule.matches(status, body):
            verdict = rule.verdict
            if rule.only_if_idempotent and not idempotent:
                verdict = Verdict.UNKNOWN
            reason = f"HTTP {status}" + (
                f": {body[:MAX_BODY_IN_MESSAGES]}" if body and verdict is not Verdict.SUCCESS else ""
            )
            return Classified(verdict, reason, wait_from_headers(outcome.headers, now()))
    return Classified(
        Verdict.UNKNOWN if not idempotent else Verdict.PERMANENT, f"HTTP {status}: unexpected status"
    )


def _classify_exception(error: BaseException, idempotent: bool) -> Classified:
    name = type(error).__name__
    if isinstance(error, requests.ConnectTimeout | requests.exceptions.SSLError):
        return Classified(Verdict.RETRY, f"{name}: could not connect")  # nothing was sent
    if isinstance(error, requests.ConnectionError) and _before_sending(error):
        return Classified(Verdict.RETRY, f"{name}: could not connect")
    if isinstance(
        error, requests.Timeout | requests.ConnectionError | requests.exceptions.ChunkedEncodingError
    ):
        verdict = Verdict.RETRY if idempotent else Verdict.UNKNOWN
        return Classified(verdict, f"{name}: no complete answer (timeout or dropped connection)")
    return Classified(Verdict.UNKNOWN if not idempotent else Verdict.PERMANENT, f"{name}: {error}")


def _before_sending(error: requests.ConnectionError) -> bool:
    """Connection refused or name not resolved: the request never left."""
    text = str(error)
    return any(
        marker in text for marker in ("Connection refused", "Name or service not known", "NewConnectionError")
    )


def wait_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait as the vendor says: ``Retry-After`` (seconds or HTTP date),
    ``RateLimit-Reset`` (seconds), ``X-RateLimit-Reset`` (epoch seconds, or seconds)."""
    retry_after = headers.get("Retry-After")
    if retry_after:
        if retry_after.strip().isdigit():
            return float(retry_after)
        try:
            when = email.utils.parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - now)
    for name in ("RateLimit-Reset", "X-RateLimit-Reset"):
        value = headers.get(name)
        if value:
            try:
                number = float(value)
            except ValueError:
                continue
            return max(0.0, number - now) if number > EPOCH_THRESHOLD else number
    return None


def _body_text(response: requests.Response) -> str:
    try:
        return response.text.strip()
    except (UnicodeDecodeError, RuntimeError):
        return ""


# --- rate limiting -------------------------------------------------------------------------
class RateLimiter:
    """A token bucket: ``rate`` requests per second on average, at most ``burst`` at once;
    :meth:`pause` stops everyone until a vendor-requested wait is over. Thread-safe."""

    def __init__(
        self,
        rate: float | None,
        burst: int = 1,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = max(1, burst)
        self._tokens = float(self._burst)
        self._sleep = sleep
        self._clock = clock
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                wait = self._paused_until - now
                if wait <= 0:
                    if self._rate is None:
                        return
                    self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
                    self._updated = now
                    if self._tokens >= 1 - 1e-9:  # tolerance: float steps must not spin forever
                        self._tokens = max(0.0, self._tokens - 1)
                        return
                    wait = (1 - self._tokens) / self._rate
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)


def window_rate(per_second: float, per_minute: float, share: float = 1.0) -> tuple[float, int]:
    """A token bucket (rate, burst) that never exceeds a vendor's two fixed windows, e.g.
    Klaviyo's "burst 10/s, steady 150/m", scaled by ``share`` of the quota."""
    return bucket_for_windows({1.0: per_second, 60.0: per_minute}, share)


def bucket_for_windows(windows: Mapping[float, float], share: float = 1.0) -> tuple[float, int]:
    """A token bucket (rate, burst) that stays under every fixed window ``{seconds: allowed}``
    (HubSpot: ``{10: 190}``), scaled by ``share`` of the quota.

    In any window of ``w`` seconds a bucket lets through at most ``burst + rate * w``
    requests, so the rate sits a little under the slowest window's average and the burst
    takes what every window leaves over.
    """
    scaled = {seconds: allowed * share for seconds, allowed in windows.items()}
    rate = min(allowed / seconds for seconds, allowed in scaled.items()) * 0.95
    burst = int(min(allowed - rate * seconds for seconds, allowed in scaled.items()))
    return rate, max(1, burst)


# --- errors --------------------------------------------------------------------------------
class ApiError(Exception):
    """A call failed; the message is safe to print (credentials masked)."""

    def __init__(self, message: str, classified: Classified) -> None:
        super().__init__(message)
        self.classified = classified


class AuthError(ApiError):
    """Credentials refused (401/403)."""


class QuotaExhausted(ApiError):
    """A daily or org-wide quota is used up; retrying now would only burn more of it."""


class PermanentError(ApiError):
    """The vendor refused the request itself (4xx): repeating it cannot help."""


class RetriesExhausted(ApiError):
    """Still failing after every retry the policy allows: the vendor is down for now."""


class UnknownOutcome(ApiError):
    """A non-idempotent call got no usable answer: it may have happened. Not retried."""


_ERRORS: Final = {
    Verdict.AUTH: AuthError,
    Verdict.QUOTA_EXHAUSTED: QuotaExhausted,
    Verdict.PERMANENT: PermanentError,
    Verdict.UNKNOWN: UnknownOutcome,
}


class _Retry(Exception):
    def __init__(self, classified: Classified) -> None:
        self.classified = classified


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    max_seconds: float = 300.0  # total time a call may spend waiting and retrying
    backoff_base: float = 0.5  # exponential backoff with full jitter: base * 2**n, capped below
    backoff_max: float = 30.0


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


@dataclass(frozen=True)
class _Body:
    data: str
    content_type: str

    @staticmethod
    def of(json_body: Any, form: Mapping[str, str] | None, content_type: str) -> _Body | None:
        if form is not None:
            return _Body(urllib.parse.urlencode(form), "application/x-www-form-urlencoded")
        return None if json_body is None else _Body(json.dumps(json_body), content_type)


def user_agent() -> str:
    try:
        version = importlib.metadata.version("personasync")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    return f"personasync/{version}"


def _credential_values(headers: Mapping[str, str], auth: tuple[str, str] | None) -> list[str]:
    """The strings a credential travels as, so the redactor masks them wherever a vendor
    echoes them back (an error body quoting our request): the values of credential headers
    and their token part, and for Basic auth the password and the encoded header."""
    values = []
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "authorization" or "key" in lowered or "token" in lowered:
            values += [value, value.rpartition(" ")[2]]
    if auth is not None:
        encoded = base64.b64encode(f"{auth[0]}:{auth[1]}".encode("latin-1")).decode()
        values += [auth[1], encoded]
    return values


class ApiClient:
    """A vendor API at ``base_url``: pooled, rate limited, retried, redacted."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        requests_per_second: float | None = None,
        burst: int = 1,
        concurrency: int = 1,
        policy: RetryPolicy = RetryPolicy(),
        rules: Iterable[Rule] = RULES,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
        auth: tuple[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._content_type = content_type
        self._session = session or requests.Session()
        self._session.auth = auth
        self._session.headers.update(
            {"User-Agent": user_agent(), "Accept": "application/json", **(headers or {})}
        )
        self._secrets: list[str] = []
        self._add_secrets([*secrets, *_credential_values(headers or {}, auth)])
        self._timeout = timeout
        self._limiter = RateLimiter(requests_per_second, burst, sleep=sleep, clock=clock)
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self._policy = policy
        self._rules = tuple(rules)
        self._sleep = sleep
        self._clock = clock
        self.requests_sent = 0

    def authorize(self, headers: Mapping[str, str], secrets: Iterable[str]) -> None:
        """Replace credential headers (a refreshed OAuth token); their values join the redactor."""
        self._session.headers.update(headers)
        self._add_secrets([*secrets, *_credential_values(headers, None)])

    def _add_secrets(self, secrets: Iterable[str]) -> None:
        """Longest first, so a header value is masked whole before the key inside it."""
        self._secrets = sorted({*self._secrets, *(s for s in secrets if len(s) >= 4)}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        form: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send one call, retrying as the policy allows; the successful response, or an
        :class:`ApiError` subclass saying why not. ``form`` sends a form-encoded body
        (an OAuth token request) instead of ``json_body``."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"
        if _origin(url) != _origin(self.base_url):  # e.g. a pagination link: never send credentials elsewhere
            refused = Classified(Verdict.PERMANENT, "a link to another host")
            raise PermanentError(self.redact(f"refusing to send credentials to {_origin(url)}"), refused)
        retrying = Retrying(
            stop=stop_after_attempt(self._policy.max_attempts) | stop_after_delay(self._policy.max_seconds),
            wait=self._wait,
            retry=retry_if_exception_type(_Retry),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            body = _Body.of(json_body, form, self._content_type)
            return retrying(self._send, method, url, body, params, headers, idempotent)
        except _Retry as last:
            message = self.redact(f"{method} {path}: still failing after retries: {last.classified.reason}")
            raise RetriesExhausted(message, last.classified) from None

    def _send(
        self,
        method: str,
        url: str,
        body: _Body | None,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        idempotent: bool,
    ) -> requests.Response:
        self._limiter.acquire()
        with self._slots:
            self.requests_sent += 1
            try:
                outcome: requests.Response | BaseException = self._session.request(
                    method,
                    url,
                    data=None if body is None else body.data,
                    params=params,
                    headers={"Content-Type": body.content_type, **(headers or {})} if body else headers,
                    timeout=self._timeout,
                )
            except requests.RequestException as error:
                outcome = error
        classified = classify(outcome, idempotent=idempotent, rules=self._rules, now=time.time)
        if classified.verdict is Verdict.SUCCESS:
            assert isinstance(outcome, requests.Response)
            return outcome
        if classified.verdict is Verdict.RETRY:
            if classified.wait is not None:
                if classified.wait > self._policy.max_seconds:
                    message = f"{url.removeprefix(self.base_url)}: asked to wait {classified.wait:.0f} s"
                    raise RetriesExhausted(
                        self.redact(f"{message}, longer than allowed; {classified.reason}"), classified
                    )
                self._limiter.pause(classified.wait)
            raise _Retry(classified)
        path = url.removeprefix(self.base_url)
        raise _ERRORS[classified.verdict](self.redact(f"{path}: {classified.reason}"), classified)

    def _wait(self, state: RetryCallState) -> float:
        """The vendor's requested wait when it gave one, else exponential backoff with jitter."""
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, _Retry) and error.classified.wait is not None:
            return error.classified.wait
        ceiling = min(self._policy.backoff_max, self._policy.backoff_base * 2 ** (state.attempt_number - 1))
        return random.uniform(0, ceiling)
