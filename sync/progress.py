"""Progress and logs for the CLI: a bar per destination on a terminal, plain log lines
otherwise (cron, Kubernetes, Airflow), JSON log lines with ``--log-format json``.

Every log line passes through the config's :class:`~sync.redact.Redactor`, so a secret
that slipped into a message is masked before it reaches stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Final

from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichBar

from sync.changes import ChangeKind
from sync.redact import Redactor

LOGGER: Final = "personasync"
log = logging.getLogger(LOGGER)


class _RedactingFilter(logging.Filter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, message, and any ``extra`` fields."""

    _STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        return json.dumps(entry, default=str)


def setup_logging(log_format: str, quiet: bool, redact: Redactor) -> None:
    """Log to stderr: warnings only with ``quiet``, otherwise info."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactingFilter(redact))
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


class LogProgress:
    """Progress as log lines: one when a section starts, then every ~10 %."""

    def __init__(self) -> None:
        self._state: dict[
            str, tuple[str, int, int, int]
        ] = {}  # destination -> kind, total, done, next report

    def start(self, destination: str, kind: ChangeKind, total: int) -> None:
        self._state[destination] = (kind.value, total, 0, max(1, total // 10))
        log.info(
            "%s: sending %s %s change(s)",
            destination,
            f"{total:,}",
            kind.value,
            extra={"destination": destination, "kind": kind.value, "total": total},
        )

    def advance(self, destination: str, count: int) -> None:
        kind, total, done, step = self._state[destination]
        done += count
        if done >= total or done // step != (done - count) // step:
            log.info(
                "%s: %s %s/%s",
                destination,
                kind,
                f"{done:,}",
                f"{total:,}",
                extra={"destination": destination, "kind": kind, "done": done, "total": total},
            )
        self._state[destination] = (kind, total, done, step)


class BarProgress:
    """A rich progress bar per destination and kind, on stderr."""

    def __init__(self) -> None:
        self._bar = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BarProgress:
        self._bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._bar.stop()

    def start(self, destination: str, kind: ChangeKind, total: int) -> None:
        self._tasks[destination] = self._bar.add_task(f"{destination} {kind.value}", total=total)

    def advance(self, destination: str, count: int) -> None:
        self._bar.advance(self._tasks[destination], count)
