"""The resolver as it was before its fast paths, kept to check that they change nothing.

``personas/resolve.py`` at commit 49d1c5e, line for line, less what the tests do not need
(the identifier index and suppression entries are the current ones: their own tests pin
them). ``tests/test_resolver_fast_paths.py`` compares the two over generated rows and configs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from personas.config import ResolverSettings
from personas.eligibility import consent_token, granted_tokens, in_holdout
from personas.identity import EmailNormaliser, Normalised, PhoneNormaliser, phone_digits, region_of
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
from personas.resolve import (
    CHUNK_SIZE,
    CONSENT_REQUIRED,
    MAX_EXAMPLES,
    IdentifierIndex,
    ResolveCounts,
    ResolveError,
)

T = TypeVar("T")
_UNSEEN: Final = "\x00unseen"


@dataclass(frozen=True)
class _Outcome:
    channels: Mapping[Channel, ChannelStatus]
    tags: Mapping[Channel, tuple[str, ...]]


# What decides a customer's channels: suppression mask, negative personas, consent per
# channel, email problem, phone problem, tagged personas. Few distinct values per run.
_Signature = tuple[int, tuple[str, ...], tuple[bool, ...], str | None, str | None, tuple[str, ...]]


class ReferenceResolver:
    """The resolver as it was before its fast paths (commit 49d1c5e), line for line."""

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
        self._salt = settings.assignment.holdout_salt
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
        self._key_flags = [(1 << i, index) for i, index in query.key_suppression_index.items()]
        self._personas = [
            (p.name, p.negative, p.holdout_percent, index)
            for p, index in zip(settings.personas, query.persona_index, strict=True)
        ]
        self._outcomes: dict[_Signature, _Outcome] = {}
        self._tokens: dict[tuple[type, object], str | None] = {}
        self.counts = ResolveCounts()

    def assignments(self, rows: Iterable[Sequence[object]]) -> Iterator[Assignment]:
        """One assignment per row, in row order; raises :class:`ResolveError` at the end if the
        source had duplicate or NULL keys (or duplicate emails in ``error`` mode)."""
        region = self._phones.region
        previous_key: str | None = None  # not "": an empty key is a key, and may repeat
        for chunk in _chunks(rows, CHUNK_SIZE):
            requests = [(_text(row[PHONE]), region_of(row[PHONE_COUNTRY], region)) for row in chunk]
            phones = self._phones.batch(requests)
            for row, request in zip(chunk, requests, strict=True):
                raw_key = row[KEY]
                if raw_key is None:
                    self.counts.null_keys += 1
                    continue
                key = str(raw_key)
                if previous_key is not None and key <= previous_key:
                    if key == previous_key:
                        self._note_duplicate_key(key)
                    else:
                        self.counts.out_of_order += 1
                    continue
                previous_key = key
                yield self._assign(row, key, phones[request])
        self._raise_if_unsafe()

    def _assign(self, row: Sequence[object], key: str, phone_result: Normalised) -> Assignment:
        email, email_problem = self._emails(_text(row[EMAIL]))
        duplicate_index = self._query.duplicate_email_index
        if email is not None and (
            (duplicate_index is not None and row[duplicate_index]) or key in self._duplicate_emails
        ):
            email_problem = DUPLICATE_EMAIL
            self._note_duplicate_email(key)
        phone, phone_problem = phone_result

        mask = 0
        for bit, index in self._key_flags:
            if row[index]:
                mask |= bit
        if email is not None and self._email_index is not None:
            mask |= self._email_index.mask(email)
        if self._phone_index is not None and row[PHONE] is not None:
            if phone is not None:
                mask |= self._phone_index.mask(phone)
            mask |= self._phone_index.mask(phone_digits(str(row[PHONE])))

        personas: list[str] = []
        holdouts: list[str] = []
        negative: list[str] = []
        for name, is_negative, holdout_percent, index in self._personas:
            if not row[index]:
                continue
            if is_negative:
                negative.append(name)
            elif self._first_match and (personas or holdouts):
                continue
            elif in_holdout(self._salt, name, key, holdout_percent):
                holdouts.append(name)
            else:
                personas.append(name)
        if negative:
            personas, holdouts = [], []

        consent = tuple(self._granted(row[index], granted) for _, index, granted in self._consent_columns)
        signature = (mask, tuple(negative), consent, email_problem, phone_problem, tuple(personas))
        outcome = self._outcomes.get(signature) or self._decide(signature)
        return Assignment(
            key=key,
            email=email,
            phone=phone,
            personas=tuple(personas),
            holdouts=tuple(holdouts),
            negative=tuple(negative),
            channels=outcome.channels,
            tags=outcome.tags,
        )

    def _granted(self, value: object, granted: frozenset[str]) -> bool:
        # Consent columns hold a handful of distinct values; remember each one's token.
        # Keyed with the type, as True == 1 in Python but they are different tokens.
        memo_key = (type(value), value)
        token = self._tokens.get(memo_key, _UNSEEN)
        if token is _UNSEEN:
            token = self._tokens[memo_key] = consent_token(value)
        return token in granted

    def _decide(self, signature: _Signature) -> _Outcome:
        """Each channel's status and tags for one combination of facts (then remembered).

        Precedence: suppression sources, negative personas, consent, identifiers.
        """
        mask, negative, consent, email_problem, phone_problem, personas = signature
        granted = {channel: ok for (channel, _, _), ok in zip(self._consent_columns, consent, strict=True)}
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


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
