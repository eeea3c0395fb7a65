"""The floor every scenario is divided by: the resolver's SELECT (the persona CASE, consent,
suppression joins) joined to each destination's ledger rows, every row fetched with
sqlite3 and nothing else done with it. Run in a fresh process by the runner:

    python -m benchmarks.baseline CONFIG DESTINATION [DESTINATION ...]

SQLite has no hash join: the ledger side is its primary key (destination, key, address),
so each customer costs one index lookup per destination, as a diff by key would.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from benchmarks.world import CLOCK


def resolver_sql(config_path: Path) -> str:
    """The resolver's SELECT for a config, as plain SQL with its values inlined."""
    from connectors.warehouse import create_warehouse_engine, describe_table
    from personas.query import build_resolver_query
    from sync.config import database_url
    from sync.config_loader import load_config

    config = load_config(config_path)
    engine = create_warehouse_engine(database_url(config.warehouse.url))
    with engine.connect() as conn:
        kinds = describe_table(conn, "customers").kinds
    query = build_resolver_query(config.resolver_settings(), kinds, CLOCK)
    return str(query.statement.compile(engine, compile_kwargs={"literal_binds": True}))


def floor_sql(config_path: Path, destinations: list[str]) -> str:
    """The resolver's SELECT left-joined to the ledger rows of each destination."""
    joins = "".join(
        f" LEFT JOIN state.memberships AS m{i} ON m{i}.destination = '{name}' AND m{i}.key = r.k"
        for i, name in enumerate(destinations)
    )
    held = "".join(f", m{i}.tags, m{i}.suppressed" for i in range(len(destinations)))
    return f"SELECT r.*{held} FROM ({resolver_sql(config_path)}) AS r{joins}"


def run(config_path: Path, destinations: list[str]) -> int:
    """Fetch every row of the floor query; how many there were."""
    folder = config_path.parent
    conn = sqlite3.connect(f"file:{folder / 'warehouse.db'}?mode=ro", uri=True)
    conn.execute(f"ATTACH DATABASE 'file:{folder / 'personasync-state.db'}?mode=ro' AS state")
    cursor = conn.execute(floor_sql(config_path, destinations))
    rows = 0
    while chunk := cursor.fetchmany(10_000):
        rows += len(chunk)
    return rows


if __name__ == "__main__":
    print(run(Path(sys.argv[1]), sys.argv[2:]))
