"""Crash at any point: `personasync sync` runs as a real process against every vendor's
emulator (real sockets) and is killed with SIGKILL at a point chosen by a seeded RNG, right
after a vendor has done the work of a request and before the answer reaches us (the worst
moment: the vendor has it, our ledger does not). Points fall in every vendor's traffic,
including a Klaviyo job poll (the job is queued or done; we have not heard). A rerun must
then finish the job:

- each vendor ends holding exactly the desired state;
- nothing whose repetition the person notices happened twice (an Attentive unsubscribe
  texts the person: one text each, ever) and nobody was ever subscribed;
- the ledger never claims what a vendor does not hold, at the kill and after the rerun.

The default run kills at 2 points (one of them a Klaviyo job poll); ``-m slow`` at 20,
spread evenly over the vendors.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cli_vendors import (
    Stage,
    assert_exactly_desired,
    assert_ledger_not_ahead,
    run_sync,
    stage,
)

SEED = 20261122
JOB_POLL = re.compile(r"-jobs/[^/]+/?$")  # GET of a Klaviyo bulk job's status
KillPoint = tuple[str, int]  # (vendor, the n-th request it answers)


pytestmark = pytest.mark.usefixtures("vendor_credentials")  # from the environment, as in production


def traffic_of_a_clean_run(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """Each vendor's requests (method, path), in order, in an uninterrupted run."""
    with stage(folder) as scene:
        run = run_sync(scene)
        assert run.exit_code == 0, run.stderr
        assert_exactly_desired(scene)
        traffic = {vendor.name: list(vendor.model.calls) for vendor in scene.vendors}
        answered = scene.answered()
        assert run_sync(scene).exit_code == 0
        assert scene.answered() == answered, "a rerun with no data change must not make a single request"
        return traffic


def kill_points(traffic: dict[str, list[tuple[str, str]]], how_many: int) -> list[KillPoint]:
    """``how_many`` points: one right after a Klaviyo job poll, the rest drawn from all traffic,
    spread evenly over the vendors when there are enough of them."""
    rng = random.Random(SEED)
    polls = [
        n
        for n, (method, path) in enumerate(traffic["klaviyo"], 1)
        if method == "GET" and JOB_POLL.search(path)
    ]
    points = {("klaviyo", rng.choice(polls))}
    vendors = sorted(traffic)
    for vendor in itertools.islice(itertools.cycle(vendors), how_many - 1):
        free = [n for n in range(1, len(traffic[vendor]) + 1) if (vendor, n) not in points]
        points.add((vendor, rng.choice(free)))
    return sorted(points)


def kill_at(scene: Stage, point: KillPoint, proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` right after the vendor of ``point`` has answered that many requests,
    before the answer is written back."""
    vendor_name, after = point
    vendor = scene.vendor(vendor_name)
    counted = itertools.count(1)
    lock = threading.Lock()

    def maybe_kill() -> None:
        with lock:
            if next(counted) == after:
                os.kill(proc.pid, signal.SIGKILL)

    vendor.emulator.on_answered = maybe_kill


def crash_then_finish(folder: Path, point: KillPoint) -> None:
    with stage(folder) as scene:
        killed = run_sync(scene, on_start=lambda proc: kill_at(scene, point, proc))
        assert killed.exit_code == -signal.SIGKILL, f"not killed at {point}: exit {killed.exit_code}"
        for vendor in scene.vendors:
            vendor.emulator.on_answered = None
        assert_ledger_not_ahead(scene)
        rerun = run_sync(scene)
        assert rerun.exit_code == 0, f"rerun after a kill at {point}: exit {rerun.exit_code}\n{rerun.stderr}"
        assert_exactly_desired(scene)
        assert_ledger_not_ahead(scene)


def test_a_run_killed_at_seeded_points_is_finished_by_the_next_without_loss_or_repeat(tmp_path: Path) -> None:
    traffic = traffic_of_a_clean_run(tmp_path / "calibration")
    for point in kill_points(traffic, 2):
        crash_then_finish(tmp_path / f"kill-{point[0]}-{point[1]}", point)


@pytest.mark.slow
def test_twenty_kill_points_over_every_vendor(tmp_path: Path) -> None:
    traffic = traffic_of_a_clean_run(tmp_path / "calibration")
    points = kill_points(traffic, 20)
    assert {vendor for vendor, _ in points} == set(traffic)
    with ThreadPoolExecutor(max_workers=4) as pool:  # the runs mostly wait on job polls: overlap them
        done = [pool.submit(crash_then_finish, tmp_path / f"kill-{v}-{n}", (v, n)) for v, n in points]
        for future in done:
            future.result()
