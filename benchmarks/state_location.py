"""Scenario ``state_location``: the steady day on a PostgreSQL and a DuckDB warehouse, with the
state store beside it (the default: a SQLite file, so every customer is planned in
personasync) and inside it (``[state] location = "warehouse"``: customers verified in sync
stay in the warehouse, see docs/architecture.md).

Per engine and location, on a world of its own: the first sync into the file destinations,
the day's 2 % change (made on the world's SQLite copy, then loaded into the engine's tables
again), and the measured ``sync --dry-run``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from benchmarks import warehouses
from benchmarks.measure import measure_json
from benchmarks.results import Record
from benchmarks.world import GUARDRAIL, change_the_day, copy_world, planned, sync_command

ENGINES = ("postgres", "duckdb")
LOCATIONS = ("separate", "warehouse")
IN_WAREHOUSE = """[state]
location = "warehouse"
schema = "{schema}"
"""

Warehouse = tuple[str, Callable[[Path], None]]  # its URL, and how to load a SQLite copy into it again


@contextmanager
def _duckdb(sqlite_copy: Path, _state_schema: str) -> Iterator[Warehouse]:
    target = sqlite_copy.with_suffix(".duckdb")
    url = warehouses.to_duckdb(sqlite_copy, target)

    def refill(changed: Path) -> None:
        warehouses.to_duckdb(changed, target, refill=True)

    yield url, refill


def _postgres(admin: str) -> Callable[[Path, str], AbstractContextManager[Warehouse]]:
    @contextmanager
    def opened(sqlite_copy: Path, state_schema: str) -> Iterator[Warehouse]:
        with warehouses.in_postgres(sqlite_copy, admin, drop=(state_schema,)) as url:

            def refill(changed: Path) -> None:
                warehouses.refill_postgres(changed, url)

            yield url, refill

    return opened


def run(
    customers: int,
    pristine: Path,
    work: Path,
    engines: tuple[str, ...] = ENGINES,
    locations: tuple[str, ...] = LOCATIONS,
) -> list[Record]:
    records: list[Record] = []
    admin = warehouses.postgres_url()
    for engine in engines:
        for location in locations:
            subject = f"{engine}, state {location}"
            if engine == "postgres" and admin is None:
                note = f"no PostgreSQL: set {warehouses.POSTGRES_ENV[0]} to a server's URL"
                records.append(Record(customers, "state_location", subject, note=note))
                continue
            state_schema = f"personasync_state_{uuid.uuid4().hex[:8]}"
            folder = work / f"state-{engine}-{location}"
            copy_world(pristine, folder)
            opened = _postgres(admin) if engine == "postgres" and admin else _duckdb
            with opened(folder / "warehouse.db", state_schema) as (url, refill):
                config = _config(pristine, folder / "world", url, location, state_schema)
                records += _steady_day(customers, subject, config, folder, refill)
    return records


def _config(pristine: Path, folder: Path, url: str, location: str, state_schema: str) -> Path:
    config = copy_world(pristine, folder, warehouse_url=url)
    if location == "warehouse":
        text = config.read_text()
        start, end = text.index("[state]"), text.index("[source]")
        config.write_text(text[:start] + IN_WAREHOUSE.format(schema=state_schema) + "\n" + text[end:])
    return config


def _steady_day(
    customers: int, subject: str, config: Path, sqlite_folder: Path, refill: Callable[[Path], None]
) -> list[Record]:
    sync = sync_command(config)
    records = []
    for step, flags, ok in (
        ("full", ["--allow-large-changes"], (0,)),
        ("dry_run_steady", ["--dry-run"], (0, GUARDRAIL)),
    ):
        if step == "dry_run_steady":
            changed = change_the_day(sqlite_folder, customers)
            refill(sqlite_folder / "warehouse.db")
        measured, summary = measure_json([*sync, *flags], ok=ok)
        record = Record.measured(
            customers, "state_location", subject, step, measured, changes=planned(summary),
            detail={"skipped_verified": summary.get("skipped_verified"), "exit_code": measured.exit_code},
        )  # fmt: skip
        if step == "dry_run_steady":
            record.detail["customers_changed"] = changed
        records.append(record)
    return records
