"""A stateful fake of the parts of Attentive's API personasync uses.

:class:`AttentiveModel` keeps subscribers (by E.164 phone), their custom attributes, their
marketing-text subscription and **every text Attentive would send them** (an unsubscribe
call texts the person each time: the thing personasync must never do twice). Like the
Klaviyo model it answers one request at a time, transport-independent;
:meth:`AttentiveModel.attach` serves it through ``responses``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import responses

Reply = tuple[int, dict[str, str], str]
E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass
class Subscriber:
    phone: str
    attributes: dict[str, str] = field(default_factory=dict)
    subscribed: bool = True  # marketing texts
    texts: list[str] = field(default_factory=list)  # messages Attentive sent the person


@dataclass
class Faults:
    throttle: int = 0  # answer this many calls with 429
    errors_503: int = 0  # 503 before doing anything
    unsubscribe_500: int = 0  # unsubscribe (and text the person), then answer 500
    unsubscribe_timeouts: int = 0  # unsubscribe (and text the person), then never answer
    reject: dict[str, str] = field(default_factory=dict)  # phone -> 400 message


class AttentiveModel:
    def __init__(self, token: str) -> None:
        self.token = token
        self.subscribers: dict[str, Subscriber] = {}
        self.faults = Faults()
        self.calls: list[tuple[str, str]] = []
        self.violations: list[str] = []
        self._routes: list[tuple[str, str, Callable[[dict[str, Any]], Reply]]] = [
            ("GET", "/v1/me", self._me),
            ("POST", "/v1/attributes/custom", self._custom_attributes),
            ("POST", "/v1/subscriptions/unsubscribe", self._unsubscribe),
            ("POST", "/v1/subscriptions", self._subscribe),
        ]

    # --- what tests look at ----------------------------------------------------------------
    def add(self, phone: str, subscribed: bool = True) -> Subscriber:
        self.subscribers[phone] = Subscriber(phone, subscribed=subscribed)
        return self.subscribers[phone]

    def tagged(self, true_value: str = "true") -> dict[str, frozenset[str]]:
        return {
            phone: frozenset(k for k, v in s.attributes.items() if v == true_value)
            for phone, s in self.subscribers.items()
            if true_value in s.attributes.values()
        }

    def unsubscribed(self) -> set[str]:
        return {phone for phone, s in self.subscribers.items() if not s.subscribed}

    def unsubscribe_texts(self) -> dict[str, int]:
        return {p: s.texts.count("unsubscribed") for p, s in self.subscribers.items() if s.texts}

    def writes(self) -> int:
        return sum(1 for method, _ in self.calls if method != "GET")

    # --- transport -------------------------------------------------------------------------
    def attach(
        self, rsps: responses.RequestsMock, base_url: str = "https://api.attentivemobile.com/v1"
    ) -> None:
        def callback(request: requests.PreparedRequest) -> Reply:
            raw = request.body or b""
            return self.handle(
                str(request.method),
                str(request.url),
                dict(request.headers),
                raw.encode() if isinstance(raw, str) else raw,
            )

        for method in ("GET", "POST"):
            rsps.add_callback(method, re.compile(re.escape(base_url) + r"/.*"), callback)

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
        path = urlsplit(url).path
        self.calls.append((method, path))
        if headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "Unauthorized")
        faults = self.faults
        if faults.throttle:
            faults.throttle -= 1
            status, base, text = _error(429, "Too Many Requests")
            return status, {**base, "x-ratelimit-limit": "5", "x-ratelimit-remaining": "0"}, text
        if faults.errors_503:
            faults.errors_503 -= 1
            return _error(503, "Service Unavailable")
        for route_method, route_path, handler in self._routes:
            if method == route_method and path.rstrip("/") == route_path:
                reply = handler(json.loads(body) if body else {})
                if route_path.endswith("/unsubscribe") and reply[0] == 202:
                    if faults.unsubscribe_500:
                        faults.unsubscribe_500 -= 1
                        return _error(500, "Internal Server Error")
                    if faults.unsubscribe_timeouts:
                        faults.unsubscribe_timeouts -= 1
                        raise requests.ReadTimeout("read timed out")
                return reply
        return _error(404, "Not Found")

    def _me(self, document: dict[str, Any]) -> Reply:
        return 200, {"Content-Type": "application/json"}, json.dumps({"companyName": "Shop"})

    def _phone(self, document: dict[str, Any]) -> str | Reply:
        phone = (document.get("user") or {}).get("phone")
        if not isinstance(phone, str) or not E164.match(phone):
            return _error(400, f"user.phone must be E.164: {phone!r}")
        if phone in self.faults.reject:
            return _error(400, self.faults.reject[phone])
        return phone

    def _custom_attributes(self, document: dict[str, Any]) -> Reply:
        phone = self._phone(document)
        if isinstance(phone, tuple):
            return phone
        properties = document.get("properties")
        if not isinstance(properties, dict) or not properties:
            return _error(400, "properties is required")
        if any(isinstance(v, dict | list) for v in properties.values()):
            return _error(400, "Properties cannot contain objects or arrays")
        subscriber = self.subscribers.get(phone) or self.add(phone, subscribed=False)
        subscriber.attributes.update({str(k): str(v) for k, v in properties.items()})
        return 200, {}, ""

    def _unsubscribe(self, document: dict[str, Any]) -> Reply:
        phone = self._phone(document)
        if isinstance(phone, tuple):
            return phone
        subscriber = self.subscribers.get(phone) or self.add(phone)
        subscriber.subscribed = False
        subscriber.texts.append("unsubscribed")  # Attentive texts the person on every call
        return 202, {}, ""

    def _subscribe(self, document: dict[str, Any]) -> Reply:
        self.violations.append("subscribe endpoint called")
        return 202, {}, ""


def _error(status: int, message: str) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps({"message": message})
