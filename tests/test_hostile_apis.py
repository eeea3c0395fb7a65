"""Hostile APIs: `personasync sync` runs as a real process against every vendor's emulator
while the network and the vendors misbehave (:class:`tests.emulators.chaos.Chaos`: 503s,
answers lost after the work, connections dropped before it, answers slower than the
client's timeout, 429 storms with and without ``Retry-After``) and each vendor refuses one
record. What an operator must be able to rely on:

- every change ends either applied (the vendor holds it) or reported on its own record in
  the run's details, with the vendor's reason for a refusal;
- the exit code says so: 1 when some records failed, 5 when a destination is down after
  its retries (the others still finish);
- nobody is subscribed, and no person is texted twice;
- the next run, once the vendor behaves, finishes the job (``--retry-failed`` for records
  the vendor refused, which are otherwise held until their data changes).

The default run uses one seed; ``-m slow`` replays four more.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sync import app
from sync.exit_codes import ExitCode
from tests.cli_vendors import (
    Run,
    Stage,
    assert_exactly_desired,
    assert_ledger_not_ahead,
    run_sync,
    stage,
)
from tests.emulators.chaos import Chaos

ATTENTIVE_UNSUBSCRIBE = r"/subscriptions/unsubscribe"


pytestmark = pytest.mark.usefixtures("vendor_credentials")  # from the environment, as in production


def hostile(seed: int) -> Chaos:
    return Chaos(
        seed, unavailable=0.10, lost_answers=0.04, drops=0.03, slow=0.02, max_slow=1,
        storm_every=25, storm_length=3, retry_after=seed % 2 == 0, no_drops=ATTENTIVE_UNSUBSCRIBE,
    )  # fmt: skip


def refuse_one_record_each(scene: Stage) -> dict[str, tuple[str, str]]:
    """Each vendor refuses one tagged customer of each of its destinations, in its own words:
    destination -> (address or key, the vendor's reason)."""
    refused: dict[str, tuple[str, str]] = {}
    for vendor in scene.vendors:
        for name in vendor.destinations:
            who = sorted(scene.desired[name][0])[0]
            faults = vendor.model.faults
            if vendor.name == "hubspot":
                reason = f"Email {who} is blocked by a workflow rule"
                faults.reject[who] = reason
            elif vendor.name == "attentive":
                reason = f"Phone {who} is not textable"
                faults.reject[who] = reason
            elif vendor.name == "mailchimp":
                reason = f"{who} looks fake or invalid, please enter a real email address"
                faults.reject[who] = reason
            elif vendor.name == "klaviyo":
                reason = f"{who} is on a blocked-profile rule"
                faults.reject[who] = ("invalid", reason)
            else:
                reason = f"Contact {who} is locked by an approval process"
                faults.reject[who] = ("ENTITY_IS_LOCKED", reason)
            refused[name] = (who, reason)
    return refused


def failures_of(scene: Stage, run: Run) -> dict[str, dict[str, str]]:
    """The run's failed records as the operator sees them: destination -> who -> reason."""
    match = re.search(r"Run (\d+):", run.stdout)
    assert match, run.stdout[-2000:]
    world = scene.world
    failures: dict[str, dict[str, str]] = {}
    details = app.run_details(world.config, int(match.group(1)), failure_limit=10_000)
    assert details is not None
    for failure in details.failures:
        who = failure.key if failure.destination == "salesforce" else failure.address
        failures.setdefault(failure.destination, {})[who] = failure.reason or ""
    return failures


def assert_applied_or_reported(scene: Stage, run: Run, refused: dict[str, tuple[str, str]]) -> None:
    """Transient faults are absorbed by retries: the run's failed records are exactly the ones
    a vendor refused, each with the vendor's reason, and everything else is applied."""
    failures = failures_of(scene, run)
    reported = {name: set(who) for name, who in failures.items()}
    assert reported == {name: {who} for name, (who, _) in refused.items()}, (
        "transient faults must not fail records"
    )
    for vendor in scene.vendors:
        for name, held in vendor.held.items():
            tags, suppressed = held()
            want_tags, want_suppressed = scene.desired[name]
            missing = {who for who, t in want_tags.items() if t != tags.get(who, frozenset())}
            missing |= want_suppressed - suppressed
            unreported = missing - set(failures.get(name, {}))
            assert not unreported, f"{name}: not applied and not reported: {sorted(unreported)[:5]}"
            who, reason = refused[name]
            assert reason in failures.get(name, {}).get(who, ""), (
                f"{name}: {who} reported as {failures.get(name)}"
            )


def calm(scene: Stage) -> None:
    """The vendors behave again and stop refusing."""
    for vendor in scene.vendors:
        vendor.emulator.handle = vendor.model.handle
        vendor.model.faults.reject.clear()


def hostile_run_then_finish(folder: Path, seed: int) -> None:
    with stage(folder) as scene:
        chaos = {vendor.name: hostile(seed + n) for n, vendor in enumerate(scene.vendors)}
        for vendor in scene.vendors:
            chaos[vendor.name].install(vendor.emulator)
        refused = refuse_one_record_each(scene)
        run = run_sync(scene)
        assert run.exit_code == ExitCode.RECORD_FAILURES, (
            f"exit {run.exit_code}\n{run.stdout[-3000:]}\n{run.stderr}"
        )
        assert "Traceback" not in run.stderr + run.stdout
        assert sum(sum(c.injected.values()) for c in chaos.values()) > 10  # the faults did happen
        assert_applied_or_reported(scene, run, refused)
        assert_ledger_not_ahead(scene)

        calm(scene)
        rerun = run_sync(scene, "--retry-failed")
        assert rerun.exit_code == ExitCode.OK, rerun.stdout[-3000:] + rerun.stderr
        assert_exactly_desired(scene)  # includes: no subscribe, one unsubscribe text per person
        assert_ledger_not_ahead(scene)


def test_under_faults_every_change_is_applied_or_reported_and_the_next_run_finishes(tmp_path: Path) -> None:
    hostile_run_then_finish(tmp_path, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_under_faults_with_other_seeds(tmp_path: Path, seed: int) -> None:
    hostile_run_then_finish(tmp_path, seed)


def test_a_vendor_down_after_retries_stops_alone_with_exit_5_and_the_next_run_finishes(
    tmp_path: Path,
) -> None:
    with stage(tmp_path, vendors=("hubspot", "klaviyo")) as scene:
        down = Chaos(seed=3, unavailable=1.0)
        down.install(scene.vendor("hubspot").emulator)
        run = run_sync(scene)
        assert run.exit_code == ExitCode.DESTINATION_FATAL, run.stdout[-3000:] + run.stderr
        assert "hubspot" in run.stdout and "503" in run.stdout + run.stderr
        assert scene.vendor("hubspot").model.tags() == {}
        klaviyo = scene.vendor("klaviyo")
        for name, held in klaviyo.held.items():
            assert held() == scene.desired[name], f"{name} should have finished while HubSpot was down"

        calm(scene)
        rerun = run_sync(scene)
        assert rerun.exit_code == ExitCode.OK, rerun.stdout[-3000:] + rerun.stderr
        assert_exactly_desired(scene)
        assert_ledger_not_ahead(scene)
