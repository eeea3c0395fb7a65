"""Scenarios on the demo's two file destinations (7 personas, email and SMS outboxes), each
step a fresh process on one copy of the warehouse, in this order:

1. ``dry_run_first``: ``sync --dry-run`` against an empty state store;
2. ``sync`` ``full``: the first sync, into the CSV files (allowed past the guardrail that
   a first sync's suppressions trip): the state the next steps start from;
3. the day's change: 2 % of customers (``demo_data.mutate_sqlite_demo``);
4. ``baseline_sql``: the floor (:mod:`benchmarks.baseline`) on that data and ledger;
5. ``dry_run_steady``: ``sync --dry-run``;
6. ``sync`` ``2%``: applying that diff (requests must be ceil(changes / max batch) per kind);
7. ``noop``: ``sync`` again with no data change (must make 0 requests).

A file destination's request is one batch written; counts come from the run's JSON summary.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.measure import measure, measure_json
from benchmarks.results import Record
from benchmarks.world import (
    FILE_DESTINATIONS,
    GUARDRAIL,
    batches,
    change_the_day,
    copy_world,
    planned,
    sent,
    sync_command,
)

STEADY = {"baseline_sql", "dry_run_steady", "noop"}  # the scenarios that need the full sync first


def run(customers: int, pristine: Path, work: Path, chosen: set[str]) -> list[Record]:
    if not chosen & (STEADY | {"dry_run_first"}):
        return []  # no copy of the warehouse (2.2 GB at 10M) for nothing
    config = copy_world(pristine, work / "files")
    sync = sync_command(config)
    records = []

    def record(scenario: str, step: str, command: list[str], ok: tuple[int, ...] = (0,)) -> Record:
        measured, summary = measure_json(command, ok=ok)
        result = Record.measured(
            customers, scenario, "files", step, measured, changes=planned(summary), requests=sent(summary),
            detail={"batches": batches(summary), "exit_code": measured.exit_code},
        )  # fmt: skip
        records.append(result)
        return result

    if "dry_run_first" in chosen:
        record("dry_run_first", "", [*sync, "--dry-run"], ok=(0, GUARDRAIL))
    if not chosen & STEADY:
        return records
    record("sync", "full", [*sync, "--allow-large-changes"])
    changed = change_the_day(config.parent, customers)
    if "baseline_sql" in chosen:
        floor = [sys.executable, "-m", "benchmarks.baseline", str(config), *FILE_DESTINATIONS]
        records.append(Record.measured(customers, "baseline_sql", "sqlite", "", measure(floor, quiet=True)))
    if "dry_run_steady" in chosen:
        record("dry_run_steady", "", [*sync, "--dry-run"]).detail["customers_changed"] = changed
    record("sync", "2%", sync).detail["customers_changed"] = changed
    if "noop" in chosen:
        record("noop", "", sync)
    return records
