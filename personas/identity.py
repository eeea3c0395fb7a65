"""Customer identifiers: emails trimmed, lower-cased and syntax-checked; phones in E.164.

The libraries are the source of truth (``email-validator`` without DNS, ``phonenumbers``
with its metadata), but they are slow (~50 µs an email, ~65 µs a phone), so each distinct
raw value pays for them once:

- Email: an ASCII address whose local part is a plain dot-atom is valid exactly when its
  domain is, so the domain verdict is asked of the library once and remembered in memory
  (a test checks this fast path against the library on generated addresses). Anything
  else (quoted or non-ASCII local parts, odd shapes) goes to the library.
- Phone: answers are kept in a persistent :class:`IdentityCache` (the state store), looked
  up a batch at a time, under a namespace naming the region and the library version, so
  a metadata update re-checks every number. Numbers never seen before can be spread
  over worker processes.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Final, Protocol

import email_validator
import phonenumbers

from personas.model import INVALID_EMAIL, INVALID_PHONE, MISSING_EMAIL, MISSING_PHONE

Normalised = tuple[str | None, str | None]
"""``(value, None)`` when usable, ``(None, reason)`` when missing or invalid."""

_INVALID: Final = ""  # how the cache stores "not a usable identifier"
_MISSING: Final[Normalised] = (None, MISSING_PHONE)
_INVALID_ANSWER: Final[Normalised] = (None, INVALID_PHONE)
_ATEXT: Final = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
# An address whose local part is a dot-atom: text matches exactly when what comes before its
# last "@" is a dot-atom (a dot-atom has no "@", so that "@" is the only one).
_DOT_ATOM_ADDRESS: Final = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@([^@]*)\Z")
_MAX_EMAIL_LENGTH: Final = 254
_MAX_LOCAL_LENGTH: Final = 64
_MAX_REMEMBERED_DOMAINS: Final = 100_000
_PHONE_REGIONS: Final = frozenset(phonenumbers.SUPPORTED_REGIONS)
_NON_DIGITS: Final = re.compile(r"[^0-9]+")
_NON_DIGIT_BYTES: Final = bytes(b for b in range(256) if not 0x30 <= b <= 0x39)
_NON_DIGIT_LINE_BYTES: Final = _NON_DIGIT_BYTES.replace(b"\n", b"")  # all but the digits and "\n"


class IdentityCache(Protocol):
    """A persistent map from raw identifier to normalised value ('' = invalid), by namespace."""

    def lookup(self, namespace: str, raws: Collection[str]) -> dict[str, str]: ...

    def store(self, namespace: str, normalised: Mapping[str, str]) -> None: ...


def email_with_library(text: str) -> Normalised:
    """``text`` (already trimmed and lower-cased) checked by email-validator, no DNS."""
    try:
        result = email_validator.validate_email(text, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return None, INVALID_EMAIL
    return result.normalized.lower(), None


def phone_with_library(raw: str, region: str) -> Normalised:
    """``raw`` parsed with ``region`` as the default, checked valid, formatted as E.164."""
    text = raw.strip()
    if not text:
        return None, MISSING_PHONE
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None, INVALID_PHONE
    if not phonenumbers.is_valid_number(number):
        return None, INVALID_PHONE
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


class EmailNormaliser:
    """Trim, lower-case and check emails, asking the library once per domain where that is exact."""

    def __init__(self) -> None:
        self._domains: dict[str, bool] = {}

    def __call__(self, raw: str | None) -> Normalised:
        if raw is None:
            return None, MISSING_EMAIL
        text = raw.strip().lower()
        if not text:
            return None, MISSING_EMAIL
        address = _DOT_ATOM_ADDRESS.match(text)
        if (
            address is not None
            and text.isascii()
            and len(text) <= _MAX_EMAIL_LENGTH
            and address.start(1) <= _MAX_LOCAL_LENGTH + 1  # the local part and its "@"
            and "xn--" not in (domain := address.group(1))  # the library turns punycode back into Unicode
        ):
            known = self._domains.get(domain)
            if known is None:
                known = self._domain_ok(domain)
            return (text, None) if known else (None, INVALID_EMAIL)
        return email_with_library(text)

    def _domain_ok(self, domain: str) -> bool:
        known = self._domains.get(domain)
        if known is None:
            if len(self._domains) >= _MAX_REMEMBERED_DOMAINS:
                self._domains.clear()  # bounded memory; the common domains come straight back
            known = email_with_library(f"a@{domain}")[0] is not None
            self._domains[domain] = known
        return known


def phone_namespace(region: str) -> str:
    """Cache namespace for phones: answers depend on the default region and the metadata."""
    return f"phone:{region}:phonenumbers-{phonenumbers.__version__}"


def phone_digits_many(raws: Sequence[str]) -> list[str]:
    """``[phone_digits(raw) for raw in raws]``, a few times faster: ASCII numbers are
    stripped of their non-digits all at once, joined by line breaks."""
    joined = "\n".join(raws)
    if joined.isascii() and joined.count("\n") == len(raws) - 1:  # no line break of their own
        return [
            "#" + digits
            for digits in joined.encode().translate(None, _NON_DIGIT_LINE_BYTES).decode().split("\n")
        ]
    return [phone_digits(raw) for raw in raws]


def phone_digits(raw: str) -> str:
    """The digits typed, as a second suppression key that needs no country (see resolve.py)."""
    if raw.isascii():  # the same, at half the cost
        return "#" + raw.encode().translate(None, _NON_DIGIT_BYTES).decode()
    return "#" + _NON_DIGITS.sub("", raw)


def region_of(country: object, default: str) -> str:
    """A customer's phone region: their country code when it is one phonenumbers knows."""
    if isinstance(country, str):
        code = country.strip().upper()
        if code in _PHONE_REGIONS:
            return code
    return default


