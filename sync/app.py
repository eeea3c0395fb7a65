"""The Python API: what the CLI does, as functions that return values instead of printing.

This module is a composition root: it is the one place in ``sync/`` (with ``cli.py``)
that picks concrete connectors. Orchestrators (Airflow, Dagster) can call it directly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from connectors import demo_data
from connectors.warehouse import (
    WarehouseCatalog,
    WarehouseError,
    check_connection,
    create_warehouse_engine,
    driver_message,
    stream_rows,
    stream_tuples,
)
from personas.compile import RuleError
from personas.config import ResolverSettings
from personas.duplicates import cross_group_duplicates
from personas.explain import PersonaExplanation, explain_statement, read_explanation
from personas.identity import EmailNormaliser, PhoneNormaliser
from personas.model import Assignment
from personas.preview import Preview
from personas.query import (
    ResolverQuery,
    build_resolver_query,
    email_groups_query,
    suppression_values_query,
    unusual_emails_query,
)
from personas.resolve import (
    CHUNK_SIZE,
    IdentifierIndex,
    ResolveError,
    Resolver,
    suppression_entries,
)
from sync.apply import Progress
from sync.config import (
    AppConfig,
    DestinationConfig,
    FileDestinationConfig,
    database_url,
    display_url,
)
from sync.config_loader import load_config
from sync.destinations import destination_for
from sync.engine import (
    PlanInput,
    SkippedCustomers,
    SyncOptions,
    SyncSummary,
    Target,
    apply_saved_plan,
    run_sync,
)
from sync.joint_query import attach_state, joint_statement, verified_statements
from sync.joint_rows import JointRows
from sync.ledger import FailureRecord, Ledger, RunRecord
from sync.listed_identifiers import ListedIdentifiers
from sync.membership import DestinationSpec
from sync.pending_identities import PendingIdentities
from sync.plan import Limits
from sync.ports import DestinationError, SetsUp, SetupStatus, SetupStep
from sync.state import RESTORE as STATE_RESTORE
from sync.state import SqlIdentityCache, StateError, create_state_engine, migrate
from sync.validate import Check, describe, origin_key, validate_against
from sync.verified import ListedEntries, VerifiedKeys, config_digest

EXAMPLE_CONFIG_NAME = "config.example.toml"
DEMO_DIR_PREFIX = "personasync-demo/"  # how config.example.toml refers to the demo folder
EMAIL_GROUPS_PER_QUERY = 500  # values in one IN (...) list, under every driver's limit


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


class ResolveProblem(Exception):
    """The run cannot resolve personas; ``key`` names the config key at fault when there is one."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


@dataclass
class Resolution:
    """An open resolver run: iterate :meth:`assignments` once, to the end."""

    clock: datetime
    query: ResolverQuery
    resolver: Resolver
    conn: Connection
    source_key: str  # "source.table" or "source.query", for messages
    kinds: Mapping[str, str]  # the source's columns and their kinds
    phones: PhoneNormaliser
    listed: ListedEntries = field(default_factory=ListedEntries.empty)  # the suppression lists
    python_duplicates: frozenset[str] = frozenset()  # keys whose email only Python finds taken

    def assignments(self, rows: Iterable[Sequence[object]] | None = None) -> Iterator[Assignment]:
        """The assignments of ``rows`` (default: the resolver query's, run here)."""
        try:
            source = rows if rows is not None else stream_tuples(self.conn, self.query.statement)
            yield from self.resolver.assignments(source)
        except SQLAlchemyError as exc:
            message = f"the resolver query failed: {driver_message(exc)}"
            raise ResolveProblem(self.source_key, message) from None
        except ResolveError as exc:
            raise ResolveProblem(self.source_key, str(exc)) from None

    def rows(self, statement: sa.Executable, *, stream: bool = True) -> Iterator[Sequence[Any]]:
        """``statement``'s rows (streamed, or fetched at once for a few rows); a failure is the
        resolver query's, as in :meth:`assignments`."""
        try:
            yield from stream_rows(self.conn, statement) if stream else self.conn.execute(statement).all()
        except SQLAlchemyError as exc:
            message = f"the resolver query failed: {driver_message(exc)}"
            raise ResolveProblem(self.source_key, message) from None


def open_state(config: AppConfig) -> Engine:
    """An engine on the state store, migrated to this version. Raises :class:`ResolveProblem`
    naming the store and what to do."""
    url, schema = config.state_store()
    shown_url = display_url(url) + (f" (schema {schema})" if schema else "")
    state = None
    try:
        state = create_state_engine(database_url(url), schema)
        migrate(state)
    except (StateError, SQLAlchemyError) as exc:
        if state is not None:
            state.dispose()
        raise ResolveProblem("state.url", f"{shown_url}: {_state_problem(exc)}") from None
    return state


