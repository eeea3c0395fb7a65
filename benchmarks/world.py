"""The demo world a benchmark runs in: the warehouse `personasync demo` builds, copies of it
(each scenario that writes state gets its own folder), the day's 2 % change, the CLI
commands, and the state each destination should end up holding."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.measure import Measurement, measure
from benchmarks.serve_emulators import HUBSPOT_TOKEN, KLAVIYO_KEY, SUBSCRIPTION

if TYPE_CHECKING:
    from sync.config import AppConfig

AS_OF = "2026-11-22"
CLOCK = datetime.fromisoformat(AS_OF).replace(tzinfo=timezone.utc)
CLI = [sys.executable, "-m", "sync.cli_main"]
CHANGED_SHARE = 0.02  # of customers, on the "2 % change" day
GUARDRAIL = 3  # sync's exit code when a guardrail blocks (a first dry run's usual answer)
FILE_DESTINATIONS = ("email_outbox", "sms_outbox")
HTTP_DESTINATIONS = ("klaviyo", "hubspot")
HUBSPOT_PER_TEN_SECONDS = 190  # Professional/Enterprise: what the emulator enforces by default
# The two vendor destinations, their credentials and URLs from the environment (http_env()).
HTTP_CONFIG = f"""
[[destinations]]
type = "klaviyo"
name = "klaviyo"
channel = "email"
api_key = "${{BENCH_KLAVIYO_KEY}}"
base_url = "${{BENCH_KLAVIYO_URL}}"

[[destinations]]
type = "hubspot"
name = "hubspot"
channel = "crm"
access_token = "${{BENCH_HUBSPOT_TOKEN}}"
subscription_id = "{SUBSCRIPTION}"
requests_per_ten_seconds = {HUBSPOT_PER_TEN_SECONDS}
base_url = "${{BENCH_HUBSPOT_URL}}"
"""


def http_env(urls: Mapping[str, str]) -> dict[str, str]:
    """What the HTTP config reads from the environment, for emulators at ``urls``."""
    return {
        "BENCH_KLAVIYO_KEY": KLAVIYO_KEY,
        "BENCH_KLAVIYO_URL": urls["klaviyo"],
        "BENCH_HUBSPOT_TOKEN": HUBSPOT_TOKEN,
        "BENCH_HUBSPOT_URL": urls["hubspot"],
    }


def generate(customers: int, folder: Path) -> Measurement:
    """`personasync demo` in a fresh process (it builds the warehouse, reusing one already
    there for the same size, previews and syncs into the file destinations), then the state
    it left behind removed, so each world starts empty."""
    command = [*CLI, "demo", "--dir", str(folder), "--customers", str(customers), "--as-of", AS_OF]
    measured = measure(command, quiet=True)
    empty_the_state(folder)
    return measured


def reuse(folder: Path) -> None:
    """Take a world an earlier run (or `personasync demo --dir`) left in ``folder`` as it is,
    its state removed; unlike :func:`generate`, nothing is measured or synced."""
    missing = [name for name in ("warehouse.db", "personasync.toml") if not (folder / name).is_file()]
    if missing:
        raise SystemExit(
            f"--reuse-world: {folder} has no {' or '.join(missing)}; build it with "
            f"`personasync demo --dir {folder} --customers N --as-of {AS_OF}`"
        )
    empty_the_state(folder)


def empty_the_state(folder: Path) -> None:
    for leftover in folder.glob("personasync-state.db*"):
        leftover.unlink()
    shutil.rmtree(folder / "outbox", ignore_errors=True)


def copy_world(
    pristine: Path, folder: Path, *, warehouse_url: str | None = None, extra_config: str = ""
) -> Path:
    """A new folder with the pristine demo config (``extra_config`` appended) and a copy of
    its warehouse, or the config only, reading the warehouse at ``warehouse_url``; the
    config's path. The state store starts empty beside the config."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    text = (pristine / "personasync.toml").read_text()
    if warehouse_url is None:
        shutil.copyfile(pristine / "warehouse.db", folder / "warehouse.db")
    else:
        text = text.replace('url = "sqlite:///warehouse.db"', f'url = "{warehouse_url}"', 1)
    config = folder / "personasync.toml"
    config.write_text(text + extra_config)
    return config


