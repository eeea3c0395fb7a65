"""``python -m benchmarks run``: for each size, build the demo warehouse with `personasync
demo`, run the chosen scenarios, each step a fresh measured process, judge the targets,
save the records and print them."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import apply, report, resolve, results, state_location, sync, targets
from benchmarks.results import Record
from benchmarks.world import generate, reuse

SCENARIOS = (
    "resolve",
    "baseline_sql",
    "dry_run_first",
    "dry_run_steady",
    "noop",
    "state_location",
    "apply",
    "peers",
)
RATE_BOUND = ("apply", "peers")


def run_size(
    customers: int,
    work: Path,
    chosen: set[str],
    apply_up_to: int,
    *,
    reuse_world: bool = False,
    engines: tuple[str, ...] = state_location.ENGINES,
    locations: tuple[str, ...] = state_location.LOCATIONS,
) -> list[Record]:
    """Every chosen scenario at one size (in ``work``, left behind for a look)."""
    pristine = work / "pristine"
    records: list[Record] = []
    if reuse_world:
        reuse(pristine)
    else:
        records.append(Record.measured(customers, "demo", "generate", "", generate(customers, pristine)))
    if "resolve" in chosen:
        records += resolve.run(customers, pristine, work)
    records += sync.run(customers, pristine, work, chosen)
    if "state_location" in chosen:
        records += state_location.run(customers, pristine, work, engines, locations)
    if chosen & set(RATE_BOUND) and customers > apply_up_to:
        why = (
            f"{customers:,} customers > --apply-up-to {apply_up_to:,}: the vendors' rate limits make it hours"
        )
        records += [Record(customers, s, "", note=why) for s in RATE_BOUND if s in chosen]
    elif chosen & set(RATE_BOUND):
        records += apply.run(customers, pristine, work, chosen)
    return records


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks run", description=__doc__)
    parser.add_argument("--customers", default="100000,1000000,10000000", help="comma-separated sizes")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable; default: all")
    parser.add_argument(
        "--out", type=Path, help="results JSON (default benchmarks/results/<date>-<machine>.json)"
    )
    parser.add_argument(
        "--docs", type=Path, help="also write the Markdown there (default without --out: docs/performance.md)"
    )
    parser.add_argument("--machine", help="the machine's name in the results (default: the host name)")
    parser.add_argument(
        "--work-dir", type=Path, help="keep the warehouses and worlds here (default: a temporary folder)"
    )
    parser.add_argument(
        "--apply-up-to",
        type=int,
        default=1_000_000,
        help="skip apply and peers above this size (rate-bound: slow)",
    )
    parser.add_argument(
        "--reuse-world",
        action="store_true",
        help="take <work-dir>/<size>/pristine as it is (no demo row): a world an earlier run or "
        "`personasync demo --dir` left there",
    )
    parser.add_argument(
        "--engine",
        action="append",
        choices=state_location.ENGINES,
        help="state_location's warehouses (repeatable; default: both)",
    )
    parser.add_argument(
        "--location",
        action="append",
        choices=state_location.LOCATIONS,
        help="state_location's [state] locations (repeatable; default: both)",
    )
    args = parser.parse_args(argv)
    if args.reuse_world and args.work_dir is None:
        parser.error("--reuse-world needs --work-dir")
    sizes = [int(s.replace("_", "")) for s in args.customers.split(",")]
    chosen = set(args.scenario or SCENARIOS)
    machine = results.machine()
    if args.machine:
        machine["name"] = args.machine
    out = args.out or results.default_path(machine["name"])
    docs = args.docs or (None if args.out else report.DOCS)
    started, clock = datetime.now(timezone.utc), time.monotonic()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="personasync-bench-"))
    records: list[Record] = []
    run: dict[str, object] = {}
    try:
        for done, size in enumerate(sizes, start=1):
            print(
                f"{size:,} customers: {', '.join(s for s in SCENARIOS if s in chosen)} ...", file=sys.stderr
            )
            records += run_size(
                size, work / str(size), chosen, args.apply_up_to, reuse_world=args.reuse_world,
                engines=tuple(args.engine or state_location.ENGINES),
                locations=tuple(args.location or state_location.LOCATIONS),
            )  # fmt: skip
            # Saved after every size: a 10M run cut short keeps the sizes it finished.
            targets.judge(records)
            run = {
                "started": started.isoformat(timespec="seconds"),
                "seconds": round(time.monotonic() - clock),
                "commit": results.commit(),
                "sizes": sizes[:done],
                "scenarios": sorted(chosen),
                "reused_world": args.reuse_world,
                "machine": machine,
            }
            results.save(out, run, records)
            print(f"saved {size:,} customers to {out}", file=sys.stderr)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    text = report.markdown([{**run, "source": str(out)}], records)
    print(text)
    if docs is not None:
        docs.write_text(text)
    print(f"results: {out}" + (f"; Markdown: {docs}" if docs else ""), file=sys.stderr)
