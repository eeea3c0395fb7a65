"""The file destination writes each batch as a sorted run and merges the runs into
``members.csv`` / ``suppressions.csv`` when a sync run ends (or when the runs grow large),
instead of rewriting the whole file per batch (quadratic on a first sync).

What a user notices: however the changes are batched, and whatever crash happens between
batches, the files end up the same; and the files are rewritten a few times per run, not
once per batch.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from connectors.destinations.file import MAX_RUNS, MEMBERS_FILE, SUPPRESSIONS_FILE, FileDestination
from sync.changes import APPLY_ORDER, Change, ChangeKind
from sync.exit_codes import ExitCode
from sync.ports import BatchResult, Capabilities, DestinationError
from tests.fakes.memory_destination import MemoryDestination, SimulatedCrash
from tests.sync_world import make_world

TAGS = ("persona:champion", "persona:at_risk", "persona:new")
SyncRun = dict[ChangeKind, list[Change]]  # the changes of one sync run, per kind


def sync_runs(seed: int, runs: int = 3, per_kind: int = 40) -> list[SyncRun]:
    """Random changes over a few contacts, so one contact often has several changes in one
    batch, across batches and across runs; some contacts have a second address."""
    rng = random.Random(seed)
    result = []
    for _ in range(runs):
        run: SyncRun = {}
        for kind in APPLY_ORDER:
            changes = []
            for _ in range(per_kind):
                key = str(rng.randrange(25))
                address = f"c{key}@example.com" if rng.random() < 0.8 else f"c{key}.new@example.com"
                changes.append(
                    Change(
                        kind,
                        key,
                        address,
                        address,
                        None,
                        "fp",
                        rng.choice(TAGS) if kind in (ChangeKind.ADD_TAG, ChangeKind.REMOVE_TAG) else None,
                        tuple(rng.sample(("no_consent", "bounced", "unsubscribed"), rng.randint(1, 2)))
                        if kind is ChangeKind.SUPPRESS
                        else (),
                    )
                )
            run[kind] = changes
        result.append(run)
    return result


def apply_run(destination: FileDestination, run: SyncRun, finish: bool = True) -> None:
    """As the engine does: each kind in order, in batches the destination takes, then finish."""
    for kind in APPLY_ORDER:
        apply_batches(destination, kind, run[kind])
    if finish:
        destination.finish()


def apply_batches(destination: FileDestination, kind: ChangeKind, changes: Sequence[Change]) -> None:
    size = destination.capabilities.max_batch[kind]
    for start in range(0, len(changes), size):
        assert destination.apply(kind, changes[start : start + size]).batch_error is None


def expected_files(runs: Sequence[SyncRun]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """What the files must hold after ``runs``, worked out independently of the destination."""
    members: dict[tuple[str, str], tuple[str, str, frozenset[str]]] = {}  # email, phone, tags
    suppressions: dict[tuple[str, str], tuple[str, str, str]] = {}  # email, phone, reasons
    for run in runs:
        for kind in APPLY_ORDER:
            for c in run[kind]:
                contact = (c.key, c.address)
                held = members.get(contact, ("", "", frozenset()))[2]
                if kind is ChangeKind.ADD_TAG:
                    members[contact] = (c.email or "", c.phone or "", held | {c.tag or ""})
                elif kind is ChangeKind.REMOVE_TAG and held - {c.tag}:
                    members[contact] = (*members[contact][:2], held - {c.tag})
                elif kind is ChangeKind.REMOVE_TAG:
                    members.pop(contact, None)
                elif kind is ChangeKind.SUPPRESS:
                    suppressions[contact] = (c.email or "", c.phone or "", ";".join(c.reasons))
                else:
                    suppressions.pop(contact, None)
    member_rows = [
        {"key": key, "email": email, "phone": phone, "tags": ";".join(sorted(tags))}
        for (key, _), (email, phone, tags) in sorted(members.items())
    ]
    suppression_rows = [
        {"key": key, "email": email, "phone": phone, "reasons": reasons}
        for (key, _), (email, phone, reasons) in sorted(suppressions.items())
    ]
    return member_rows, suppression_rows


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in (MEMBERS_FILE, SUPPRESSIONS_FILE)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_small_batches_over_several_runs_give_the_same_files_as_one_big_batch(
    tmp_path: Path, seed: int
) -> None:
    runs = sync_runs(seed)
    small = FileDestination("files", "email", tmp_path / "small", batch_size=3)
    big = FileDestination("files", "email", tmp_path / "big", batch_size=1_000_000)
    for done, run in enumerate(runs, start=1):
        apply_run(small, run)
        apply_run(big, run)
        assert file_bytes(small.folder) == file_bytes(big.folder)
        members, suppressions = expected_files(runs[:done])
        assert read_csv(small.folder / MEMBERS_FILE) == members
        assert read_csv(small.folder / SUPPRESSIONS_FILE) == suppressions
        assert sorted(p.name for p in small.folder.iterdir()) == [MEMBERS_FILE, SUPPRESSIONS_FILE]


@pytest.mark.parametrize("next_process", ["members", "apply", "finish"])
def test_a_crash_between_batches_loses_no_acknowledged_change(tmp_path: Path, next_process: str) -> None:
    first, second, third = sync_runs(seed=7, runs=3)
    folder = tmp_path / "outbox"
    crashed = FileDestination("files", "email", folder, batch_size=3)
    apply_run(crashed, first)
    for kind in APPLY_ORDER[:-1]:
        apply_batches(crashed, kind, second[kind])
    apply_batches(crashed, ChangeKind.ADD_TAG, second[ChangeKind.ADD_TAG][:21])  # then the process dies
    assert list((folder / ".pending").glob("*.csv")), "acknowledged batches not merged yet"
    acknowledged = {**second, ChangeKind.ADD_TAG: second[ChangeKind.ADD_TAG][:21]}
    members, suppressions = expected_files([first, acknowledged])

    again = FileDestination("files", "email", folder, batch_size=3)
    if next_process == "members":
        assert again.members() == members
        assert again.suppressions() == suppressions
    elif next_process == "apply":
        apply_run(again, third)
        assert (read_csv(folder / MEMBERS_FILE), read_csv(folder / SUPPRESSIONS_FILE)) == expected_files(
            [first, acknowledged, third]
        )
    else:
        again.finish()
        assert read_csv(folder / MEMBERS_FILE) == members
        assert read_csv(folder / SUPPRESSIONS_FILE) == suppressions
        assert sorted(p.name for p in folder.iterdir()) == [MEMBERS_FILE, SUPPRESSIONS_FILE]


def test_a_crash_after_a_merge_before_its_runs_are_dropped_changes_nothing(tmp_path: Path) -> None:
    first, second = sync_runs(seed=9, runs=2)
    folder = tmp_path / "outbox"
    destination = FileDestination("files", "email", folder, batch_size=3)
    apply_run(destination, first)
    apply_run(destination, second, finish=False)
    kept = tmp_path / "kept"
    shutil.copytree(folder / ".pending", kept)
    assert list(kept.glob("*.csv"))
    destination.finish()
    merged = file_bytes(folder)
    # the crash: the merged files are in place, the runs not yet deleted, and a next run was
    # being written (never acknowledged)
    shutil.copytree(kept, folder / ".pending")
    (folder / ".pending" / ".run.tmp").write_text("add_tag,99,half-written")
    FileDestination("files", "email", folder, batch_size=3).finish()
    assert file_bytes(folder) == merged
    assert sorted(p.name for p in folder.iterdir()) == [MEMBERS_FILE, SUPPRESSIONS_FILE]


def test_a_first_sync_of_many_batches_rewrites_the_file_a_few_times_not_once_per_batch(
    tmp_path: Path,
) -> None:
    batches = 40
    folder = tmp_path / "outbox"
    destination = FileDestination("files", "email", folder, batch_size=50)
    keys = random.Random(3).sample(range(1_000_000), 50 * batches)
    changes = [
        Change(
            ChangeKind.ADD_TAG, f"{k:07d}", f"p{k}@example.com", f"p{k}@example.com", None, "fp", TAGS[k % 3]
        )
        for k in keys
    ]
    inodes = []  # the file is replaced by a rename on every rewrite: a new inode each time
    for start in range(0, len(changes), 50):
        destination.apply(ChangeKind.ADD_TAG, changes[start : start + 50])
        inodes.append(os.stat(folder / MEMBERS_FILE).st_ino)
        rows = read_csv(folder / MEMBERS_FILE)  # between batches: a whole file, sorted
        assert [(r["key"], r["email"]) for r in rows] == sorted((r["key"], r["email"]) for r in rows)
    destination.finish()
    inodes.append(os.stat(folder / MEMBERS_FILE).st_ino)
    rewrites = 1 + sum(before != after for before, after in itertools.pairwise(inodes))
    assert rewrites <= 2 + 2 * math.log2(batches)  # 12 at most; it was 40, one per batch
    assert len(read_csv(folder / MEMBERS_FILE)) == len(changes)


def test_many_small_batches_into_a_large_file_keep_few_runs_and_rewrite_it_once(tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    destination = FileDestination("files", "sms", folder, batch_size=1_000_000)
    phones = [f"+1500{k:07d}" for k in range(5000)]
    reasons = dict.fromkeys(range(len(phones)), "no_consent")
    apply_batches(
        destination,
        ChangeKind.SUPPRESS,
        [
            Change(ChangeKind.SUPPRESS, str(k), p, None, p, "fp", None, ("no_consent",))
            for k, p in enumerate(phones)
        ],
    )
    destination.finish()
    before = os.stat(folder / SUPPRESSIONS_FILE).st_ino
    # a day of one-change batches, lifting and suppressing again a few contacts in turn
    rng = random.Random(5)
    destination = FileDestination("files", "sms", folder, batch_size=1)
    pending = []
    for _ in range(3 * MAX_RUNS):
        k = rng.randrange(20)
        if k in reasons:
            destination.apply(
                ChangeKind.UNSUPPRESS,
                [Change(ChangeKind.UNSUPPRESS, str(k), phones[k], None, phones[k], "fp")],
            )
            del reasons[k]
        else:
            reason = rng.choice(("bounced", "unsubscribed"))
            destination.apply(
                ChangeKind.SUPPRESS,
                [Change(ChangeKind.SUPPRESS, str(k), phones[k], None, phones[k], "fp", None, (reason,))],
            )
            reasons[k] = reason
        pending.append(len(list((folder / ".pending").glob("*.csv"))))
        assert os.stat(folder / SUPPRESSIONS_FILE).st_ino == before  # not rewritten before the run ends
    assert max(pending) <= MAX_RUNS
    destination.finish()
    expected = sorted((str(k), phones[k], reason) for k, reason in reasons.items())
    assert [(r["key"], r["phone"], r["reasons"]) for r in read_csv(folder / SUPPRESSIONS_FILE)] == expected


# --- through the engine ------------------------------------------------------------------
class DiesAtBatch:
    """A file destination whose process is killed when asked for batch ``number``."""

    def __init__(self, inner: FileDestination, number: int) -> None:
        self.inner, self.name, self.number, self.batches = inner, inner.name, number, 0

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def check(self) -> None:
        self.inner.check()

    def apply(self, kind: ChangeKind, batch: Sequence[Change]) -> BatchResult:
        self.batches += 1
        if self.batches > self.number:
            raise SimulatedCrash(f"killed before batch {self.number}")
        return self.inner.apply(kind, batch)


def test_a_sync_killed_between_batches_leaves_files_ahead_of_the_ledger_and_the_next_completes(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path)
    email = FileDestination("email_outbox", "email", tmp_path / "outbox" / "email", batch_size=13)
    sms = FileDestination("sms_outbox", "sms", tmp_path / "outbox" / "sms", batch_size=13)
    world.destinations = {"email_outbox": DiesAtBatch(email, 10), "sms_outbox": sms}  # type: ignore[dict-item]
    with pytest.raises(SimulatedCrash):
        world.sync(allow_large_changes=True)
    # a new process looks at the folder: everything the ledger says was acknowledged is there
    looking = FileDestination("email_outbox", "email", email.folder)
    members = {(r["key"], r["email"]): set(r["tags"].split(";")) for r in looking.members()}
    suppressed = {(r["key"], r["email"]) for r in looking.suppressions()}
    rows = world.ledger_rows("email_outbox")
    assert any(row.tags for row in rows) and any(row.suppressed for row in rows)
    for row in rows:
        assert row.tags <= members.get((row.key, row.address), set()), row
        assert (row.key, row.address) in suppressed or not row.suppressed, row
    world.destinations = {"email_outbox": email, "sms_outbox": sms}  # type: ignore[dict-item]
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    tagged, _ = world.desired("email_outbox")
    assert {
        r["email"]: frozenset(r["tags"].split(";")) for r in read_csv(email.folder / MEMBERS_FILE)
    } == tagged
    assert sorted(p.name for p in email.folder.iterdir()) == [MEMBERS_FILE, SUPPRESSIONS_FILE]


class FinishingMemory(MemoryDestination):
    """A stateful fake that also has work to do when a run ends, and may fail at it."""

    def __init__(self, name: str, fails: bool) -> None:
        super().__init__(name)
        self.fails, self.finished = fails, 0

    def finish(self) -> None:
        self.finished += 1
        if self.fails:
            raise DestinationError(f"{self.name}: cannot write /outbox: No space left on device")


def test_a_destination_that_cannot_finish_is_that_destinations_fatal_problem(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    email, sms = FinishingMemory("email_outbox", fails=True), FinishingMemory("sms_outbox", fails=False)
    world.destinations = {"email_outbox": email, "sms_outbox": sms}
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.DESTINATION_FATAL and summary.status == "destination_fatal"
    assert "No space left on device" in (summary.tallies["email_outbox"].fatal or "")
    assert summary.tallies["sms_outbox"].fatal is None
    assert (email.finished, sms.finished) == (1, 1)


def test_finish_is_called_when_records_failed_too(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    email = FinishingMemory("email_outbox", False)
    world.destinations = {"email_outbox": email}
    tagged, _ = world.desired("email_outbox")
    email.faults.reject.add(next(iter(tagged)))
    summary = world.sync(allow_large_changes=True)
    assert summary.exit_code is ExitCode.RECORD_FAILURES
    assert email.finished == 1
