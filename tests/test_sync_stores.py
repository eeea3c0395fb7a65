"""The ledger on PostgreSQL as well as SQLite, and the file destination as a real destination."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from connectors.demo_data import mutate_sqlite_demo
from connectors.destinations.file import FileDestination
from sync.exit_codes import ExitCode
from sync.ledger import Ledger
from sync.state import migrate
from tests.fakes.memory_destination import SimulatedCrash
from tests.sync_world import World, assert_in_sync, make_world


@pytest.mark.postgres
def test_postgres_state_store_syncs_resumes_and_reruns_to_nothing(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    world = make_world(tmp_path, state_url=postgres_schema_url)
    world.destinations["email_outbox"].faults.crash_after_batch = 2
    with pytest.raises(SimulatedCrash):
        world.sync(allow_large_changes=True)
    world.destinations["email_outbox"].faults.crash_after_batch = None
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    assert_in_sync(world)
    mutate_sqlite_demo(world.warehouse)
    assert world.sync().exit_code is ExitCode.OK
    assert_in_sync(world)
    calls = world.destinations["email_outbox"].batches
    assert world.sync().exit_code is ExitCode.OK
    assert world.destinations["email_outbox"].batches == calls


def test_a_run_that_died_is_marked_interrupted_by_the_next(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    engine = world.state_engine()
    try:
        migrate(engine)
        ledger = Ledger(engine)
        killed = ledger.start_run("sync", "host-a", 123)  # never finished: the process was killed
        ledger.start_run("sync", "host-b", 456)
        assert ledger.run(killed) is not None and ledger.run(killed).status == "interrupted"  # type: ignore[union-attr]
    finally:
        engine.dispose()


def file_world(tmp_path: Path, batch_size: int) -> World:
    world = make_world(tmp_path)
    world.destinations = {
        name: FileDestination(name, channel, tmp_path / "outbox" / name, batch_size)  # type: ignore[misc]
        for name, channel in (("email_outbox", "email"), ("sms_outbox", "sms"))
    }
    return world


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("batch_size", [13, 100_000])
def test_the_file_destination_holds_exactly_the_desired_state(tmp_path: Path, batch_size: int) -> None:
    world = file_world(tmp_path, batch_size)
    assert world.sync(allow_large_changes=True).exit_code is ExitCode.OK
    mutate_sqlite_demo(world.warehouse)
    assert world.sync().exit_code is ExitCode.OK
    for name, column in (("email_outbox", "email"), ("sms_outbox", "phone")):
        folder = tmp_path / "outbox" / name
        tagged, suppressed = world.desired(name)
        members = read_csv(folder / "members.csv")
        assert {row[column]: frozenset(row["tags"].split(";")) for row in members} == tagged
        assert [(r["key"], r[column]) for r in members] == sorted((r["key"], r[column]) for r in members)
        assert {row[column] for row in read_csv(folder / "suppressions.csv")} >= suppressed
        assert sorted(p.name for p in folder.iterdir()) == ["members.csv", "suppressions.csv"]


def test_the_file_destination_check_names_an_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    destination = FileDestination("outbox", "email", blocker / "outbox")
    with pytest.raises(Exception, match="cannot create or write"):
        destination.check()
