"""How long the persona resolver takes, against the bare SQL query it issues.

    python -m benchmarks.resolve --customers 100000,1000000

For each size: build the demo warehouse (reused if present) in a scratch folder, then in
fresh processes time (1) the bare resolver SELECT fetched with sqlite3, (2) `personasync
personas preview` with an empty identity cache (first run), (3) the same with the cache
warm and 2 % of customers' phones and emails changed (steady state). Peak RSS is that of
the largest process in the tree (the CLI or one of its phone workers; wait4 rusage).
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.measure import Measurement, measure, sizes_from_command_line

AS_OF = "2026-11-22"


def resolver_sql(config_path: str) -> str:
    """The resolver's SELECT for the demo config, as plain SQLite SQL with its values inlined."""
    from connectors.warehouse import create_warehouse_engine, describe_table
    from personas.query import build_resolver_query
    from sync.config import database_url
    from sync.config_loader import load_config

    config = load_config(Path(config_path))
    engine = create_warehouse_engine(database_url(config.warehouse.url))
    with engine.connect() as conn:
        kinds = describe_table(conn, "customers").kinds
    clock = datetime.fromisoformat(AS_OF).replace(tzinfo=timezone.utc)
    query = build_resolver_query(config.resolver_settings(), kinds, clock)
    return str(query.statement.compile(engine, compile_kwargs={"literal_binds": True}))


def fetch_all(conn: sqlite3.Connection, sql: str) -> None:
    cursor = conn.execute(sql)
    while cursor.fetchmany(10_000):
        pass


def bare_sql(config_path: str) -> None:
    """Fetch every row of the resolver query with sqlite3 and nothing else: the floor."""
    database = Path(config_path).parent / "warehouse.db"
    fetch_all(sqlite3.connect(f"file:{database}?mode=ro", uri=True), resolver_sql(config_path))


def mutate(warehouse: Path, share: float) -> None:
    """Change the phone and email of ``share`` of customers, as a day of updates would."""
    with sqlite3.connect(warehouse) as conn:
        conn.execute(
            "UPDATE customers SET phone = '+1 415 555 ' || substr('0000' || (customer_id % 10000), -4), "
            "email = 'changed.' || customer_id || '@example.net' WHERE customer_id % ? = 0",
            (round(1 / share),),
        )


def main() -> None:
    columns = "customers,scenario,wall_s,cpu_s,peak_rss_mb,x_bare_sql"
    for size in sizes_from_command_line(__doc__, bare_sql, columns):
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "demo"
            cli = [sys.executable, "-m", "sync.cli_main"]
            measure(
                [*cli, "demo", "--dir", str(folder), "--customers", str(size), "--as-of", AS_OF], quiet=True
            )
            (folder / "personasync-state.db").unlink(missing_ok=True)
            config = str(folder / "personasync.toml")
            preview = [*cli, "personas", "preview", "--config", config, "--as-of", AS_OF, "--format", "json"]
            floor = measure([sys.executable, "-m", "benchmarks.resolve", "--bare-sql", config])
            for label, result in (
                ("bare_sql", floor),
                ("resolve_first", measure_first(preview, folder)),
                ("resolve_steady", measure_steady(preview, folder)),
            ):
                ratio = result.wall_s / floor.wall_s
                print(f"{size},{label},{result.wall_s},{result.cpu_s},{result.peak_rss_mb},{ratio:.1f}")


def measure_first(preview: list[str], folder: Path) -> Measurement:
    for leftover in folder.glob("personasync-state.db*"):
        leftover.unlink()
    return measure(preview, quiet=True)


def measure_steady(preview: list[str], folder: Path) -> Measurement:
    mutate(folder / "warehouse.db", 0.02)
    return measure(preview, quiet=True)


if __name__ == "__main__":
    main()