PhoneRequest = tuple[str | None, str]
"""A raw phone and the region to read it in."""

PARALLEL_THRESHOLD: Final = 2_000  # fewer new numbers than this are not worth shipping to workers


def normalise_phones(requests: list[tuple[str, str]]) -> list[Normalised]:
    """Library answers for many (raw, region) pairs; runs in worker processes on a first run."""
    return [phone_with_library(raw, region) for raw, region in requests]


class PhoneNormaliser:
    """E.164 phones, a batch at a time, through the persistent cache.

    ``executor`` (a pool of ``workers`` processes) spreads numbers the cache has never seen
    over the CPU cores: a first run over a million customers is dominated by the phone library.
    """

    def __init__(
        self, region: str, cache: IdentityCache, executor: Executor | None = None, workers: int = 1
    ) -> None:
        self.region = region
        self._cache = cache
        self._executor = executor
        self._workers = max(1, workers)
        self.library_calls = 0

    def batch(self, requests: Iterable[PhoneRequest]) -> dict[PhoneRequest, Normalised]:
        """The normalised value of each distinct (raw phone, region) in ``requests``."""
        answers: dict[PhoneRequest, Normalised] = {}
        by_region: dict[str, set[str]] = {}
        for request in requests:
            raw, region = request
            if raw is None or not raw.strip():
                answers[request] = _MISSING
            else:
                raws = by_region.get(region)
                if raws is None:
                    raws = by_region[region] = set()
                raws.add(raw)
        misses: list[tuple[str, str]] = []
        for region, raws in by_region.items():
            cached = self._cache.lookup(phone_namespace(region), raws)
            hits = 0
            for raw, stored in cached.items():
                if raw in raws:  # a cache answers only what it is asked; checked all the same
                    answers[(raw, region)] = (stored, None) if stored != _INVALID else _INVALID_ANSWER
                    hits += 1
            if hits < len(raws):
                misses.extend((raw, region) for raw in raws if raw not in cached)
        fresh: dict[str, dict[str, str]] = {}
        for (raw, region), (value, reason) in zip(misses, self._library(misses), strict=True):
            answers[(raw, region)] = (value, reason)
            fresh.setdefault(region, {})[raw] = value or _INVALID
        for region, normalised in fresh.items():
            self._cache.store(phone_namespace(region), normalised)
        return answers

    def _library(self, misses: list[tuple[str, str]]) -> list[Normalised]:
        self.library_calls += len(misses)
        if self._executor is None or len(misses) < PARALLEL_THRESHOLD:
            return normalise_phones(misses)
        size = -(-len(misses) // self._workers)
        parts = [misses[i : i + size] for i in range(0, len(misses), size)]
        return [answer for part in self._executor.map(normalise_phones, parts) for answer in part]