def _state_problem(exc: StateError | SQLAlchemyError) -> str:
    if isinstance(exc, StateError):
        return str(exc)
    reason = driver_message(exc)
    if "file is not a database" in reason or "malformed" in reason:  # SQLite's words for both
        return f"cannot read the state store ({reason}); {STATE_RESTORE}"
    if "unable to open database file" in reason:
        return f"cannot open the state store ({reason}); check that the file and its folder are writable"
    return f"cannot open the state store: {reason}"


@contextmanager
def open_resolution(
    config: AppConfig, clock: datetime, *, only_key: str | None = None, state: Engine | None = None
) -> Iterator[Resolution]:
    """Connect to the warehouse (read-only) and the state store (``state``, or opened here),
    load the suppression lists matched on email or phone, and prepare the resolver query.
    Raises :class:`ResolveProblem`."""
    settings = config.resolver_settings()
    shown_url = display_url(config.warehouse.url)
    url = database_url(config.warehouse.url)
    # DuckDB opens a file once per process, read-only or not: with the state in it, not.
    read_only = not (config.state.in_warehouse and url.get_backend_name() == "duckdb")
    try:
        engine = create_warehouse_engine(url, read_only=read_only)
    except WarehouseError as exc:
        raise ResolveProblem("warehouse.url", f"{shown_url}: {exc}") from None
    try:
        check_connection(engine)
    except WarehouseError as exc:
        engine.dispose()
        raise ResolveProblem("warehouse.url", f"{shown_url}: {exc}") from None
    own_state = state is None
    try:
        state = state if state is not None else open_state(config)
    except ResolveProblem:
        engine.dispose()
        raise
    workers = _phone_workers()
    try:
        with PendingIdentities() as pending:  # new numbers: written once the reading is done
            with engine.connect() as conn:
                cache = SqlIdentityCache(state, pending)
                yield _resolution(config, settings, conn, cache, workers, clock, only_key)
            engine.dispose()  # no read of the state store is left open (see sync.pending_identities)
            pending.flush(state)
    finally:
        if workers is not None:
            workers.shutdown(cancel_futures=True)
        engine.dispose()
        if own_state:
            state.dispose()


def _resolution(
    config: AppConfig,
    settings: ResolverSettings,
    conn: Connection,
    cache: SqlIdentityCache,
    workers: ProcessPoolExecutor | None,
    clock: datetime,
    only_key: str | None,
) -> Resolution:
    """The resolution on an open warehouse connection: the source described, the resolver
    query built, the suppression lists read."""
    catalog = WarehouseCatalog(conn)
    try:
        _, kinds = describe(catalog, config.source)
    except WarehouseError as exc:
        raise ResolveProblem(origin_key("source", config.source), str(exc)) from None
    try:
        query = build_resolver_query(settings, kinds, clock, only_key=only_key)
    except RuleError as exc:
        raise ResolveProblem(exc.path, exc.message) from None
    emails = EmailNormaliser()
    phones = PhoneNormaliser(config.source.phone_region, cache, workers, os.cpu_count() or 1)
    indexes, entries = _suppression_lists(config, conn, emails, phones)
    duplicates = _duplicate_emails_beyond_sql(conn, settings, kinds, emails)
    return Resolution(
        clock=clock,
        query=query,
        resolver=Resolver(settings, query, phones, indexes, emails, duplicates),
        conn=conn,
        source_key=origin_key("source", config.source),
        kinds=kinds,
        phones=phones,
        listed=entries,
        python_duplicates=duplicates,
    )


def _duplicate_emails_beyond_sql(
    conn: Connection, settings: ResolverSettings, kinds: Mapping[str, str], emails: EmailNormaliser
) -> frozenset[str]:
    """Keys whose email only the Python normalisation finds taken (see
    :mod:`personas.duplicates`): two small queries, and usually the first finds nothing."""
    unusual = unusual_emails_query(settings, kinds)
    if unusual is None:
        return frozenset()
    groups: set[str] = set()
    for group, raw in conn.execute(unusual):
        groups.update(str(g) for g in (group, emails(str(raw))[0]) if g is not None)
    if not groups:
        return frozenset()
    ordered = sorted(groups)
    rows = [
        (str(key), raw, bool(first))
        for start in range(0, len(ordered), EMAIL_GROUPS_PER_QUERY)
        for key, raw, first in conn.execute(
            email_groups_query(settings, kinds, ordered[start : start + EMAIL_GROUPS_PER_QUERY])
        )
    ]
    return cross_group_duplicates(rows, emails)