def change_the_day(folder: Path, customers: int) -> int:
    """Change 2 % of customers (the same ones in every copy of a warehouse); how many."""
    from connectors.demo_data import mutate_sqlite_demo

    return mutate_sqlite_demo(folder / "warehouse.db", customers=round(customers * CHANGED_SHARE)).customers


def sync_command(config: Path, *flags: str, destinations: tuple[str, ...] = ()) -> list[str]:
    chosen = [arg for name in destinations for arg in ("--destination", name)]
    return [
        *CLI,
        "sync",
        "--config",
        str(config),
        "--as-of",
        AS_OF,
        "--quiet",
        "--format",
        "json",
        *chosen,
        *flags,
    ]


def planned(summary: dict[str, Any]) -> int:
    """Changes the run planned, over every destination."""
    return sum(sum(d["changes"].values()) for d in summary["destinations"])


def batches(summary: dict[str, Any]) -> int:
    """ceil(changes / max batch) per kind, summed over kinds and destinations: the plan's estimate."""
    return sum(sum(d["estimate"]["requests"].values()) for d in summary["destinations"])


def sent(summary: dict[str, Any]) -> int:
    """Requests the run counted (the destinations' own count, excluding their checks)."""
    return sum((d.get("result") or {}).get("requests", 0) for d in summary["destinations"])


Held = dict[str, Any]  # {"tags": {address: [tags]}, "suppressed": [addresses]}


def load_http_config(config_path: Path) -> AppConfig:
    """A config with the HTTP destinations, loaded in this process (its credentials and URLs
    are placeholders here: this process only resolves, it never sends)."""
    from sync.config_loader import load_config

    placeholders = http_env({"klaviyo": "http://127.0.0.1:9", "hubspot": "http://127.0.0.1:9"})
    saved = {name: os.environ.get(name) for name in placeholders}
    os.environ.update(placeholders)
    try:
        return load_config(config_path)
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def hubspot_options(config: AppConfig) -> list[str]:
    """The tags the HubSpot destination may write: the options its property needs."""
    from sync.destinations import destination_tags

    hubspot = next(d for d in config.destinations if d.name == "hubspot")
    return sorted(destination_tags(hubspot, config.personas))


def desired(config: AppConfig, destinations: tuple[str, ...]) -> dict[str, Held]:
    """What each destination should hold, as personasync decides it (in this process: not
    timed), in the shape :meth:`Emulators.state` reports what a vendor holds. Give it a
    world of its own: resolving fills the identity cache of the config's state store."""
    from sync import app
    from sync.membership import DestinationSpec, MembershipBuilder

    specs = [
        DestinationSpec(d.name, d.channel, d.naming()) for d in config.destinations if d.name in destinations
    ]
    builders = [MembershipBuilder(spec) for spec in specs]
    held: dict[str, Held] = {spec.name: {"tags": {}, "suppressed": []} for spec in specs}
    with app.open_resolution(config, CLOCK) as run:
        for assignment in run.assignments():
            for spec, build in zip(specs, builders, strict=True):
                wanted = build(assignment)
                if wanted.address is None:
                    continue
                if wanted.tags:
                    held[spec.name]["tags"][wanted.address] = sorted(wanted.tags)
                if wanted.suppressed:
                    held[spec.name]["suppressed"].append(wanted.address)
    return held


def compare(held: Held, wanted: Held) -> dict[str, int]:
    """How far what a vendor holds is from what it should: addresses whose tags differ
    (missing, extra or other tags), desired suppressions missing, and suppressions beyond
    the desired ones (not an error: a suppression stays on an address a customer left, and
    only the destination's own reasons lift others)."""
    tags, should = held["tags"], wanted["tags"]
    wrong = sum(
        1
        for address in tags.keys() | should.keys()
        if sorted(tags.get(address, [])) != should.get(address, [])
    )
    suppressed, should_suppress = set(held["suppressed"]), set(wanted["suppressed"])
    return {
        "addresses_desired": len(should) + len(should_suppress - should.keys()),
        "wrong_tags": wrong,
        "missing_suppressions": len(should_suppress - suppressed),
        "extra_suppressions": len(suppressed - should_suppress),
    }
