"""Rows of the resolver query -> one :class:`Assignment` per customer, streamed.

The caller runs :func:`personas.query.build_resolver_query` in the warehouse and passes the
rows in (ordered by key); this module does no I/O of its own. Memory stays bounded: rows
are handled a chunk at a time, and suppression lists matched on email or phone are kept
as sorted 64-bit hashes (16 bytes per listed identifier).

A phone suppression matches on the E.164 number and also on the exact digits typed, so
an opt-out recorded in national format is honoured even when its country cannot be told.

Problems that must stop a run (duplicate or NULL keys; duplicate emails when
``on_duplicate_email = "error"``) are raised as :class:`ResolveError` once the stream
ends, with a count and examples. Consumers must therefore finish the stream before
acting on any assignment; the sync engine plans the whole run before sending anything.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Final, TypeVar, cast

from personas.config import ResolverSettings
from personas.eligibility import consent_token, granted_tokens, holdout_test
from personas.identity import (
    EmailNormaliser,
    PhoneNormaliser,
    PhoneRequest,
    phone_digits,
    phone_digits_many,
    region_of,
)
from personas.model import (
    CHANNELS,
    CONSENT_NOT_CONFIGURED,
    DUPLICATE_EMAIL,
    NEGATIVE_PERSONA_PREFIX,
    NO_CONSENT,
    Assignment,
    Channel,
    ChannelStatus,
)
from personas.query import EMAIL, KEY, PHONE, PHONE_COUNTRY, ResolverQuery

T = TypeVar("T")
CHUNK_SIZE: Final = 5_000
MAX_EXAMPLES: Final = 5
CONSENT_REQUIRED: Final[frozenset[Channel]] = frozenset({"email", "sms"})  # CRM consent is optional


class IdentifierIndex:
    """Normalised identifiers -> bitmask of the suppression sources listing them.

    Stored as sorted 64-bit hashes with a parallel array of masks. A hash collision could
    only make a customer look suppressed when they are not (the safe direction), and with
    64-bit hashes it is vanishingly rare. A bitmap of 16 bits per listed identifier, one bit
    set per hash, answers most lookups of identifiers listed nowhere (nearly all of them)
    without the binary search; a set bit only sends the lookup on to the search.
    """

    def __init__(self, entries: Iterable[tuple[str, int]]) -> None:
        """``entries``: (identifier, bit of a source listing it)."""
        masks: dict[int, int] = {}
        for value, bit in entries:
            digest = hash(value)
            masks[digest] = masks.get(digest, 0) | bit
        ordered = sorted(masks.items())
        self._fill(array("q", (digest for digest, _ in ordered)), array("Q", (mask for _, mask in ordered)))

    @classmethod
    def from_hashes(cls, hashes: array[int], masks: array[int]) -> IdentifierIndex:
        """From each identifier's ``hash()`` (ascending, no repeats) and its sources'
        bitmask: a caller that hashed the identifiers as it read them need not hold them."""
        index = cls.__new__(cls)
        index._fill(hashes, masks)
        return index

    def _fill(self, hashes: array[int], masks: array[int]) -> None:
        self._hashes, self._masks = hashes, masks
        bits = 1 << max(6, (len(hashes) * 16).bit_length())
        self._slot = bits - 1
        bitmap = bytearray(bits // 8)
        for digest in hashes:
            slot = digest & self._slot
            bitmap[slot >> 3] |= 1 << (slot & 7)
        self._bitmap = bytes(bitmap)

    def mask(self, value: str) -> int:
        wanted = hash(value)
        slot = wanted & self._slot
        if not (self._bitmap[slot >> 3] >> (slot & 7)) & 1:
            return 0
        i = bisect.bisect_left(self._hashes, wanted)
        return self._masks[i] if i < len(self._hashes) and self._hashes[i] == wanted else 0

    def __len__(self) -> int:
        return len(self._hashes)


def suppression_entries(
    raw_values: Iterable[object],
    bit: int,
    match_on: str,
    emails: EmailNormaliser,
    phones: PhoneNormaliser,
) -> Iterator[tuple[str, int]]:
    """``(identifier, bit)`` for a suppression source's raw values, normalised like customers'."""
    for chunk in _chunks(raw_values, CHUNK_SIZE):
        texts = [None if value is None else str(value) for value in chunk]
        if match_on == "email":
            for value, _ in map(emails, texts):
                if value is not None:
                    yield value, bit
            continue
        answers = phones.batch((text, phones.region) for text in texts)
        for text in texts:
            if text is None:
                continue
            value, _ = answers[(text, phones.region)]
            if value is not None:
                yield value, bit
            yield phone_digits(text), bit


class ResolveError(Exception):
    """The source cannot be resolved safely; nothing may be sent."""


@dataclass
class ResolveCounts:
    """Counts the resolver keeps while streaming, for the preview and for errors."""

    duplicate_keys: int = 0
    duplicate_key_examples: list[str] = field(default_factory=list)
    null_keys: int = 0
    out_of_order: int = 0
    duplicate_emails: int = 0
    duplicate_email_examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Outcome:
    channels: Mapping[Channel, ChannelStatus]
    tags: Mapping[Channel, tuple[str, ...]]


# What decides a customer's channels: suppression mask, negative personas, consent per
# channel (bit i: the i-th configured consent column grants it), email problem, phone
# problem, tagged personas. Few distinct values per run.
_Signature = tuple[int, tuple[str, ...], int, str | None, str | None, tuple[str, ...]]

HoldoutTest = Callable[[str], bool]


@dataclass(frozen=True)
class _Matched:
    """What one pattern of a row's persona, key-suppression and duplicate-email flags decides
    (few patterns per run, so each is worked out once)."""

    key_mask: int  # suppression sources matched on the key
    negative: tuple[str, ...]
    duplicate_email: bool  # the query found a lower key with the same email
    personas: tuple[str, ...]  # the personas tagged when no holdout can apply
    candidates: tuple[tuple[str, HoldoutTest | None], ...]  # or: each matched persona and its holdout


_MAX_PATTERNS: Final = 10_000  # bounded memory whatever the flag values; they are booleans
_MAX_CONSENT_VALUES: Final = 10_000
# Consent values remembered by value: types whose equal values always have equal tokens
# (not Decimal: 1.5 == Decimal("1.50"), yet their tokens differ; not datetime: time zones).
_CONSENT_MEMO_TYPES: Final[frozenset[type]] = frozenset({str, int, bool, float, bytes, type(None)})


class _UnfrozenAssignment:
    """An :class:`Assignment` under construction: the same slots, in the same order, so that
    once they are set the object can become an ``Assignment`` (``__class__`` assignment is
    allowed between classes of the same layout), without the frozen dataclass's
    ``__init__``, which sets each field through ``object.__setattr__`` at four times the cost."""

    # Assignment's own order: the layouts must match.
    __slots__ = ("key", "email", "phone", "personas", "holdouts", "negative", "channels", "tags")  # noqa: RUF023

    def __init__(
        self,
        key: str,
        email: str | None,
        phone: str | None,
        personas: tuple[str, ...],
        holdouts: tuple[str, ...],
        negative: tuple[str, ...],
        channels: Mapping[Channel, ChannelStatus],
        tags: Mapping[Channel, tuple[str, ...]],
    ) -> None:
        self.key = key
        self.email = email
        self.phone = phone
        self.personas = personas
        self.holdouts = holdouts
        self.negative = negative
        self.channels = channels
        self.tags = tags
        self.__class__ = Assignment  # type: ignore[assignment]


def _assignment_factory() -> Callable[..., Assignment]:
    """``Assignment(...)`` with positional arguments in field order, a microsecond faster per
    customer (:class:`_UnfrozenAssignment`); the constructor itself should ``Assignment`` ever
    stop being a plain slotted dataclass with these fields."""
    names = tuple(f.name for f in fields(Assignment))
    if getattr(Assignment, "__slots__", None) != names or names != _UnfrozenAssignment.__slots__:
        return Assignment
    if hasattr(Assignment, "__post_init__"):
        return Assignment
    made = cast(Callable[..., Assignment], _UnfrozenAssignment)
    channels: dict[Channel, ChannelStatus] = {"email": ChannelStatus(True)}
    tags: dict[Channel, tuple[str, ...]] = {"email": ("a",)}
    sample = ("k", "e", "p", ("a",), ("b",), ("c",), channels, tags)
    try:
        probe = made(*sample)
    except TypeError:  # a layout __class__ assignment refuses
        return Assignment
    return made if type(probe) is Assignment and probe == Assignment(*sample) else Assignment


_make_assignment: Final = _assignment_factory()


def _getter(indexes: Sequence[int]) -> Callable[[Sequence[object]], tuple[object, ...]]:
    """A function of a row giving the tuple of its values at ``indexes``."""
    if len(indexes) >= 2:
        return operator.itemgetter(*indexes)
    if len(indexes) == 1:
        (only,) = indexes
        return lambda row: (row[only],)
    return lambda row: ()


class Resolver:
    """Turns resolver-query rows into assignments. One instance per run."""

    def __init__(
        self,
        settings: ResolverSettings,
        query: ResolverQuery,
        phones: PhoneNormaliser,
        listed: Mapping[str, IdentifierIndex],
        emails: EmailNormaliser | None = None,
        duplicate_emails: frozenset[str] = frozenset(),
    ) -> None:
        """``listed`` maps "email" / "phone" to the index of suppression sources matched on it,
        each source flagged by bit ``1 << position in the config``. ``duplicate_emails`` are
        keys whose email another customer has once normalised, beyond what the query marks
        (:mod:`personas.duplicates`)."""
        self._settings = settings
        self._query = query
        self._phones = phones
        self._emails = emails or EmailNormaliser()
        self._duplicate_emails = duplicate_emails
        self._email_index = listed.get("email")
        self._phone_index = listed.get("phone")
        salt = settings.assignment.holdout_salt
        self._first_match = settings.assignment.mode == "first_match"
        self._consent_columns = [
            (
                channel,
                query.consent_index[channel],
                granted_tokens(getattr(settings.consent, channel).granted_values),
            )
            for channel in CHANNELS
            if channel in query.consent_index
        ]
        # Per consent column: its bit in the signature, its index, its granted tokens, and
        # what each value seen means, by the value's exact type (True == 1, but "true" != "1").
        self._consent = [
            (1 << i, index, granted, dict[type, dict[object, bool]]())
            for i, (_, index, granted) in enumerate(self._consent_columns)
        ]
        self._key_flags = [(1 << i, index) for i, index in query.key_suppression_index.items()]
        self._personas = [
            (p.name, p.negative, holdout_test(salt, p.name, p.holdout_percent)) for p in settings.personas
        ]
        flag_indexes = [*query.persona_index, *(index for _, index in self._key_flags)]
        if query.duplicate_email_index is not None:
            flag_indexes.append(query.duplicate_email_index)
        self._flags = _getter(flag_indexes)
        self._patterns: dict[tuple[object, ...], _Matched] = {}
        self._outcomes: dict[_Signature, _Outcome] = {}
        self.counts = ResolveCounts()

    def assignments(self, rows: Iterable[Sequence[object]]) -> Iterator[Assignment]:
        """One assignment per row, in row order; raises :class:`ResolveError` at the end if the
        source had duplicate or NULL keys (or duplicate emails in ``error`` mode)."""
        region = self._phones.region
        regions: dict[str, str] = {}  # phone country as given -> the region its phones are read in
        previous_key: str | None = None  # not "": an empty key is a key, and may repeat
        counts = self.counts
        emails = self._emails
        email_index, phone_index = self._email_index, self._phone_index
        more_duplicates = self._duplicate_emails
        consent_columns = self._consent
        flags_of, patterns, outcomes = self._flags, self._patterns, self._outcomes
        for chunk in _chunks(rows, CHUNK_SIZE):
            requests: list[PhoneRequest] = []
            for row in chunk:
                raw_phone, country = row[PHONE], row[PHONE_COUNTRY]
                if country.__class__ is str:
                    phone_region = regions.get(country)
                    if phone_region is None:
                        phone_region = regions[country] = region_of(country, region)
                else:
                    phone_region = region_of(country, region)
                requests.append((None if raw_phone is None else str(raw_phone), phone_region))
            phones = self._phones.batch(requests)
            if phone_index is not None:  # the digits typed: a second suppression key for each phone
                typed = phone_digits_many([text or "" for text, _ in requests])
            else:
                typed = [""] * len(requests)
            for row, request, digits in zip(chunk, requests, typed, strict=True):
                raw_key = row[KEY]
                if raw_key is None:
                    counts.null_keys += 1
                    continue
                key = str(raw_key)
                if previous_key is not None and key <= previous_key:
                    if key == previous_key:
                        self._note_duplicate_key(key)
                    else:
                        counts.out_of_order += 1
                    continue
                previous_key = key

                flags = flags_of(row)
                try:
                    matched = patterns.get(flags)
                except TypeError:  # an unhashable flag value: worked out each time
                    matched = self._match(flags)
                else:
                    if matched is None:
                        matched = self._remember(flags)

                raw_email = row[EMAIL]
                email, email_problem = emails(None if raw_email is None else str(raw_email))
                if email is not None and (
                    matched.duplicate_email or (more_duplicates and key in more_duplicates)
                ):
                    email_problem = DUPLICATE_EMAIL
                    self._note_duplicate_email(key)
                phone, phone_problem = phones[request]

                mask = matched.key_mask
                if email is not None and email_index is not None:
                    mask |= email_index.mask(email)
                phone_text = request[0]
                if phone_index is not None and phone_text is not None:
                    if phone is not None:
                        mask |= phone_index.mask(phone)
                    mask |= phone_index.mask(digits)

                if matched.candidates:
                    tagged: list[str] = []
                    held: list[str] = []
                    for name, held_out in matched.candidates:
                        (held if held_out is not None and held_out(key) else tagged).append(name)
                    personas, holdouts = tuple(tagged), tuple(held)
                else:
                    personas, holdouts = matched.personas, ()

                consent = 0
                for bit, index, granted, by_type in consent_columns:
                    value = row[index]
                    known = by_type.get(value.__class__)
                    ok = known.get(value) if known is not None else None
                    if ok is None:
                        ok = _consent_granted(value, granted, by_type)
                    if ok:
                        consent |= bit

                signature = (mask, matched.negative, consent, email_problem, phone_problem, personas)
                outcome = outcomes.get(signature) or self._decide(signature)
                yield _make_assignment(
                    key, email, phone, personas, holdouts, matched.negative, outcome.channels, outcome.tags
                )
        self._raise_if_unsafe()

    def _remember(self, flags: tuple[object, ...]) -> _Matched:
        if len(self._patterns) >= _MAX_PATTERNS:
            self._patterns.clear()
        matched = self._patterns[flags] = self._match(flags)
        return matched

    def _match(self, flags: tuple[object, ...]) -> _Matched:
        """What a row's flags (:attr:`_flags`: persona, key suppression, duplicate email) decide.

        In ``first_match`` mode only the first positive persona matched counts, whether held
        out or not; a negative persona clears the positive ones."""
        persona_flags = flags[: len(self._personas)]
        key_flags = flags[len(self._personas) : len(self._personas) + len(self._key_flags)]
        negative = tuple(
            name
            for (name, is_negative, _), flag in zip(self._personas, persona_flags, strict=True)
            if flag and is_negative
        )
        candidates: list[tuple[str, HoldoutTest | None]] = []
        for (name, is_negative, held_out), flag in zip(self._personas, persona_flags, strict=True):
            if not flag or is_negative or (self._first_match and candidates):
                continue
            candidates.append((name, held_out))
        if negative:
            candidates = []
        holdouts_apply = any(held_out is not None for _, held_out in candidates)
        return _Matched(
            key_mask=sum(bit for (bit, _), flag in zip(self._key_flags, key_flags, strict=True) if flag),
            negative=negative,
            duplicate_email=self._query.duplicate_email_index is not None and bool(flags[-1]),
            personas=() if holdouts_apply else tuple(name for name, _ in candidates),
            candidates=tuple(candidates) if holdouts_apply else (),
        )

    def _decide(self, signature: _Signature) -> _Outcome:
        """Each channel's status and tags for one combination of facts (then remembered).

        Precedence: suppression sources, negative personas, consent, identifiers.
        """
        mask, negative, consent, email_problem, phone_problem, personas = signature
        granted = {channel: bool(consent >> i & 1) for i, (channel, _, _) in enumerate(self._consent_columns)}
        statuses: dict[Channel, ChannelStatus] = {}
        tags: dict[Channel, tuple[str, ...]] = {}
        for channel in CHANNELS:
            suppression = [
                s.reason
                for i, s in enumerate(self._settings.suppressions)
                if mask & (1 << i) and channel in s.channels
            ]
            suppression += [
                NEGATIVE_PERSONA_PREFIX + p.name
                for p in self._settings.personas
                if p.name in negative and channel in p.channels
            ]
            if channel not in granted:
                consent_reasons = [CONSENT_NOT_CONFIGURED] if channel in CONSENT_REQUIRED else []
            else:
                consent_reasons = [] if granted[channel] else [NO_CONSENT]
            problem = email_problem if channel == "email" else phone_problem if channel == "sms" else None
            reasons = (*suppression, *consent_reasons, *([problem] if problem else []))
            status = ChannelStatus(eligible=not reasons, reasons=reasons, suppressed=bool(suppression))
            statuses[channel] = status
            allowed = {p.name for p in self._settings.personas if channel in p.channels}
            tags[channel] = tuple(p for p in personas if p in allowed) if status.eligible else ()
        outcome = _Outcome(channels=statuses, tags=tags)
        self._outcomes[signature] = outcome
        return outcome

    def _note_duplicate_key(self, key: str) -> None:
        self.counts.duplicate_keys += 1
        if len(self.counts.duplicate_key_examples) < MAX_EXAMPLES:
            # Quoted when blank or padded, so the example can be told apart in the message.
            self.counts.duplicate_key_examples.append(key if key and key.strip() == key else repr(key))

    def _note_duplicate_email(self, key: str) -> None:
        self.counts.duplicate_emails += 1
        if len(self.counts.duplicate_email_examples) < MAX_EXAMPLES:
            self.counts.duplicate_email_examples.append(key)

    def _raise_if_unsafe(self) -> None:
        counts, key = self.counts, self._settings.source.key
        problems = []
        if counts.null_keys:
            problems.append(f"{counts.null_keys} row(s) have a NULL in the key column {key!r}")
        if counts.duplicate_keys:
            examples = ", ".join(counts.duplicate_key_examples)
            problems.append(
                f"{counts.duplicate_keys} row(s) repeat a key already seen in column {key!r} "
                f"(e.g. {examples}); the key must identify one customer"
            )
        if counts.out_of_order:
            problems.append(
                f"{counts.out_of_order} row(s) arrived out of key order; the warehouse must sort "
                "keys as text in binary order (check the database's collation)"
            )
        if self._settings.source.on_duplicate_email == "error" and counts.duplicate_emails:
            examples = ", ".join(counts.duplicate_email_examples)
            problems.append(
                f"{counts.duplicate_emails} customer(s) share an email with a lower key (e.g. keys "
                f'{examples}); on_duplicate_email = "error" stops the run'
            )
        if problems:
            raise ResolveError("; ".join(problems))


def _consent_granted(value: object, granted: frozenset[str], by_type: dict[type, dict[object, bool]]) -> bool:
    """Whether a consent value is one of the granted ones, remembered in ``by_type`` when its
    type allows (consent columns hold a handful of distinct values)."""
    ok = consent_token(value) in granted
    kind = value.__class__
    if kind in _CONSENT_MEMO_TYPES:
        known = by_type.setdefault(kind, {})
        if len(known) >= _MAX_CONSENT_VALUES:
            known.clear()
        known[value] = ok
    return ok


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
