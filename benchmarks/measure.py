"""Run a command in a fresh process and report wall time, CPU time and peak RSS."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float  # of the largest process in the tree (the command or one of its children)
    exit_code: int = 0


# Forks and waits for the command, then writes its wall time and rusage to the fd in argv[1].
# Why a launcher: Linux keeps, in a child's peak RSS, the peak of the memory it was forked
# from when it execs, and subprocess forks with vfork (sharing the parent's memory), so a
# child started by this (large) process would report this process's peak. The launcher is
# a bare interpreter (~10 MB): that is the floor it passes on.
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
os.write(int(sys.argv[1]), repr((wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)).encode())
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def measure(
    command: list[str],
    *,
    quiet: bool = False,
    ok: tuple[int, ...] = (0,),
    stdout: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Measurement:
    """Run ``command`` to completion (raising if its exit code is not in ``ok``) and measure it;
    ``quiet`` drops its stdout, ``stdout`` captures it, ``env`` adds to the environment."""
    read, write = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(write), *command],
            stdout=stdout or (subprocess.DEVNULL if quiet else None),
            env={**os.environ, **env} if env else None,
            pass_fds=(write,),
        )
        os.close(write)
        write = -1
        code = proc.wait()
        with os.fdopen(read, "rb") as report:
            read = -1
            wall, cpu, maxrss = ast.literal_eval(report.read().decode())
    finally:
        for fd in (read, write):
            if fd >= 0:
                os.close(fd)
    if code not in ok:
        raise RuntimeError(f"{' '.join(command)} exited with {code}")
    measured = Measurement(
        wall_s=round(wall, 2),
        cpu_s=round(cpu, 2),
        peak_rss_mb=round(maxrss / 1024, 1),  # Linux reports KiB
        exit_code=code,
    )
    # Results are saved once a size is done; this line keeps a long step's figures when a
    # 10M run is stopped before then.
    print(
        f"measured {measured.wall_s} s wall, {measured.cpu_s} s CPU, {measured.peak_rss_mb} MB, "
        f"exit {code}: {' '.join(command)}",
        file=sys.stderr,
    )
    return measured


def measure_json(
    command: list[str], *, ok: tuple[int, ...] = (0,), env: Mapping[str, str] | None = None
) -> tuple[Measurement, Any]:
    """:func:`measure` a command that prints one JSON document, and that document."""
    with tempfile.TemporaryFile("w+") as out:
        measurement = measure(command, stdout=out, ok=ok, env=env)
        out.seek(0)
        return measurement, json.load(out)
