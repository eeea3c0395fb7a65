"""A real HTTP server in front of a vendor model, for tests and benchmarks that need sockets.

The models in ``tests/fakes`` answer one request at a time and know nothing of the
transport. :class:`Emulator` serves one from ``http.server`` on 127.0.0.1 (an ephemeral
port), so our real client (pooled keep-alive connections, timeouts, retries, token
buckets) talks to it as it would to the vendor:

- the model is called under :attr:`Emulator.lock` (models are not thread-safe);
  ``latency`` is slept outside the lock, before the answer is written, so concurrent
  connections wait in parallel as they would on a network;
- vendor rate limits are windows per endpoint group (:class:`Limit`; the first group
  whose pattern matches the path counts the request): fixed windows counted from the
  emulator's start, or rolling ones (the last N seconds, as HubSpot's
  ``TEN_SECONDLY_ROLLING`` policy) when the group says ``rolling``. Over a limit: the
  emulator's ``throttled`` reply, by default a 429 with a JSON:API error body and
  ``Retry-After`` (whole seconds until the window that refused resets, so ``1`` for a
  per-second window; :func:`throttled_reply`), counted in :attr:`Emulator.throttled`. A
  refused request never reaches the model and does not use up quota;
- a vendor that caps simultaneous requests instead (Mailchimp: 10 connections per user)
  sets ``max_concurrent``: a request arriving while that many are being answered (from
  arrival until the answer is ready, ``latency`` included) is refused at once with the
  ``throttled`` reply for group ``"concurrent"`` (reset 0, so ``Retry-After: 1`` from the
  default reply; pass the vendor's own), counted like a window refusal, and does not use
  up window quota. :attr:`Emulator.peak_in_flight` is the most answered at once. Without
  ``max_concurrent`` (the default) nothing is refused for concurrency;
- a transport fault the model raises as ``requests`` would (``ConnectionError``,
  ``Timeout``) becomes a connection closed without an answer. For a timeout the model has
  already done the work, so the client faces the same unknown outcome as after a real
  read timeout, without a test having to wait one out;
- each answer goes out in one ``write`` on a ``TCP_NODELAY`` socket. ``http.server`` writes
  the headers and the body separately; Nagle's algorithm then holds the body back until
  the client's delayed ACK (~40 ms), which would swamp a 50 ms latency;
- HTTP/1.1 keep-alive, always a ``Content-Length``, no request log;
- the server shuts itself down after ``max_seconds``, so a test that forgets it cannot keep
  a port and threads alive.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests

Reply = tuple[int, dict[str, str], str]
Handle = Callable[[str, str, dict[str, str], bytes], Reply]
JSON_API = "application/vnd.api+json"
CONCURRENT = "concurrent"  # the group named when max_concurrent refuses a request


@dataclass(frozen=True)
class Limit:
    """Requests whose path matches ``pattern`` (``re.search``) share one group's windows:
    ``per_second`` in each 1-second window, ``per_ten_seconds`` in each 10-second one,
    ``per_minute`` in each 60-second one. The windows are fixed and counted from the
    emulator's start, or with ``rolling`` they are the last 1, 10 or 60 seconds before
    each request (stricter: no double burst across a window boundary)."""

    name: str
    pattern: str
    per_second: int | None = None
    per_minute: int | None = None
    per_ten_seconds: int | None = None
    rolling: bool = False

    def windows(self) -> list[tuple[float, int]]:
        """(window seconds, requests allowed in it) for each window this group has."""
        sizes = ((1.0, self.per_second), (10.0, self.per_ten_seconds), (60.0, self.per_minute))
        return [(size, allowed) for size, allowed in sizes if allowed is not None]


class FixedWindows:
    """Window counters per (group, window size): fixed windows, or rolling ones for a
    ``rolling`` group. Not thread-safe: the caller locks."""

    def __init__(self, limits: Iterable[Limit], start: float) -> None:
        self._limits = [(limit, re.compile(limit.pattern)) for limit in limits]
        self._start = start
        self._counts: dict[tuple[str, float], tuple[int, int]] = {}  # -> (window index, count)
        self._recent: dict[tuple[str, float], deque[float]] = {}  # rolling: admission times

    def admit(self, path: str, now: float) -> tuple[str, float] | None:
        """Count the request and return None, or refuse it: (group, seconds until the window
        that refused lets a request through again)."""
        limit = next((limit for limit, pattern in self._limits if pattern.search(path)), None)
        if limit is None:
            return None
        windows = limit.windows()
        for size, allowed in windows:
            if self._used(limit, size, now) >= allowed:
                return limit.name, self._reset(limit, size, now)
        for size, _ in windows:
            self._count(limit, size, now)
        return None

    def _used(self, limit: Limit, size: float, now: float) -> int:
        key = (limit.name, size)
        if limit.rolling:
            recent = self._recent.setdefault(key, deque())
            while recent and recent[0] <= now - size:
                recent.popleft()
            return len(recent)
        index = int((now - self._start) // size)
        seen, count = self._counts.get(key, (index, 0))
        return count if seen == index else 0

    def _reset(self, limit: Limit, size: float, now: float) -> float:
        if limit.rolling:
            return self._recent[(limit.name, size)][0] + size - now
        elapsed = now - self._start
        return (int(elapsed // size) + 1) * size - elapsed

    def _count(self, limit: Limit, size: float, now: float) -> None:
        key = (limit.name, size)
        if limit.rolling:
            self._recent.setdefault(key, deque()).append(now)
            return
        index = int((now - self._start) // size)
        self._counts[key] = (index, self._used(limit, size, now) + 1)


def throttled_reply(group: str, reset: float) -> Reply:
    """A 429 as JSON:API vendors send it, with ``Retry-After`` in whole seconds (at least 1)."""
    wait = max(1, math.ceil(reset - 1e-9))
    body = {
        "errors": [
            {
                "id": "00000000-0000-0000-0000-000000000429",
                "status": 429,
                "code": "throttled",
                "title": "Request was throttled.",
                "detail": f"Request was throttled ({group}). Expected available in {wait} second(s).",
            }
        ]
    }
    return 429, {"Content-Type": JSON_API, "Retry-After": str(wait)}, json.dumps(body)


class Emulator:
    """``with Emulator(model.handle, latency=0.05, limits=[...]) as api:`` then point a
    client at ``api.url``. ``throttled(group, seconds until the window resets)`` builds
    the answer to a request over a limit (default :func:`throttled_reply`; pass the
    vendor's own shape). Counters: :attr:`requests` (every request received),
    :attr:`throttled` (429s from the windows or ``max_concurrent``, also per group in
    :attr:`throttled_by`), :attr:`dropped` (connections closed without an answer),
    :attr:`peak_in_flight` (the most requests being answered at once)."""

    def __init__(
        self,
        handle: Handle,
        *,
        latency: float = 0.0,
        limits: Iterable[Limit] = (),
        max_seconds: float = 120.0,
        throttled: Callable[[str, float], Reply] = throttled_reply,
        max_concurrent: int | None = None,
    ) -> None:
        self.handle = handle
        self.max_concurrent = max_concurrent
        self.latency = latency
        self.limits = tuple(limits)
        self.throttled_answer = throttled
        self.max_seconds = max_seconds
        self.lock = threading.Lock()  # held while the model answers; take it to read or reset the model
        self.requests = 0
        self.throttled = 0
        self.throttled_by: dict[str, int] = {}
        self.dropped = 0
        self.peak_in_flight = 0
        self._in_flight = 0
        self._flight_lock = threading.Lock()  # not self.lock: requests waiting for the model count too
        self.expired = False  # shut down by max_seconds rather than by the caller
        # called under the lock after the model has answered and before the answer is written:
        # a crash test kills its client here, between the vendor's work and our record of it
        self.on_answered: Callable[[], None] | None = None
        self._windows = FixedWindows(self.limits, time.monotonic())
        self._server: _Server | None = None
        self._address: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._stopping = threading.Lock()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the base URL to give a client (still readable after exit)."""
        if self._address is None:
            raise RuntimeError("the emulator has not started: use it as a context manager")
        return "http://{}:{}".format(*self._address)

    def __enter__(self) -> Emulator:
        if self._server is not None:
            raise RuntimeError("an emulator runs once")
        self._server = _Server(("127.0.0.1", 0), _RequestHandler)
        self._server.emulator = self
        host, port = self._server.server_address[:2]
        self._address = (str(host), int(port))
        self._windows = FixedWindows(self.limits, time.monotonic())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="emulator"
        )
        self._thread.start()
        self._timer = threading.Timer(self.max_seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, close the listening socket and every open connection. Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
        self._stop()

    def _expire(self) -> None:
        self.expired = True
        self._stop()

    def _stop(self) -> None:
        with self._stopping:
            server, self._server = self._server, None
            if server is None:
                return
            server.shutdown()
            server.server_close()
            with self._open_lock:
                for connection in self._open:  # unblock handler threads waiting on keep-alive
                    with contextlib.suppress(OSError):  # already closed by the client
                        connection.shutdown(socket.SHUT_RDWR)
            if self._thread is not None:
                self._thread.join(timeout=5)

    # --- called from the handler threads ---------------------------------------------------
    def answer(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Reply | None:
        """The reply to send, or None to close the connection without answering."""
        admitted = self._enter()
        try:
            return self._answer(method, url, headers, body, admitted)
        finally:
            if admitted:
                with self._flight_lock:
                    self._in_flight -= 1

    def _enter(self) -> bool:
        """Count the request as being answered, or refuse it (False) under ``max_concurrent``."""
        with self._flight_lock:
            if self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
                return False
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            return True

    def _answer(
        self, method: str, url: str, headers: dict[str, str], body: bytes, admitted: bool
    ) -> Reply | None:
        path = urlsplit(url).path
        reply: Reply | None
        with self.lock:
            self.requests += 1
            refused = self._windows.admit(path, time.monotonic()) if admitted else (CONCURRENT, 0.0)
            if refused is not None:
                group, reset = refused
                self.throttled += 1
                self.throttled_by[group] = self.throttled_by.get(group, 0) + 1
                reply = self.throttled_answer(group, reset)
            else:
                try:
                    reply = self.handle(method, url, headers, body)
                except (requests.ConnectionError, requests.Timeout):
                    self.dropped += 1
                    reply = None
                if self.on_answered is not None:
                    self.on_answered()
        if self.latency > 0:
            time.sleep(self.latency)
        return reply

    def _opened(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.add(connection)

    def _closed(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(connection)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # socketserver's 5 would make the kernel delay bursts of new connections ~1 s
    emulator: Emulator

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a reverse DNS lookup): not needed here
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-request is normal here (timeouts, shutdown): stay quiet."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emulator._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """No request log: a benchmark sends thousands."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        reply = self.server.emulator.answer(
            self.command, f"http://{host}{self.path}", dict(self.headers.items()), body
        )
        if reply is None:
            self.close_connection = True  # the handler returns, the socket closes: no answer at all
            return
        status, headers, text = reply
        payload = text.encode()
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {status} {phrase}", f"Date: {self.date_time_string()}"]
        skip = {"content-length", "connection", "date", "transfer-encoding"}
        lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() not in skip]
        lines.append(f"Content-Length: {len(payload)}")
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)  # one write
