"""What a benchmark run records: one :class:`Record` per (size, scenario, subject, step), the
machine it ran on, and the JSON file they are kept in."""

from __future__ import annotations

import json
import os
import platform
import re
import sqlite3
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks import calibration
from benchmarks.measure import Measurement

RESULTS = Path(__file__).parent / "results"


@dataclass
class Check:
    """One target for one record: what it asks (``target``), what was measured (``value``)
    and whether it was met (None: could not be judged, with the reason in ``value``)."""

    target: str
    value: str
    met: bool | None


@dataclass
class Record:
    """One measured process (or a scenario skipped, with ``note`` saying why).

    ``subject`` is what ran: the warehouse engine for ``resolve`` (sqlite, duckdb,
    postgres), ``files`` for the file destinations, ``personasync`` or a peer's name
    against the HTTP emulators. ``step`` tells apart the runs of one scenario (``full``,
    ``2%``, ``noop``). ``requests`` are destination requests (the run's own count for the
    file destinations, the emulators' count for HTTP), ``throttled`` the 429s received.
    """

    customers: int
    scenario: str
    subject: str
    step: str = ""
    wall_s: float | None = None
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    requests: int | None = None
    changes: int | None = None
    throttled: int | None = None
    x_floor: float | None = None  # wall_s / baseline_sql's wall_s at the same size
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    run: int = field(default=1, compare=False)  # which run of a merged report (not saved)

    @classmethod
    def measured(
        cls, customers: int, scenario: str, subject: str, step: str, m: Measurement, **kw: Any
    ) -> Record:
        return cls(customers, scenario, subject, step, m.wall_s, m.cpu_s, m.peak_rss_mb, **kw)

    @property
    def skipped(self) -> bool:
        return self.wall_s is None

    @property
    def target(self) -> str:
        return "; ".join(c.target for c in self.checks)

    @property
    def met(self) -> bool | None:
        judged = [c.met for c in self.checks if c.met is not None]
        return all(judged) if judged else None

    def as_json(self) -> dict[str, Any]:
        data = {**asdict(self), "target": self.target, "met": self.met}
        del data["run"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        fields = {k: v for k, v in data.items() if k not in ("target", "met", "checks", "run")}
        return cls(**fields, checks=[Check(**c) for c in data.get("checks", [])])


def machine() -> dict[str, Any]:
    """The machine a run is on, as the results and docs/performance.md state it."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = models[0] if models else cpu
    return {
        "name": platform.node(),
        "cores": os.cpu_count(),
        "ram_gib": round(memory / 2**30, 1),
        "cpu": cpu,
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "calibration_s": calibration.seconds(),
    }


def commit() -> str | None:
    """The commit the benchmarks ran at (None outside a git checkout), with ``+changes`` when
    the working tree differs from it (results files aside: a run's own output, or another
    run's, does not change what is measured)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", ":/", ":(exclude,top)benchmarks/results"],
            cwd=here, capture_output=True, text=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty.stdout.strip() else "")


def default_path(name: str) -> Path:
    """``benchmarks/results/<date>-<machine>.json``."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "machine"
    return RESULTS / f"{date.today().isoformat()}-{slug}.json"


def save(path: Path, run: dict[str, Any], records: list[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**run, "records": [r.as_json() for r in records]}, indent=1) + "\n")


def load(path: Path) -> tuple[dict[str, Any], list[Record]]:
    data = json.loads(path.read_text())
    records = [Record.from_json(r) for r in data.pop("records")]
    return data, records


def merge(paths: list[Path]) -> tuple[list[dict[str, Any]], list[Record]]:
    """Several runs as one report: each run's description, and every record of all of them,
    ``Record.run`` saying which run (1-based) it came from; ordered by size, then run."""
    runs: list[dict[str, Any]] = []
    records: list[Record] = []
    for number, path in enumerate(paths, start=1):
        run, loaded = load(path)
        runs.append({**run, "source": str(path)})
        for record in loaded:
            record.run = number
            records.append(record)
    return runs, sorted(records, key=lambda r: (r.customers, r.run))
