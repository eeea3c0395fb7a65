"""Scenarios ``apply`` (personasync) and ``peers`` (naive, dlt) against Klaviyo and HubSpot
emulators in a process of their own (:mod:`benchmarks.serve_emulators`: 127.0.0.1, 50 ms
latency, the vendors' rate limits enforced).

Each tool gets a fresh copy of the warehouse and fresh emulators, and runs as a fresh
process twice: ``full`` (everything, the first day), then, after the same 2 % of customers
changed, ``2%``; personasync then runs once more with no change (``noop``). Requests and
429s are the emulators' counts (checks included); the requests/s of each rate-limit group
is counted while the client was busy with that group (the gaps between two of its
requests in a row: a sync applies one destination after another, and a poll's wait
counts), against the rate of the client's token bucket for that group (the configured
ceiling; peers have none, it is the same figure for comparison).
After ``2%`` what each account holds is compared with what personasync decides each
destination should hold (:func:`benchmarks.world.desired`).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from benchmarks.measure import Measurement, measure_json
from benchmarks.results import Record
from benchmarks.serve_emulators import Emulators
from benchmarks.world import (
    AS_OF,
    HTTP_CONFIG,
    HTTP_DESTINATIONS,
    HUBSPOT_PER_TEN_SECONDS,
    batches,
    change_the_day,
    compare,
    copy_world,
    desired,
    http_env,
    hubspot_options,
    load_http_config,
    planned,
    sync_command,
)
from connectors.destinations import klaviyo
from connectors.http import bucket_for_windows, window_rate

CEILINGS: dict[tuple[str, str], tuple[float, int]] = {  # (vendor, emulator group) -> the client's bucket
    ("klaviyo", "bulk-import-jobs"): window_rate(*klaviyo.IMPORT_WINDOW),
    ("klaviyo", "general"): window_rate(*klaviyo.GENERAL_WINDOW),
    ("hubspot", "ten-secondly"): bucket_for_windows({10.0: HUBSPOT_PER_TEN_SECONDS}),
}
Run = Callable[[Path, str, Mapping[str, str]], tuple[Measurement, dict[str, Any]]]


def personasync(config: Path, step: str, env: Mapping[str, str]) -> tuple[Measurement, dict[str, Any]]:
    flags = ("--allow-large-changes",) if step == "full" else ()  # a first sync trips the guardrails
    measured, summary = measure_json(
        sync_command(config, *flags, destinations=HTTP_DESTINATIONS), ok=(0, 1), env=env
    )
    return measured, {
        "changes": planned(summary),
        "batches": batches(summary),
        "exit_code": measured.exit_code,
    }


def peer(module: str) -> Run:
    def run(config: Path, step: str, env: Mapping[str, str]) -> tuple[Measurement, dict[str, Any]]:
        command = [
            sys.executable,
            "-m",
            module,
            "--warehouse",
            str(config.parent / "warehouse.db"),
            "--as-of",
            AS_OF,
        ]
        if module.endswith("dlt_sink"):
            command += ["--pipelines-dir", str(config.parent / "dlt")]
        return measure_json(command, env=env)

    return run


def tools(chosen: set[str]) -> dict[str, Run | str]:
    """Tool -> how to run one day of it, or why it cannot run here."""
    found: dict[str, Run | str] = {}
    if "apply" in chosen:
        found["personasync"] = personasync
    if "peers" in chosen:
        found["naive"] = peer("benchmarks.peers.naive")
        dlt_there = importlib.util.find_spec("dlt") is not None
        found["dlt"] = (
            peer("benchmarks.peers.dlt_sink")
            if dlt_there
            else "dlt is not installed (pip install -e '.[bench]')"
        )
    return found


def vendor_detail(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The emulators' counts, with each rate-limit group's achieved rate (while the client
    was busy with it, see :class:`benchmarks.emulated.GroupCount`) against its ceiling."""
    detail = {}
    for vendor, counts in stats.items():
        groups = {}
        for group, seen in counts["groups"].items():
            ceiling = CEILINGS.get((vendor, group), (None, 0))[0]
            achieved = seen["intervals"] / seen["busy_s"] if seen["busy_s"] > 0 else None
            groups[group] = {
                **seen,
                "req_per_s": None if achieved is None else round(achieved, 2),
                "ceiling_per_s": None if ceiling is None else round(ceiling, 3),
                "pct_of_ceiling": round(100 * achieved / ceiling, 1) if achieved and ceiling else None,
            }
        detail[vendor] = {**counts, "groups": groups}
    return detail


def run(customers: int, pristine: Path, work: Path, chosen: set[str]) -> list[Record]:
    reference = copy_world(pristine, work / "http-desired", extra_config=HTTP_CONFIG)
    change_the_day(reference.parent, customers)
    config = load_http_config(reference)
    wanted = desired(config, HTTP_DESTINATIONS)
    records = []
    for tool, how in tools(chosen).items():
        scenario = "apply" if tool == "personasync" else "peers"
        if isinstance(how, str):
            records.append(Record(customers, scenario, tool, note=how))
            continue
        world = copy_world(pristine, work / f"http-{tool}", extra_config=HTTP_CONFIG)
        with Emulators(hubspot_options=hubspot_options(config)) as vendors:
            steps = ("full", "2%", "noop") if tool == "personasync" and "noop" in chosen else ("full", "2%")
            for step in steps:
                if step == "2%":
                    changed = change_the_day(world.parent, customers)
                record = one_day(Record(customers, scenario, tool, step), how, world, vendors)
                if step == "2%":
                    held = vendors.state()
                    record.detail["customers_changed"] = changed
                    record.detail["end_state"] = {n: compare(held[n], wanted[n]) for n in HTTP_DESTINATIONS}
                records.append(record)
    return records


def one_day(record: Record, how: Run, world: Path, vendors: Emulators) -> Record:
    """Run one step of a tool against fresh counters; the record, filled in."""
    vendors.reset()
    measured, detail = how(world, record.step, http_env(vendors.urls))
    stats = vendors.reset()
    record.wall_s, record.cpu_s, record.peak_rss_mb = measured.wall_s, measured.cpu_s, measured.peak_rss_mb
    record.requests = sum(s["requests"] for s in stats.values())
    record.throttled = sum(s["throttled"] for s in stats.values())
    record.changes = detail.pop("changes", None)
    record.detail = {**detail, "vendors": vendor_detail(stats)}
    return record
