"""Seeded transport faults in front of any vendor model: a hostile network and a vendor
having a bad day, the same way for every vendor.

:meth:`Chaos.install` wraps an :class:`~tests.emulators.server.Emulator`'s handler. For each
request, drawn from a ``random.Random(seed)`` (so a failing run can be replayed):

- ``unavailable``: a 503 before the model sees the request (nothing done; safe to repeat);
- ``lost_answers``: the model does the work, then the connection closes without an answer
  (the client cannot tell whether it happened: the unknown outcome);
- ``drops``: the connection closes before the model sees the request (nothing done, but the
  client cannot tell that either). Paths matching ``no_drops`` are spared: for a call whose
  repetition the person notices (an Attentive unsubscribe texts them) we choose, knowingly,
  to count an unknown outcome as sent, which a drop before the work would make a miss;
- ``slow``: the model does the work, the answer comes ``slow_seconds`` later (past the
  client's read timeout); at most ``max_slow`` times, to bound a test's run time;
- ``storm_every`` / ``storm_length``: a 429 storm, ``storm_length`` requests in a row
  refused in the vendor's own 429 shape after every ``storm_every`` requests, with a
  ``Retry-After`` of 1 second or, with ``retry_after=False``, none.

Counters of what was injected are in :attr:`Chaos.injected`.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

from tests.emulators.server import Emulator, Handle, Reply


@dataclass
class Chaos:
    seed: int
    unavailable: float = 0.0
    lost_answers: float = 0.0
    drops: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 2.5
    max_slow: int = 2
    storm_every: int = 0
    storm_length: int = 0
    retry_after: bool = True
    no_drops: str = r"(?!)"  # paths spared from drops (matches nothing by default)
    injected: Counter[str] = field(default_factory=Counter)

    def install(self, emulator: Emulator) -> None:
        """Put the faults in front of the emulator's model (idempotent per emulator)."""
        emulator.handle = self.wrap(emulator.handle, emulator)

    def wrap(self, handle: Handle, emulator: Emulator) -> Handle:
        rng = random.Random(self.seed)
        seen = 0
        spared = re.compile(self.no_drops)

        def faulty(method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
            nonlocal seen
            seen += 1
            if self.storm_every and seen % (self.storm_every + self.storm_length) >= self.storm_every:
                self.injected["429"] += 1
                status, reply_headers, text = emulator.throttled_answer("storm", 1.0)
                if not self.retry_after:
                    reply_headers = {k: v for k, v in reply_headers.items() if k.lower() != "retry-after"}
                return status, reply_headers, text
            draw = rng.random()
            if draw < self.unavailable:
                self.injected["503"] += 1
                return 503, {"Content-Type": "application/json"}, '{"message": "Service Unavailable"}'
            draw -= self.unavailable
            if draw < self.drops and not spared.search(url):
                self.injected["drop"] += 1
                raise requests.ConnectionError("connection reset before the request was read")
            draw -= self.drops
            reply = handle(method, url, headers, body)
            if draw < self.lost_answers:
                self.injected["lost answer"] += 1
                raise requests.ReadTimeout("the answer was lost")
            draw -= self.lost_answers
            if draw < self.slow and self.injected["slow"] < self.max_slow:
                self.injected["slow"] += 1
                time.sleep(self.slow_seconds)
            return reply

        return faulty
