"""Run a command in a fresh process and report wall time, CPU time and peak RSS."""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float


def measure(
    command: list[str], *, quiet: bool = False, ok: tuple[int, ...] = (0,), stdout: IO[str] | None = None
) -> Measurement:
    """Run ``command`` to completion (raising if its exit code is not in ``ok``) and measure it;
    ``quiet`` drops its stdout, ``stdout`` captures it."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=stdout or (subprocess.DEVNULL if quiet else None))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in ok:
        raise RuntimeError(f"{command} exited with {os.waitstatus_to_exitcode(status)}")
    return Measurement(
        wall_s=round(wall, 2),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
    )


def sizes_from_command_line(doc: str | None, bare_sql: Callable[[str], None], columns: str) -> list[int]:
    """``--customers 100000,1000000`` as sizes, after printing the machine line and the CSV
    header. A benchmark reruns itself with the hidden ``--bare-sql CONFIG`` to time its floor
    in a fresh process: then that runs here, and there is nothing more to do (``[]``)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--bare-sql", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_sql:
        bare_sql(args.bare_sql)
        return []
    print(f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, {platform.machine()}")
    print(columns)
    return [int(s) for s in args.customers.split(",")]
