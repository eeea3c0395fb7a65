"""``run_sync``: the one orchestrator of a sync run, and ``apply_saved_plan`` for a saved plan.

resolve -> membership per destination -> diff against the ledger -> plan (spooled to disk)
-> guardrails -> (dry run stops here) -> apply suppressions, removals, lifts, additions,
committing each acknowledged batch. Everything it calls is testable alone; concrete
warehouse and destination code comes in through parameters (``sync/app.py`` wires them).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine

from personas.model import Assignment
from sync.apply import Applier, DestinationTally, NoProgress, Progress
from sync.changes import Acknowledged, Aligned, Change, align, diff_key, unchanged
from sync.exit_codes import ExitCode
from sync.ledger import Ledger, RunStatus
from sync.lock import RunLock, run_lock
from sync.membership import DestinationSpec, MembershipBuilder
from sync.plan import DestinationPlan, Limits, judge, plan_json
from sync.ports import Destination, DestinationError, Finishes
from sync.shard import Shard
from sync.spool import PlanError, Section, Spool, read_header, read_sections
from sync.verified import expected_state, forget_verified

HEARTBEAT_SECONDS = 60  # while planning, refresh the run lock this often


class PlanObserver(Protocol):
    """Told of every customer planned, and when sending starts and ends (the verified keys of
    :mod:`sync.verified`)."""

    def planned(
        self, key: str, assignment: Assignment | None, expected: Sequence[str], unchanged: bool
    ) -> None: ...

    def before_apply(self, guard: Callable[[Connection], None] | None = None) -> None: ...

    def after_apply(self, guard: Callable[[Connection], None] | None = None) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SkippedCustomers:
    """Customers the warehouse left out as verified in sync: what the plan counts of them."""

    customers: int
    ledger: Mapping[str, tuple[int, int, int]]  # destination -> (in ledger, tagged, tagged or suppressed)


@dataclass
class PlanInput:
    """What a run plans from: the key-ordered assignments, walked here with every ledger row
    of the run's destinations; or, when the warehouse already left out customers verified
    in sync, ``aligned``: the others, each with its ledger rows (:mod:`sync.joint_rows`)."""

    assignments: Iterable[Assignment] = ()
    aligned: Iterable[Aligned] | None = None
    observer: PlanObserver | None = None
    skipped: Callable[[], SkippedCustomers] | None = None  # known once the assignments are read


AssignmentSource = Callable[[Engine], AbstractContextManager[PlanInput]]
"""Opens the resolver on the given state store and yields what the run plans from."""


@dataclass(frozen=True)
class SyncOptions:
    dry_run: bool = False
    full_resync: bool = False
    allow_large_changes: bool = False
    retry_failed: bool = False
    plan_out: Path | None = None
    lock_timeout: timedelta = timedelta(hours=2)
    shard: Shard | None = None  # only the customers of this shard, under this shard's lock
    recheck_all: bool = False  # skip no customer as verified in sync (sync/verified.py)


@dataclass(frozen=True)
class Target:
    """A destination taking part in the run, with what the pure core needs about it."""

    destination: Destination
    spec: DestinationSpec
    limits: Limits


@dataclass
class SyncSummary:
    """What a run did (or, for a dry run, would do). JSON-able via :meth:`as_json`."""

    dry_run: bool
    exit_code: ExitCode
    status: str
    plans: list[dict[str, Any]]  # plan_json per destination
    source_rows: int | None
    run_id: int | None = None
    tallies: dict[str, DestinationTally] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)  # destination -> problem found by check()
    seconds: float = 0.0
    message: str | None = None
    # changes an interrupted run sent without recording the answer, now counted as sent
    settled_intents: int = 0
    shard: str | None = None  # "I/N" for a sharded run
    skipped_verified: int = 0  # customers left in the warehouse as verified in sync

    @property
    def blocked(self) -> bool:
        return any(v["blocked"] for plan in self.plans for v in plan["guardrails"])

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "status": self.status,
            "exit_code": int(self.exit_code),
            "source_rows": self.source_rows,
            "seconds": round(self.seconds, 2),
            "message": self.message,
            "settled_intents": self.settled_intents,
            "shard": self.shard,
            "skipped_verified": self.skipped_verified,
            "destinations": [
                {
                    **plan,
                    "check_problem": self.checks.get(plan["destination"]),
                    "result": self.tallies[plan["destination"]].as_json()
                    if plan["destination"] in self.tallies
                    else None,
                }
                for plan in self.plans
            ],
        }


def run_sync(
    state: Engine,
    targets: Sequence[Target],
    assignments: AssignmentSource,
    options: SyncOptions,
    progress: Progress | None = None,
) -> SyncSummary:
    """Plan a run against the ledger, judge it, and (unless a dry run) apply it."""
    started = time.monotonic()
    ledger = Ledger(state)
    lock: AbstractContextManager[RunLock | None] = (
        nullcontext() if options.dry_run else run_lock(state, options.lock_timeout, options.shard)
    )
    with lock as held, Spool() as spool, ExitStack() as cleanup:
        settled = ledger.settle_intents() if held is not None else 0
        store_id, version = ledger.version()
        plans = [
            DestinationPlan(t.spec.name, t.spec.channel, t.destination.capabilities, t.limits)
            for t in targets
        ]
        beat = held.heartbeat if held is not None else None
        with assignments(state) as planned_from:
            observer = planned_from.observer
            if observer is not None:
                cleanup.callback(observer.close)
            source_rows = _plan(planned_from, ledger, state, targets, plans, spool, options, beat)
            skipped_verified = 0
            if planned_from.skipped is not None:
                skipped = planned_from.skipped()
                source_rows += skipped.customers
                skipped_verified = skipped.customers
                for plan in plans:
                    plan.add_verified(*skipped.ledger.get(plan.name, (0, 0, 0)))
        spool.finish()
        for plan in plans:
            judge(plan, source_rows, options.allow_large_changes)
        plan_dicts = [plan_json(plan) for plan in plans]
        names = [t.spec.name for t in targets]
        if options.plan_out is not None:
            header = {
                "store_id": store_id,
                "ledger_version": version,
                "plans": plan_dicts,
                "source_rows": source_rows,
            }
            spool.save(options.plan_out, header, names)
        # A dry run checks every destination (it is how an operator tests a setup); a real run
        # only those it will send to, so a run with nothing to send makes no request at all.
        to_send = {plan.name for plan in plans if options.dry_run or sum(plan.changes.values()) > 0}
        checks = _check([t for t in targets if t.spec.name in to_send])
        summary = SyncSummary(
            options.dry_run,
            ExitCode.OK,
            "dry_run",
            plan_dicts,
            source_rows,
            checks=checks,
            settled_intents=settled,
            shard=str(options.shard) if options.shard is not None else None,
            skipped_verified=skipped_verified,
        )
        if any(plan.blocked for plan in plans):
            summary.exit_code, summary.status = ExitCode.GUARDRAIL, RunStatus.BLOCKED.value
        elif checks:
            summary.exit_code = ExitCode.DESTINATION_FATAL
        if options.dry_run:
            summary.seconds = time.monotonic() - started
            return summary
        assert held is not None
        if observer is not None:
            observer.before_apply(held.confirm)  # forget planned customers before sending anything
        if summary.exit_code is ExitCode.GUARDRAIL:
            run_id = ledger.start_run("sync", socket.gethostname(), os.getpid())
            summary.run_id = run_id
            summary.seconds = time.monotonic() - started
            ledger.finish_run(run_id, RunStatus.BLOCKED, summary.as_json())
            return summary
        sections = [(s, spool.changes(s)) for s in spool.sections(names)]
        summary = _apply(ledger, held, targets, sections, summary, progress or NoProgress(), "sync", started)
        if observer is not None:
            observer.after_apply(held.confirm)
        return summary


def _plan(
    planned_from: PlanInput,
    ledger: Ledger,
    state: Engine,
    targets: Sequence[Target],
    plans: Sequence[DestinationPlan],
    spool: Spool,
    options: SyncOptions,
    heartbeat: Callable[[], None] | None,
) -> int:
    """Walk the assignments and the ledger together; count and spool every change.

    ``heartbeat`` keeps the run lock fresh while a long plan is computed.
    """
    source_rows = 0
    names = [t.spec.name for t in targets]
    next_beat = time.monotonic() + HEARTBEAT_SECONDS
    builders = [MembershipBuilder(t.spec) for t in targets]
    observer = planned_from.observer
    with state.connect() as conn:
        walk = planned_from.aligned
        if walk is None:
            walk = align(planned_from.assignments, ledger.acknowledged(conn, names))
        for aligned in walk:
            if options.shard is not None and not options.shard.holds(aligned.key):
                continue  # another shard's customer: neither planned nor counted here
            assignment = aligned.assignment
            if assignment is not None:
                source_rows += 1
                if heartbeat is not None and source_rows % 10_000 == 0 and time.monotonic() > next_beat:
                    heartbeat()
                    next_beat = time.monotonic() + HEARTBEAT_SECONDS
            by_destination: dict[str, list[Acknowledged]] = {}
            for row in aligned.acknowledged:  # usually one row, often none
                by_destination.setdefault(row.destination, []).append(row)
            expected: list[str] = []
            all_unchanged = True
            for build, plan in zip(builders, plans, strict=True):
                acknowledged = by_destination.get(plan.name, ())
                desired = build(assignment) if assignment is not None else None
                if desired is not None:
                    expected.append(expected_state(desired))
                if desired is not None and not options.full_resync and unchanged(desired, acknowledged):
                    plan.add_unchanged(desired.tags, desired.suppressed, bool(acknowledged))
                    continue
                all_unchanged = False
                diff = diff_key(
                    desired,
                    acknowledged,
                    can_unsuppress=plan.capabilities.can_unsuppress,
                    full_resync=options.full_resync,
                    retry_failed=options.retry_failed,
                )
                suppressed = desired is not None and desired.suppressed
                changes = plan.add(diff, bool(acknowledged), suppressed)
                if changes:
                    spool.write(plan.name, changes)
            if observer is not None:
                observer.planned(aligned.key, assignment, expected, all_unchanged)
    return source_rows


def _check(targets: Sequence[Target]) -> dict[str, str]:
    """Each destination's read-only check; the problems found, by destination."""
    problems = {}
    for target in targets:
        try:
            target.destination.check()
        except DestinationError as exc:
            problems[target.spec.name] = str(exc)
    return problems


