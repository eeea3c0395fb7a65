"""Process exit codes, shared by every command and documented in the README."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    RECORD_FAILURES = 1  # the run finished, but some records failed (see `personasync runs show`)
    CONFIG = 2  # bad config, usage error, or the config does not match the warehouse
    GUARDRAIL = 3  # a guardrail blocked the run before anything was sent
    LOCKED = 4  # another run holds the lock on the state store
    DESTINATION_FATAL = 5  # a destination refused us (auth) or stayed down after retries
