"""Keep credentials out of everything we print, log or store.

Config values that are secrets (``SecretStr`` fields, and the password inside database
URLs) are collected once; :class:`Redactor` masks them in any text. Output paths run
through it as a last line of defence, on top of never formatting secrets in the first place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from pydantic import BaseModel, SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MASK = "***"
_MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words


_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*:)[^@\s]+@")


def mask_url_passwords(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``, wherever it appears.

    Used where the secrets are not known, e.g. when the config itself failed to load."""
    return _URL_PASSWORD.sub(rf"\1{MASK}@", text)


class Redactor:
    """Masks the given secrets, and any password inside a URL, in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        unique = {s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}
        self._secrets = sorted(unique, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return mask_url_passwords(text)


def secrets_in(model: BaseModel) -> list[str]:
    """Every secret value held anywhere in ``model``."""
    return list(_walk(model))


def _walk(value: object) -> Iterator[str]:
    if isinstance(value, SecretStr):
        raw = value.get_secret_value()
        try:
            password = make_url(raw).password  # a database URL: only its password is secret
        except (ArgumentError, ValueError):
            yield raw
        else:
            if password:
                yield str(password)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item)