def _phone_workers() -> ProcessPoolExecutor | None:
    """Worker processes for phones never seen before (started only when a batch needs them).

    Forked, so they need no importable ``__main__`` (spawn would re-run the caller's script);
    where fork is unavailable, phones are checked in this process.
    """
    cores = os.cpu_count() or 1
    if "fork" not in multiprocessing.get_all_start_methods() or cores < 2:
        return None
    return ProcessPoolExecutor(max_workers=cores, mp_context=multiprocessing.get_context("fork"))


def _suppression_lists(
    config: AppConfig, conn: Connection, emails: EmailNormaliser, phones: PhoneNormaliser
) -> tuple[dict[str, IdentifierIndex], ListedEntries]:
    """Every identifier listed by a suppression source matched on email or phone, normalised
    like customers': the resolver's index per kind and the entries compared with the lists
    recorded (see :mod:`sync.listed_identifiers`). Read a chunk at a time."""
    listed = ListedIdentifiers()
    for i, suppression in enumerate(config.suppressions):
        if suppression.match_on == "key":
            continue
        key = origin_key(f"suppressions[{i}]", suppression)
        for chunk in _chunked_values(conn, suppression_values_query(suppression, i), key):
            listed.add(
                suppression.match_on, suppression_entries(chunk, 1 << i, suppression.match_on, emails, phones)
            )
    return listed.build()


def _chunked_values(conn: Connection, statement: sa.Executable, key: str) -> Iterator[list[object]]:
    """The first column of ``statement``'s rows, :data:`CHUNK_SIZE` at a time. A warehouse
    error names ``key``; whatever the caller does between chunks is outside the ``try``."""
    rows = stream_rows(conn, statement)
    while True:
        try:
            chunk = [row[0] for row in islice(rows, CHUNK_SIZE)]
        except SQLAlchemyError as exc:
            raise ResolveProblem(key, driver_message(exc)) from None
        if not chunk:
            return
        yield chunk


def preview(config: AppConfig, clock: datetime) -> Preview:
    """Resolve every customer and count the outcome, without sending anything."""
    summary = Preview.empty(clock, config.assignment.mode, [(p.name, p.negative) for p in config.personas])
    with open_resolution(config, clock) as run:
        summary.add_all(run.assignments())
    return summary


@dataclass(frozen=True)
class Explanation:
    """``personas explain``: one customer's assignment and every persona's evaluated rules."""

    clock: datetime
    assignment: Assignment
    personas: list[PersonaExplanation]


def explain(config: AppConfig, clock: datetime, key: str) -> Explanation:
    """Resolve one customer and evaluate each persona's rule tree for them.

    Raises :class:`ResolveProblem` when no customer has ``key``.
    """
    settings = config.resolver_settings()
    with open_resolution(config, clock, only_key=key) as run:
        found = list(run.assignments())
        if not found:
            raise ResolveProblem(config.source.key, f"no customer with key {key!r} in the source")
        statement = explain_statement(settings, run.kinds, clock, key)
        try:
            mapping = dict(run.conn.execute(statement).mappings().one())
        except SQLAlchemyError as exc:
            raise ResolveProblem(run.source_key, driver_message(exc)) from None
    return Explanation(clock, found[0], read_explanation(settings, mapping, found[0]))


@dataclass(frozen=True)
class DestinationCheck:
    """One destination's read-only check: credentials, and every list or property it names."""

    index: int  # position in the config's [[destinations]]
    name: str
    type: str
    channel: str
    problem: str | None  # None: ok

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_destinations(config: AppConfig, names: Sequence[str] = ()) -> list[DestinationCheck]:
    """Run each destination's own check (all, or those named), reading only, never sending.
    Raises :class:`ResolveProblem` for an unknown name."""
    checks = []
    for i, destination in chosen_destinations(config, names):
        try:
            destination_for(destination, config.personas).check()
            problem = None
        except DestinationError as exc:
            problem = str(exc)
        checks.append(DestinationCheck(i, destination.name, destination.type, destination.channel, problem))
    return checks


@dataclass(frozen=True)
class DestinationSetup:
    """What ``destinations setup`` found, did, or leaves to a person, for one destination."""

    name: str
    type: str
    steps: list[SetupStep]

    @property
    def complete(self) -> bool:
        return all(step.status is not SetupStatus.MANUAL for step in self.steps)