def _apply(
    ledger: Ledger,
    lock: RunLock,
    targets: Sequence[Target],
    sections: Iterable[tuple[Section, Iterable[Change]]],
    summary: SyncSummary,
    progress: Progress,
    command: str,
    started: float,
) -> SyncSummary:
    run_id = ledger.start_run(command, socket.gethostname(), os.getpid())
    summary.run_id = run_id
    by_name: Mapping[str, Target] = {t.spec.name: t for t in targets}
    tallies = {name: DestinationTally(fatal=summary.checks.get(name)) for name in by_name}
    summary.tallies = tallies
    status = RunStatus.FAILED
    try:
        applier = Applier(ledger, run_id, lock, progress)
        for section, changes in sections:
            target = by_name[section.destination]
            applier.apply(
                target.destination, section.kind, changes, section.count, tallies[section.destination]
            )
        for name, target in by_name.items():  # e.g. the file destination merges its runs
            if isinstance(target.destination, Finishes):
                try:
                    target.destination.finish()
                except DestinationError as exc:
                    tallies[name].fatal = tallies[name].fatal or str(exc)
        if any(t.fatal for t in tallies.values()):
            status, summary.exit_code = RunStatus.DESTINATION_FATAL, ExitCode.DESTINATION_FATAL
        elif any(t.failures for t in tallies.values()):
            status, summary.exit_code = RunStatus.RECORD_FAILURES, ExitCode.RECORD_FAILURES
        else:
            status, summary.exit_code = RunStatus.SUCCEEDED, ExitCode.OK
    finally:
        summary.status = status.value
        summary.seconds = time.monotonic() - started
        ledger.finish_run(run_id, status, summary.as_json())
    return summary


