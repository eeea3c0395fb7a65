"""Klaviyo and HubSpot emulators in a process of their own, for benchmarks that time a sync
(or a peer) as another process against them.

    python -m benchmarks.serve_emulators [--latency 0.05] [--no-limits] [--hubspot-options a,b]

Serves, on 127.0.0.1, the models of ``tests/fakes`` behind ``tests/emulators`` (the vendors'
rate limits enforced: Klaviyo's fixed windows, HubSpot's rolling 10 seconds; every answer
``--latency`` late), with the indexed models of :mod:`benchmarks.emulated`, Klaviyo jobs
taking effect when created, HubSpot's daily limit lifted (a benchmark is not one day), the
tag property (``--hubspot-options``) and the email subscription type set up. Prints one JSON
line, ``{"klaviyo": URL, "hubspot": URL, "control": URL}``, then serves until SIGTERM.

The control URL answers ``GET /stats`` (requests, 429s, per rate-limit group with the
time it kept the client busy, per endpoint, since the last reset), ``POST /reset`` and
``GET /state`` (what each account holds: tags by address, suppressed addresses).
:class:`Emulators` starts this process and talks to it.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import ExitStack
from types import TracebackType
from typing import Any

import requests

from benchmarks.emulated import EagerKlaviyoModel, IndexedHubSpotModel, Sequence, Tally, counting_emulator
from tests.emulators import hubspot as hubspot_limits
from tests.emulators import klaviyo as klaviyo_limits
from tests.emulators.server import Emulator, Limit, Reply

KLAVIYO_KEY = "pk_bench0000000000000000000000000000"
HUBSPOT_TOKEN = "pat-na1-be0c0000-0000-4000-8000-be0c00000000"
TAG_PROPERTY = "personasync_personas"  # HubSpot: the adapter's default
KLAVIYO_TAG_PROPERTY = "personas"  # Klaviyo: the adapter's default
SUBSCRIPTION = 77  # the HubSpot email subscription type suppressed contacts leave
LIFETIME = 7 * 24 * 3600.0  # the emulators' own shut-down timer: longer than any benchmark


def serve(args: argparse.Namespace, stop: threading.Event, announce: Callable[[str], None]) -> None:
    klaviyo = EagerKlaviyoModel(KLAVIYO_KEY)
    hubspot = IndexedHubSpotModel(HUBSPOT_TOKEN, daily_limit=10**12)
    hubspot.add_subscription(args.subscription_id, "Newsletter")
    hubspot.add_property(TAG_PROPERTY, [o for o in args.hubspot_options.split(",") if o])
    hubspot_limit = Limit("ten-secondly", r"^/", per_ten_seconds=args.hubspot_per_ten_seconds, rolling=True)
    on = not args.no_limits
    sequence = Sequence()  # shared: a request to one vendor ends the other's busy stretch
    with ExitStack() as stack:
        served: dict[str, tuple[Emulator, Tally]] = {
            "klaviyo": counting_emulator(
                klaviyo.handle, latency=args.latency, limits=klaviyo_limits.LIMITS if on else (),
                max_seconds=LIFETIME, sequence=sequence,
            ),
            "hubspot": counting_emulator(
                hubspot.handle, latency=args.latency, limits=(hubspot_limit,) if on else (),
                max_seconds=LIFETIME, throttled=hubspot.throttled_reply, sequence=sequence,
            ),
        }  # fmt: skip
        for emulator, _ in served.values():
            stack.enter_context(emulator)

        def held() -> dict[str, Any]:
            with served["klaviyo"][0].lock:
                tags = {e: sorted(t) for e, t in klaviyo.tagged(KLAVIYO_TAG_PROPERTY).items()}
                klaviyo_state = {"tags": tags, "suppressed": sorted(klaviyo.suppressed())}
            with served["hubspot"][0].lock:
                tags = {e: sorted(t) for e, t in hubspot.tags(TAG_PROPERTY).items()}
                hubspot_state = {
                    "tags": tags,
                    "suppressed": sorted(hubspot.unsubscribed(args.subscription_id)),
                }
            return {"klaviyo": klaviyo_state, "hubspot": hubspot_state}

        def tallies(reset: bool) -> dict[str, Any]:
            counts = {}
            for name, (emulator, tally) in served.items():
                with emulator.lock:
                    counts[name] = tally.as_json()
                    if reset:
                        tally.reset()
            return counts

        def control(method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
            path = url.split("?", 1)[0].rsplit("/", 1)[-1]
            if (method, path) == ("GET", "stats"):
                answer = tallies(reset=False)
            elif (method, path) == ("POST", "reset"):
                answer = tallies(reset=True)
            elif (method, path) == ("GET", "state"):
                answer = held()
            else:
                return 404, {"Content-Type": "application/json"}, json.dumps({"error": f"no {method} {path}"})
            return 200, {"Content-Type": "application/json"}, json.dumps(answer)

        control_server = stack.enter_context(Emulator(control, max_seconds=LIFETIME))
        urls = {name: emulator.url for name, (emulator, _) in served.items()}
        announce(json.dumps({**urls, "control": control_server.url}))
        while not stop.wait(1.0):
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.05, help="seconds before each answer")
    parser.add_argument("--no-limits", action="store_true", help="do not enforce the vendors' rate limits")
    parser.add_argument(
        "--hubspot-per-ten-seconds", type=int, default=hubspot_limits.TEN_SECONDLY.per_ten_seconds,
        help="HubSpot's rolling 10-second limit (190 Professional/Enterprise, 250 with the capacity pack)",
    )  # fmt: skip
    parser.add_argument(
        "--hubspot-options", default="", help="options of the HubSpot tag property, comma-separated"
    )
    parser.add_argument("--subscription-id", type=int, default=SUBSCRIPTION)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(args, stop, lambda line: print(line, flush=True))


class Emulators:
    """``with Emulators(options) as vendors:`` the emulators in a child process; its base
    URLs (``vendors.urls["klaviyo"]``), counters (:meth:`stats`, :meth:`reset`) and the
    accounts' contents (:meth:`state`). Leaving the block stops the process."""

    def __init__(self, *, latency: float = 0.05, hubspot_options: list[str], limits: bool = True) -> None:
        self._command = [
            sys.executable, "-m", "benchmarks.serve_emulators", "--latency", str(latency),
            "--hubspot-options", ",".join(hubspot_options), *([] if limits else ["--no-limits"]),
        ]  # fmt: skip
        self._proc: subprocess.Popen[str] | None = None
        self.urls: dict[str, str] = {}

    def __enter__(self) -> Emulators:
        self._proc = subprocess.Popen(self._command, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{' '.join(self._command)} exited with {self._proc.wait()} before serving")
        self.urls = json.loads(line)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=30)

    def _call(self, method: str, path: str) -> dict[str, Any]:
        answer = requests.request(method, f"{self.urls['control']}/{path}", timeout=600)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def stats(self) -> dict[str, Any]:
        """Per vendor: requests, 429s, per group and per endpoint, since the last reset."""
        return self._call("GET", "stats")

    def reset(self) -> dict[str, Any]:
        """The counts so far (as :meth:`stats`), then zero them."""
        return self._call("POST", "reset")

    def state(self) -> dict[str, Any]:
        """Per vendor: ``tags`` (address -> sorted tags) and ``suppressed`` (addresses)."""
        return self._call("GET", "state")


if __name__ == "__main__":
    main()