def setup_destination(config: AppConfig, name: str, dry_run: bool) -> DestinationSetup:
    """Create what destination ``name`` needs in the vendor's account (or, with ``dry_run``,
    say what would be created). Raises :class:`ResolveProblem` for an unknown name or a
    type with nothing to set up, :class:`DestinationError` when the account cannot be read."""
    [(_, chosen)] = chosen_destinations(config, [name])
    destination = destination_for(chosen, config.personas)
    if not isinstance(destination, SetsUp):
        raise ResolveProblem(
            "--destination", f"{name} is a {chosen.type} destination: it has nothing to set up"
        )
    return DestinationSetup(name, chosen.type, destination.setup(dry_run))


def _destination_checks(config: AppConfig) -> list[Check]:
    """Each destination's own read-only check, as ``validate`` lines."""
    checks = []
    for result in check_destinations(config):
        destination = config.destinations[result.index]
        folder = destination.path if isinstance(destination, FileDestinationConfig) else None
        key = f"destinations[{result.index}]"
        if result.problem is not None:
            checks.append(Check(False, key + (".path" if folder else ""), result.problem))
            continue
        where = f"-> {folder}" if folder else "credentials, lists and properties ok"
        checks.append(Check(True, key, f"{result.name} ({result.type}, {result.channel}) {where}"))
    return checks


def _state_checks(config: AppConfig) -> list[Check]:
    secret, schema = config.state_store()
    url = database_url(secret)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        folder = Path(url.database).parent
        if not folder.is_dir():
            return [Check(False, "state.url", f"folder {folder} for the state file does not exist")]
    return [Check(True, "state", display_url(secret) + (f" (schema {schema})" if schema else ""))]


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


# --- sync ------------------------------------------------------------------------------------
def chosen_destinations(config: AppConfig, names: Sequence[str] = ()) -> list[tuple[int, DestinationConfig]]:
    """The configured destinations taking part (all, or those named), with their position in
    ``[[destinations]]``. Raises :class:`ResolveProblem` for an unknown name."""
    known = [d.name for d in config.destinations]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ResolveProblem(
            "--destination", f"unknown destination {unknown[0]!r}; configured: {', '.join(known)}"
        )
    if not config.destinations:
        raise ResolveProblem("destinations", "no destinations are configured; add a [[destinations]] entry")
    return [(i, d) for i, d in enumerate(config.destinations) if not names or d.name in names]


def targets_for(config: AppConfig, names: Sequence[str] = (), rate_share: float = 1.0) -> list[Target]:
    """The configured destinations taking part (all, or those named), built with
    ``rate_share`` of each vendor's rate limit. Raises :class:`ResolveProblem` for an
    unknown name."""
    return [
        Target(
            destination_for(d, config.personas, rate_share),
            DestinationSpec(d.name, d.channel, d.naming()),
            Limits(d.max_remove_percent, d.max_suppress_percent),
        )
        for _, d in chosen_destinations(config, names)
    ]


def sync(
    config: AppConfig,
    *,
    clock: datetime | None = None,
    destinations: Sequence[str] = (),
    options: SyncOptions | None = None,
    progress: Progress | None = None,
    targets: Sequence[Target] | None = None,
) -> SyncSummary:
    """Run a sync (or a dry run) and return its summary; never prints, never exits.

    Raises :class:`ResolveProblem` (config or warehouse problem, exit code 2) and
    :class:`~sync.lock.LockHeld` (exit code 4). ``targets`` replaces the configured
    destinations (for tests and embedding).
    """
    when = clock or datetime.now(timezone.utc)
    options = options or SyncOptions()
    options = replace(options, lock_timeout=timedelta(minutes=config.state.lock_timeout_minutes))
    share = 1.0 / options.shard.count if options.shard is not None else 1.0  # shards split each rate limit
    chosen = list(targets) if targets is not None else targets_for(config, destinations, share)
    state = open_state(config)
    try:

        @contextmanager
        def planned_from(engine: Engine) -> Iterator[PlanInput]:
            with open_resolution(config, when, state=engine) as run:
                yield _plan_input(run, config, engine, chosen, options)

        return run_sync(state, chosen, planned_from, options, progress)
    finally:
        state.dispose()


