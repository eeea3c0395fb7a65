"""How long `personasync sync --dry-run` takes, first and in the steady state, against the
bare SQL of the assignment plus a hash-join diff.

    python -m benchmarks.sync --customers 100000,1000000

For each size, in a scratch folder: build the demo warehouse (two file destinations, 7
personas), then in fresh processes time

1. ``bare_sql``: the resolver SELECT joined (hash join) to the ledger table of the state
   store, every row fetched with sqlite3: the floor;
2. ``dry_run_first``: ``sync --dry-run`` against an empty state store;
3. ``sync_first``: the full first sync into the CSV files (allowed past the guardrail);
4. ``dry_run_steady``: after 2 % of customers changed (``demo_data.mutate_sqlite_demo``);
5. ``sync_steady``: applying that diff;
6. ``noop``: ``sync`` again with no data change (must make 0 requests).

Peak RSS is that of the largest process in the tree (wait4 rusage).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.measure import Measurement, measure, sizes_from_command_line
from benchmarks.resolve import AS_OF, fetch_all, resolver_sql

GUARDRAIL = 3


def bare_sql(config_path: str) -> None:
    """The resolver query hash-joined to the ledger, fetched with sqlite3: the floor."""
    folder = Path(config_path).parent
    conn = sqlite3.connect(f"file:{folder / 'warehouse.db'}?mode=ro", uri=True)
    conn.execute(f"ATTACH DATABASE 'file:{folder / 'personasync-state.db'}?mode=ro' AS state")
    fetch_all(
        conn,
        f"SELECT r.*, m.tags, m.suppressed FROM ({resolver_sql(config_path)}) AS r "
        "LEFT JOIN state.memberships AS m ON m.key = r.k AND m.destination = 'email_outbox'",
    )


def main() -> None:
    columns = "customers,scenario,wall_s,cpu_s,peak_rss_mb,x_bare_sql,requests"
    for size in sizes_from_command_line(__doc__, bare_sql, columns):
        with tempfile.TemporaryDirectory() as scratch:
            run_size(size, Path(scratch) / "demo")


def run_size(size: int, folder: Path) -> None:
    cli = [sys.executable, "-m", "sync.cli_main"]
    subprocess.run(
        [*cli, "demo", "--dir", str(folder), "--customers", str(size), "--as-of", AS_OF],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for leftover in [*folder.glob("personasync-state.db*"), folder / "outbox"]:
        if leftover.is_dir():
            subprocess.run(["rm", "-rf", str(leftover)], check=True)
        else:
            leftover.unlink()
    config = str(folder / "personasync.toml")
    sync = [*cli, "sync", "--config", config, "--as-of", AS_OF, "--quiet", "--format", "json"]
    results: list[tuple[str, Measurement, int | None]] = []
    results.append(("dry_run_first", measure([*sync, "--dry-run"], quiet=True, ok=(0, GUARDRAIL)), None))
    results.append(("sync_first", *timed_sync([*sync, "--allow-large-changes"])))
    floor = measure([sys.executable, "-m", "benchmarks.sync", "--bare-sql", config])
    from connectors.demo_data import mutate_sqlite_demo

    mutate_sqlite_demo(folder / "warehouse.db", customers=size // 50)
    results.append(("dry_run_steady", measure([*sync, "--dry-run"], quiet=True), None))
    results.append(("sync_steady", *timed_sync(sync)))
    results.append(("noop", *timed_sync(sync)))
    print(f"{size},bare_sql,{floor.wall_s},{floor.cpu_s},{floor.peak_rss_mb},1.0,")
    for label, result, requests in results:
        ratio = result.wall_s / floor.wall_s
        shown = "" if requests is None else requests
        print(f"{size},{label},{result.wall_s},{result.cpu_s},{result.peak_rss_mb},{ratio:.1f},{shown}")


def timed_sync(command: list[str]) -> tuple[Measurement, int]:
    """Measure a real sync; the requests it sent, read from its JSON summary."""
    with tempfile.TemporaryFile("w+") as out:
        measurement = measure(command, stdout=out)
        out.seek(0)
        summary = json.load(out)
    return measurement, sum((d["result"] or {}).get("requests", 0) for d in summary["destinations"])


if __name__ == "__main__":
    main()
