"""The issue's targets, judged over the records of a run (some compare records: a scenario
with the floor at its size, personasync with the naive peer, a size with the one below).

- at 1,000,000 customers: ``dry_run_steady`` ≤ 10 s and ≤ 3x ``baseline_sql``;
  ``dry_run_first`` ≤ 60 s;
- every personasync process: peak RSS ≤ 250 MB;
- at each size ≥ 10x a smaller size of at least 1,000,000 in the same run (10M against 1M):
  time ≤ 1.1 x (size ratio) x the smaller's, peak RSS within 10 % of it;
- ``noop``: 0 destination requests (the file destinations and the HTTP ones);
- the 2 %-change day into the file destinations: requests = ceil(changes / max batch) per
  kind (a file destination's batch is one request); against the vendors, personasync's
  requests ≥ 20x fewer than the naive peer's;
- ``apply``: each rate-limit group ≥ 90 % of its configured ceiling while the client works
  with it (judged where it sent at least 20 requests in a row), 0 self-inflicted 429s;
- after the 2 %-change day, every tool: the vendors hold exactly the desired tags and every
  desired suppression.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from benchmarks.results import Check, Record

MILLION = 1_000_000
RSS_MB = 250
FIRST_S = 60
STEADY_S = 10
STEADY_X_FLOOR = 3
SCALE_SLACK = 1.1
RATE_PCT = 90
RATE_MIN_INTERVALS = 20
FEWER_THAN_NAIVE = 20
PEERS = ("naive", "dlt")

Key = tuple[int, str, str, str]


def key(record: Record) -> Key:
    return (record.customers, record.scenario, record.subject, record.step)


def judge(records: list[Record]) -> None:
    """Fill each record's ``x_floor`` and ``checks``, comparing records of the same run only
    (a merged report holds several, maybe of different commits)."""
    for run in sorted({r.run for r in records}):
        _judge_run([r for r in records if r.run == run])


def _judge_run(records: list[Record]) -> None:
    by_key = {key(r): r for r in records if not r.skipped}
    floors = {r.customers: r.wall_s for r in records if r.scenario == "baseline_sql" and r.wall_s}
    sizes = sorted({r.customers for r in records})
    for record in records:
        record.checks = []
        if record.skipped:
            continue
        floor = floors.get(record.customers)
        if floor and ours(record) and record.scenario != "demo" and record.wall_s is not None:
            record.x_floor = round(record.wall_s / floor, 1)
        record.checks = list(checks(record, by_key, sizes))


def ours(record: Record) -> bool:
    """A personasync process (not the floor, not a peer)."""
    return record.subject not in PEERS and record.scenario != "baseline_sql"


def checks(r: Record, by_key: Mapping[Key, Record], sizes: list[int]) -> Iterator[Check]:
    assert r.wall_s is not None and r.peak_rss_mb is not None
    if r.customers == MILLION and r.scenario == "dry_run_first":
        yield _at_most(f"≤ {FIRST_S} s", r.wall_s, FIRST_S, "s")
    if r.customers == MILLION and r.scenario == "dry_run_steady":
        yield _at_most(f"≤ {STEADY_S} s", r.wall_s, STEADY_S, "s")
        if r.x_floor is not None:
            yield _at_most(f"≤ {STEADY_X_FLOOR}x floor", r.x_floor, STEADY_X_FLOOR, "x")
    if ours(r):
        yield _at_most(f"RSS ≤ {RSS_MB} MB", r.peak_rss_mb, RSS_MB, "MB")
    if r.scenario == "noop" or r.step == "noop":
        yield Check("0 requests", str(r.requests), r.requests == 0)
    if r.scenario == "sync" and r.step == "2%":
        expected = r.detail.get("batches")
        yield Check(
            "requests = Σ ceil(changes / max batch)", f"{r.requests} vs {expected}", r.requests == expected
        )
    if r.scenario == "apply":
        yield from _rates(r)
        yield Check("0 x 429", str(r.throttled), r.throttled == 0)
    if r.scenario == "apply" and r.step == "2%":
        naive = by_key.get((r.customers, "peers", "naive", "2%"))
        if naive is not None and naive.requests and r.requests is not None:
            ratio = naive.requests / max(r.requests, 1)
            yield Check(
                f"≥ {FEWER_THAN_NAIVE}x fewer requests than naive", f"{ratio:.1f}x", ratio >= FEWER_THAN_NAIVE
            )
    if "end_state" in r.detail:
        wrong = {
            vendor: found["wrong_tags"] + found["missing_suppressions"]
            for vendor, found in r.detail["end_state"].items()
        }
        shown = ", ".join(f"{vendor} {n}" for vendor, n in wrong.items())
        yield Check("end state = desired", f"wrong: {shown}", not any(wrong.values()))
    if ours(r) and r.scenario != "apply":  # apply's time is the vendors' rate limits
        yield from _scaling(r, by_key, sizes)


def _at_most(target: str, value: float, limit: float, unit: str) -> Check:
    return Check(target, f"{value:g}{unit}" if unit == "x" else f"{value:g} {unit}", value <= limit)


def _rates(r: Record) -> Iterator[Check]:
    for vendor, counts in r.detail.get("vendors", {}).items():
        for group, seen in counts["groups"].items():
            if seen["intervals"] >= RATE_MIN_INTERVALS and seen.get("pct_of_ceiling") is not None:
                target = f"{vendor} {group} ≥ {RATE_PCT} % of {seen['ceiling_per_s']:g}/s"
                yield Check(target, f"{seen['pct_of_ceiling']:g} %", seen["pct_of_ceiling"] >= RATE_PCT)


def _scaling(r: Record, by_key: Mapping[Key, Record], sizes: list[int]) -> Iterator[Check]:
    smaller = [s for s in sizes if s >= MILLION and s * 10 <= r.customers]
    if not smaller:
        return
    base = by_key.get((smaller[-1], r.scenario, r.subject, r.step))
    if base is None or base.wall_s is None or base.peak_rss_mb is None:
        return
    assert r.wall_s is not None and r.peak_rss_mb is not None
    ratio = r.customers / base.customers
    factor = r.wall_s / base.wall_s
    yield Check(
        f"time ≤ {SCALE_SLACK * ratio:g}x {base.customers:,}'s",
        f"{factor:.1f}x",
        factor <= SCALE_SLACK * ratio,
    )
    grown = r.peak_rss_mb / base.peak_rss_mb
    yield Check(f"RSS ≤ {SCALE_SLACK:g}x {base.customers:,}'s", f"{grown:.2f}x", grown <= SCALE_SLACK)