def _plan_input(
    run: Resolution, config: AppConfig, state: Engine, targets: Sequence[Target], options: SyncOptions
) -> PlanInput:
    """What the run plans from: where the state store can be read from the warehouse
    connection, only the customers not verified in sync leave the warehouse
    (:mod:`sync.joint_query`); otherwise every customer and every ledger row.

    Every sending run forgets the verified customers it plans, before it sends; only the
    unsharded sending run records them again (:mod:`sync.verified`).
    """
    names = [t.spec.name for t in targets]
    writes = not options.dry_run and options.shard is None and not options.full_resync
    verified = VerifiedKeys(state, _config_digest(run, config, targets), names, writes)
    plain = options.full_resync or options.recheck_all or options.shard is not None  # a shard counts each
    # A dry run records nothing, so with nobody verified the joint query would only digest
    # and sort every row for nothing (a first dry run); a sending run goes on, to record.
    plain = plain or (options.dry_run and not verified.any_recorded())
    _, state_schema = config.state_store()
    schema = None if plain else state_schema or attach_state(run.conn, state)
    if schema is None:
        recorder = None if options.dry_run else verified.recorder(iter(()))  # forgets only
        return PlanInput(run.assignments(), observer=recorder)
    verified.refresh_lists(run.listed)
    # A new transaction, so the warehouse connection sees the customers just forgotten:
    # DuckDB (like any snapshot-isolated database) reads one snapshot per transaction.
    run.conn.rollback()
    settings = config.resolver_settings()
    dialect = run.conn.dialect.name
    customers, ledger = verified_statements(settings, run.kinds, schema, names, verified.config, dialect)
    if dialect == "postgresql":  # a server-side cursor otherwise plans for the first rows: nested loops
        run.conn.exec_driver_sql("SET cursor_tuple_fraction = 1.0")
    [(in_source,)] = list(run.rows(customers, stream=False))
    per_destination = {
        str(row[0]): (int(row[1]), int(row[2]), int(row[3])) for row in run.rows(ledger, stream=False)
    }
    statement = joint_statement(settings, run.kinds, run.query, schema, names, verified.config, dialect)
    width = len(run.query.statement.selected_columns)
    joint = JointRows(run.rows(statement), width, keep_fetched=not options.dry_run)

    def skipped() -> SkippedCustomers:
        """The verified customers in the source, less those fetched after all."""
        left_out = {}
        for name, totals in per_destination.items():
            fetched = joint.verified_ledger.get(name, [0, 0, 0])
            left_out[name] = (totals[0] - fetched[0], totals[1] - fetched[1], totals[2] - fetched[2])
        return SkippedCustomers(int(in_source) - joint.verified_fetched, left_out)

    recorder = None if options.dry_run else verified.recorder(joint.fetched())
    aligned = joint.aligned(run.assignments(joint.source_rows()))
    return PlanInput(aligned=aligned, observer=recorder, skipped=skipped)


def _config_digest(run: Resolution, config: AppConfig, targets: Sequence[Target]) -> str:
    """Everything besides a customer's source row that decides what is sent to them."""
    versions: dict[str, str | None] = {}
    for package in ("personasync", "phonenumbers", "email-validator", "sqlalchemy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return config_digest(
        {
            "resolver": config.model_dump(
                mode="json", include={"source", "consent", "suppressions", "personas", "assignment"}
            ),
            "destinations": [
                [t.spec.name, t.spec.channel, t.spec.naming.prefix, sorted(t.spec.naming.names.items())]
                for t in targets
            ],
            "versions": versions,
            "python_duplicates": sorted(run.python_duplicates),
        }
    )


def apply_plan(
    config: AppConfig,
    plan_file: Path,
    *,
    allow_large_changes: bool = False,
    progress: Progress | None = None,
    targets: Sequence[Target] | None = None,
) -> SyncSummary:
    """Apply a plan saved by ``sync --dry-run --plan-out``. Raises :class:`PlanError` when
    the state changed since, :class:`ResolveProblem`, :class:`~sync.lock.LockHeld`."""
    options = SyncOptions(
        allow_large_changes=allow_large_changes,
        lock_timeout=timedelta(minutes=config.state.lock_timeout_minutes),
    )
    chosen = list(targets) if targets is not None else targets_for(config)
    state = open_state(config)
    try:
        return apply_saved_plan(state, chosen, plan_file, options, progress)
    finally:
        state.dispose()


def run_history(config: AppConfig, limit: int) -> list[RunRecord]:
    state = open_state(config)
    try:
        return Ledger(state).runs(limit)
    finally:
        state.dispose()


@dataclass(frozen=True)
class RunDetails:
    run: RunRecord
    failure_count: int
    failures: list[FailureRecord]


def run_details(config: AppConfig, run_id: int, failure_limit: int = 50) -> RunDetails | None:
    state = open_state(config)
    try:
        ledger = Ledger(state)
        run = ledger.run(run_id)
        if run is None:
            return None
        count, failures = ledger.failures(run_id, failure_limit)
        return RunDetails(run, count, failures)
    finally:
        state.dispose()