def apply_saved_plan(
    state: Engine,
    targets: Sequence[Target],
    plan_file: Path,
    options: SyncOptions,
    progress: Progress | None = None,
) -> SyncSummary:
    """Apply exactly the changes in ``plan_file``; raises :class:`PlanError` when the ledger
    moved since the plan was made, or the plan names a destination not configured."""
    started = time.monotonic()
    header = read_header(plan_file)
    ledger = Ledger(state)
    names = {t.spec.name for t in targets}
    plans: list[dict[str, Any]] = list(header.get("plans", []))
    unknown = sorted({p["destination"] for p in plans} - names)
    if unknown:
        raise PlanError(
            f"{plan_file}: the plan is for destination(s) not in the config: {', '.join(unknown)}"
        )
    with run_lock(state, options.lock_timeout) as held:
        settled = ledger.settle_intents()  # before the version check: a plan made before them is stale
        store_id, version = ledger.version()
        if (store_id, version) != (header.get("store_id"), header.get("ledger_version")):
            raise PlanError(
                f"{plan_file}: the state store changed since this plan was made (plan made at ledger version "
                f"{header.get('ledger_version')}, now {version}"
                + ("" if store_id == header.get("store_id") else ", and it is another state store")
                + "); make a new plan with `personasync sync --dry-run --plan-out`"
            )
        forget_verified(state)  # the plan's changes are not followed key by key: verify afresh
        summary = SyncSummary(
            False, ExitCode.OK, "running", plans, header.get("source_rows"), settled_intents=settled
        )
        blocked = any(v["blocked"] for p in plans for v in p["guardrails"])
        if blocked and not options.allow_large_changes:
            summary.exit_code, summary.status = ExitCode.GUARDRAIL, RunStatus.BLOCKED.value
            summary.message = "the plan was blocked by a guardrail; apply it with --allow-large-changes"
            return summary
        summary.checks = _check([t for t in targets if t.spec.name in {p["destination"] for p in plans}])
        return _apply(
            ledger,
            held,
            targets,
            read_sections(plan_file),
            summary,
            progress or NoProgress(),
            "apply",
            started,
        )
