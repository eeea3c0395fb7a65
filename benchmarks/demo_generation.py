"""How long `personasync demo` takes to build the warehouse, and how much memory it needs.

    python -m benchmarks.demo_generation --customers 100000,1000000

Each size runs `personasync demo --force` in a fresh process in a scratch folder.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

from benchmarks.measure import measure


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", default="100000,1000000", help="comma-separated sizes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.customers.split(",")]
    print(f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, {platform.machine()}")
    print(f"{'customers':>12}  {'wall s':>8}  {'cpu s':>8}  {'peak RSS MB':>11}  {'file MB':>8}")
    for size in sizes:
        folder = Path(tempfile.mkdtemp(prefix="personasync-bench-"))
        try:
            result = measure(
                [
                    sys.executable,
                    "-m",
                    "sync.cli_main",
                    "demo",
                    "--dir",
                    str(folder),
                    "--customers",
                    str(size),
                    "--force",
                    "--as-of",
                    "2026-11-22",
                ]
            )
            size_mb = (folder / "warehouse.db").stat().st_size / 1e6
            row = (f"{size:>12,}", f"{result.wall_s:>8}", f"{result.cpu_s:>8}", f"{result.peak_rss_mb:>11}")
            print("  ".join(row), f" {size_mb:>8.0f}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
