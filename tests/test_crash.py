"""Crash at any point: `personasync sync` runs as a real process against HubSpot and Attentive
emulators (real sockets) and is killed with SIGKILL at a point chosen by a seeded RNG, right
after a vendor has done the work of a request and before the answer reaches us (the worst
moment: the vendor has it, our ledger does not). A rerun must then finish the job:

- each vendor ends holding exactly the desired state;
- nothing whose repetition the person notices happened twice (an Attentive unsubscribe
  texts the person: one text each, ever) and nobody was ever subscribed;
- the ledger never claims what a vendor does not hold, at the kill and after the rerun.

The default run kills at a few points; ``-m slow`` kills at 20.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from sync.destinations import destination_tags
from tests.emulators.hubspot import hubspot_emulator
from tests.emulators.server import Emulator
from tests.fakes.attentive import AttentiveModel
from tests.fakes.hubspot import HubSpotModel
from tests.fakes.memory_destination import MemoryDestination
from tests.sync_world import AS_OF, World, make_world

HUBSPOT_TOKEN = "pat-na1-c4a5h000-0000-4000-8000-c4a5h0000000"
ATTENTIVE_TOKEN = "atn_c4a5h0000000000000000000000000"
SUBSCRIPTION = 77
SEED = 20261122
CUSTOMERS = 60
DESTINATIONS = """
[[destinations]]
type = "hubspot"
name = "hubspot"
channel = "email"
access_token = "${{CRASH_HUBSPOT_TOKEN}}"
subscription_id = "{subscription}"
base_url = "{hubspot}"
max_suppress_percent = 100

[[destinations]]
type = "attentive"
name = "attentive"
channel = "sms"
api_key = "${{CRASH_ATTENTIVE_TOKEN}}"
base_url = "{attentive}/v1"
tag_prefix = "persona_"
max_suppress_percent = 100
"""


@pytest.fixture(autouse=True)
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """The credentials, from the environment as in production (the child process inherits them)."""
    monkeypatch.setenv("CRASH_HUBSPOT_TOKEN", HUBSPOT_TOKEN)
    monkeypatch.setenv("CRASH_ATTENTIVE_TOKEN", ATTENTIVE_TOKEN)


@dataclass
class Vendors:
    hubspot: HubSpotModel
    attentive: AttentiveModel
    emulators: tuple[Emulator, Emulator]

    def answered(self) -> int:
        return sum(e.requests for e in self.emulators)


@contextmanager
def vendors_and_world(folder: Path) -> Iterator[tuple[Vendors, World]]:
    """Both emulators running, and a demo world whose config points at them; the vendors
    know every contact the sync will tag."""
    hubspot, attentive = HubSpotModel(HUBSPOT_TOKEN), AttentiveModel(ATTENTIVE_TOKEN)
    with ExitStack() as stack:
        hub = stack.enter_context(hubspot_emulator(hubspot, latency=0, enforce_limits=False, max_seconds=600))
        att = stack.enter_context(Emulator(attentive.handle, max_seconds=600))
        extra = DESTINATIONS.format(subscription=SUBSCRIPTION, hubspot=hub.url, attentive=att.url)
        world = make_world(folder, customers=CUSTOMERS, extra_config=extra)
        config_file = folder / "personasync.toml"
        text = config_file.read_text().replace("lock_timeout_minutes = 120", "lock_timeout_minutes = 0.001")
        config_file.write_text(text)  # a killed run's lock is stale at once (the timeout is tested elsewhere)
        hubspot.add_subscription(SUBSCRIPTION, "Newsletter")
        hubspot.add_property(
            "personasync_personas",
            list(destination_tags(world.config.destinations[-2], world.config.personas)),
        )
        world.destinations = {name: MemoryDestination(name, 50) for name in ("hubspot", "attentive")}
        for phone in world.desired("attentive")[0]:
            attentive.add(phone)
        yield Vendors(hubspot, attentive, (hub, att)), world


def run_sync(folder: Path, vendors: Vendors, kill_after: int | None = None) -> int:
    """``personasync sync`` as a process; with ``kill_after``, SIGKILLed right after the
    vendors have answered that many requests (counted across both), before it hears back."""
    command = [
        sys.executable, "-m", "sync.cli_main", "sync", "--config", str(folder / "personasync.toml"),
        "--destination", "hubspot", "--destination", "attentive", "--quiet", "--as-of", AS_OF.isoformat(),
    ]  # fmt: skip
    counted = itertools.count(1)
    lock = threading.Lock()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def kill_at_the_point() -> None:
        with lock:
            if next(counted) == kill_after:
                os.kill(proc.pid, signal.SIGKILL)

    for emulator in vendors.emulators:
        emulator.on_answered = kill_at_the_point if kill_after is not None else None
    out, err = proc.communicate(timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"exit {proc.returncode}\n{out.decode()}\n{err.decode()}")
    return proc.returncode


def assert_ledger_not_ahead(world: World, vendors: Vendors) -> None:
    held_tags = vendors.hubspot.tags()
    unsubscribed = vendors.hubspot.unsubscribed(SUBSCRIPTION)
    for row in world.ledger_rows("hubspot"):
        assert row.tags <= held_tags.get(row.address, frozenset()), f"ledger ahead of HubSpot: {row.address}"
        assert not row.suppressed or row.address in unsubscribed, f"ledger claims {row.address} unsubscribed"
    sms_tags = vendors.attentive.tagged()
    texted = vendors.attentive.unsubscribed()
    for row in world.ledger_rows("attentive"):
        assert row.tags <= sms_tags.get(row.address, frozenset()), f"ledger ahead of Attentive: {row.address}"
        assert not row.suppressed or row.address in texted, f"ledger claims {row.address} unsubscribed"


def assert_exactly_desired(world: World, vendors: Vendors) -> None:
    tagged, suppressed = world.desired("hubspot")
    assert vendors.hubspot.tags() == tagged
    assert vendors.hubspot.unsubscribed(SUBSCRIPTION) == suppressed
    sms_tagged, sms_suppressed = world.desired("attentive")
    assert vendors.attentive.tagged() == sms_tagged
    assert vendors.attentive.unsubscribe_texts() == dict.fromkeys(sms_suppressed, 1)  # one text each, ever
    assert vendors.hubspot.violations == [] and vendors.attentive.violations == []


def requests_in_a_clean_run(tmp_path: Path) -> int:
    with vendors_and_world(tmp_path / "calibration") as (vendors, world):
        assert run_sync(world.folder, vendors) == 0
        assert_exactly_desired(world, vendors)
        return vendors.answered()


def kill_points(tmp_path: Path, how_many: int) -> list[int]:
    total = requests_in_a_clean_run(tmp_path)
    assert total > how_many
    return sorted(random.Random(SEED).sample(range(1, total + 1), how_many))


def crash_then_finish(folder: Path, kill_after: int) -> None:
    with vendors_and_world(folder) as (vendors, world):
        assert run_sync(folder, vendors, kill_after) == -signal.SIGKILL
        assert_ledger_not_ahead(world, vendors)
        assert run_sync(folder, vendors) == 0
        assert_exactly_desired(world, vendors)
        assert_ledger_not_ahead(world, vendors)


def test_a_run_killed_at_seeded_points_is_finished_by_the_next_without_loss_or_repeat(tmp_path: Path) -> None:
    for point in kill_points(tmp_path, 2):
        crash_then_finish(tmp_path / f"kill-{point}", point)


@pytest.mark.slow
def test_twenty_kill_points(tmp_path: Path) -> None:
    for point in kill_points(tmp_path, 20):
        crash_then_finish(tmp_path / f"kill-{point}", point)
