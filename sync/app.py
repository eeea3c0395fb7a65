"""The Python API: what the CLI does, as functions that return values instead of printing.

This module is a composition root: it is the one place in ``sync/`` (with ``cli.py``)
that picks concrete connectors. Orchestrators (Airflow, Dagster) can call it directly.
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from connectors import demo_data
from connectors.warehouse import (
    WarehouseCatalog,
    WarehouseError,
    check_connection,
    create_warehouse_engine,
)
from sync.config import AppConfig, database_url, display_url
from sync.config_loader import load_config
from sync.validate import Check, validate_against

EXAMPLE_CONFIG_NAME = "config.example.toml"
DEMO_DIR_PREFIX = "personasync-demo/"  # how config.example.toml refers to the demo folder


def validate_config(config: AppConfig) -> list[Check]:
    """Connect to the warehouse read-only and check every table and column the config names."""
    shown_url = display_url(config.warehouse.url)
    try:
        engine = create_warehouse_engine(database_url(config.warehouse.url), read_only=True)
    except WarehouseError as exc:
        return [Check(False, "warehouse.url", f"{shown_url}: {exc}")]
    try:
        check_connection(engine)
        checks = [Check(True, "warehouse", f"{shown_url} (read-only)")]
        with engine.connect() as conn:
            checks.extend(validate_against(config, WarehouseCatalog(conn), datetime.now(timezone.utc)))
    except WarehouseError as exc:
        return [Check(False, "warehouse.url", f"{shown_url}: {exc}")]
    finally:
        engine.dispose()
    checks.extend(_state_checks(config))
    checks.extend(_destination_checks(config))
    return checks


def _destination_checks(config: AppConfig) -> list[Check]:
    checks = []
    for i, destination in enumerate(config.destinations):
        folder = Path(destination.path)
        ancestor = next(p for p in (folder, *folder.parents) if p.exists())
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
            checks.append(Check(False, f"destinations[{i}].path", f"cannot create or write {folder}"))
        else:
            checks.append(
                Check(
                    True,
                    f"destinations[{i}]",
                    f"{destination.name} ({destination.type}, {destination.channel}) -> {folder}",
                )
            )
    return checks


def _state_checks(config: AppConfig) -> list[Check]:
    assert config.state.url is not None  # the loader fills in the default
    url = database_url(config.state.url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        folder = Path(url.database).parent
        if not folder.is_dir():
            return [Check(False, "state.url", f"folder {folder} for the state file does not exist")]
    return [Check(True, "state", display_url(config.state.url))]


def example_config_text() -> str:
    """The text of ``config.example.toml``: packaged in the wheel, or the source checkout's copy."""
    packaged = importlib.resources.files("sync") / "_data" / EXAMPLE_CONFIG_NAME
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parent.parent / EXAMPLE_CONFIG_NAME).read_text(encoding="utf-8")


@dataclass(frozen=True)
class DemoResult:
    directory: Path
    warehouse: Path
    config_path: Path
    spec: demo_data.DemoSpec
    generated: bool  # False when an identical warehouse was already there
    checks: list[Check]


def build_demo(directory: Path, *, customers: int, seed: int, as_of: date, force: bool = False) -> DemoResult:
    """Create (or reuse) the demo warehouse in ``directory``, write its config, validate it.

    An existing warehouse generated from the same spec is reused, so rerunning the demo
    is quick and keeps any sync state consistent with the data.
    """
    directory.mkdir(parents=True, exist_ok=True)
    warehouse = directory / "warehouse.db"
    spec = demo_data.DemoSpec(customers=customers, seed=seed, as_of=as_of)
    generated = force or demo_data.existing_demo_spec(warehouse) != spec
    if generated:
        demo_data.write_sqlite_demo(warehouse, spec)
    config_path = directory / "personasync.toml"
    config_path.write_text(demo_config_text(), encoding="utf-8")
    config = load_config(config_path)
    return DemoResult(directory, warehouse, config_path, spec, generated, validate_config(config))


def demo_config_text() -> str:
    """``config.example.toml`` rewritten to live inside the demo folder."""
    header = "# Written by `personasync demo` from config.example.toml.\n"
    return header + example_config_text().replace(DEMO_DIR_PREFIX, "")
