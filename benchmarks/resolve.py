"""Scenario ``resolve``: `personasync personas preview` on every customer, in a fresh process
with an empty state store (so every phone is parsed: the identity cache is cold), on SQLite
and, when available, on DuckDB (always: it is an extra of the project) and PostgreSQL (when
``PERSONASYNC_BENCH_POSTGRES_URL`` names a server). Peak RSS is that of the largest process
in the tree (the CLI or one of its phone workers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from benchmarks import warehouses
from benchmarks.measure import measure
from benchmarks.results import Record
from benchmarks.world import AS_OF, CLI, copy_world


def preview(config: Path) -> list[str]:
    return [*CLI, "personas", "preview", "--config", str(config), "--as-of", AS_OF, "--format", "json"]


@contextmanager
def _duckdb(pristine: Path, folder: Path) -> Iterator[str]:
    folder.mkdir(parents=True, exist_ok=True)
    yield warehouses.to_duckdb(pristine / "warehouse.db", folder / "warehouse.duckdb")


def engines(pristine: Path, folder: Path) -> dict[str, Callable[[], AbstractContextManager[str]] | str]:
    """Engine name -> a context giving the warehouse URL there, or why it cannot run."""
    found: dict[str, Callable[[], AbstractContextManager[str]] | str] = {
        "sqlite": lambda: nullcontext(f"sqlite:///{pristine / 'warehouse.db'}")
    }
    try:
        import duckdb_engine  # noqa: F401

        found["duckdb"] = lambda: _duckdb(pristine, folder / "duckdb")
    except ImportError:
        found["duckdb"] = "the duckdb extra is not installed (pip install -e '.[duckdb]')"
    admin = warehouses.postgres_url()
    if admin is None:
        found["postgres"] = f"no PostgreSQL: set {warehouses.POSTGRES_ENV[0]} to a server's URL"
    else:
        found["postgres"] = lambda: warehouses.in_postgres(pristine / "warehouse.db", admin)
    return found


def run(customers: int, pristine: Path, work: Path) -> list[Record]:
    records = []
    for engine, source in engines(pristine, work).items():
        if isinstance(source, str):
            records.append(Record(customers, "resolve", engine, note=source))
            continue
        with source() as url:
            config = copy_world(pristine, work / f"resolve-{engine}", warehouse_url=url)
            measured = measure(preview(config), quiet=True)
        records.append(Record.measured(customers, "resolve", engine, "", measured))
    return records
