"""Two schedulers, one state store: `personasync sync` processes started at the same moment
race for the lock (SQLite and PostgreSQL state stores). Exactly one runs, the other exits 4
naming the holder, and the vendor sees each change once: with Attentive, whose unsubscribe
texts the person, a second runner would text them twice. A lock left by a killed process
blocks the next run until its heartbeat is older than ``lock_timeout_minutes``, then is
taken over with a warning naming the dead holder.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sync.exit_codes import ExitCode
from tests.cli_vendors import (
    Stage,
    assert_exactly_desired,
    assert_ledger_not_ahead,
    run_sync,
    stage,
    sync_command,
)

LOCK_TIMEOUT_SECONDS = 6.0


pytestmark = pytest.mark.usefixtures("vendor_credentials")  # from the environment, as in production


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None  # the demo config's SQLite file next to it
    return str(request.getfixturevalue("postgres_schema_url"))


def test_two_syncs_started_together_one_runs_the_other_exits_4(tmp_path: Path, state_url: str | None) -> None:
    with stage(tmp_path, vendors=("attentive",), state_url=state_url, lock_timeout_minutes=30) as scene:
        scene.vendor("attentive").emulator.latency = 0.05  # the winner runs for a couple of seconds
        results = race(scene)
        codes = sorted(code for _, code, _, _ in results)
        assert codes == [ExitCode.OK, ExitCode.LOCKED], results
        winner = next(pid for pid, code, _, _ in results if code == ExitCode.OK)
        _, _, out, err = next(r for r in results if r[1] == ExitCode.LOCKED)
        assert "another run holds the lock" in out + err and f"pid {winner}" in out + err
        assert_exactly_desired(scene)  # one unsubscribe text per person: the loser sent nothing
        assert_ledger_not_ahead(scene)


def test_a_stale_lock_from_a_killed_process_is_taken_over_after_the_timeout(tmp_path: Path) -> None:
    with stage(tmp_path, vendors=("attentive",), lock_timeout_minutes=LOCK_TIMEOUT_SECONDS / 60) as scene:
        killed_pid = kill_mid_run(scene, after_requests=5)
        killed_at = time.monotonic()

        blocked = run_sync(scene)
        assert time.monotonic() - killed_at < LOCK_TIMEOUT_SECONDS, "too slow to see the lock still fresh"
        assert blocked.exit_code == ExitCode.LOCKED, blocked.stdout + blocked.stderr
        assert f"pid {killed_pid}" in blocked.stdout + blocked.stderr

        time.sleep(max(0.0, LOCK_TIMEOUT_SECONDS - (time.monotonic() - killed_at)) + 0.5)
        recovered = run_sync(scene)
        assert recovered.exit_code == ExitCode.OK, recovered.stdout + recovered.stderr
        assert re.search(
            rf"stale lock.*pid {killed_pid}|pid {killed_pid}.*stale", recovered.stderr, re.I | re.S
        )
        assert_exactly_desired(scene)
        assert_ledger_not_ahead(scene)


def test_a_run_whose_lock_is_taken_over_stops_and_nobody_is_texted_twice(tmp_path: Path) -> None:
    """A lock timeout shorter than a run's quiet spells (misconfigured: 60 ms here) lets a
    second run take the lock of a live one. The first notices before its next send (the lock
    is confirmed in the transaction that writes down an unsubscribe before it goes out),
    stops with exit 4, and the second's plan already counts what the first sent."""
    with stage(tmp_path, vendors=("attentive",), lock_timeout_minutes=0.001) as scene:
        scene.vendor("attentive").emulator.latency = 0.05
        results = race(scene)
        assert {code for _, code, _, _ in results} <= {ExitCode.OK, ExitCode.LOCKED}, results
        texts = scene.vendor("attentive").model.unsubscribe_texts()
        assert texts and max(texts.values()) == 1, f"texted twice: {[p for p, n in texts.items() if n > 1]}"
        for _, code, out, err in results:
            if code == ExitCode.LOCKED and "taken over" in out + err:
                assert "lock_timeout_minutes" in out + err  # says what to fix
        assert run_sync(scene).exit_code == ExitCode.OK
        assert_exactly_desired(scene)


def race(scene: Stage) -> list[tuple[int, int, str, str]]:
    """Two `personasync sync` processes started together: (pid, exit code, stdout, stderr) each."""
    command = sync_command(scene)
    racers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [proc.communicate(timeout=300) for proc in racers]
    return [
        (p.pid, p.returncode, out.decode(), err.decode())
        for p, (out, err) in zip(racers, outputs, strict=True)
    ]


def kill_mid_run(scene: Stage, after_requests: int) -> int:
    """Run a sync and SIGKILL it once the vendor has answered ``after_requests`` requests;
    return its pid."""
    proc = subprocess.Popen(sync_command(scene), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    counted = itertools.count(1)

    def maybe_kill() -> None:
        if next(counted) == after_requests:
            os.kill(proc.pid, signal.SIGKILL)

    scene.vendor("attentive").emulator.on_answered = maybe_kill
    assert proc.wait(timeout=300) == -signal.SIGKILL
    scene.vendor("attentive").emulator.on_answered = None
    return proc.pid
