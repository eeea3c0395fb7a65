"""The state store: personasync's own database (SQLite file by default, or PostgreSQL).

Its schema is versioned: each migration is recorded in ``schema_migrations`` when applied,
and opening the store applies the ones it lacks, in order, each in its own transaction.
A store written by a newer personasync is refused rather than guessed at, and so is a
database that is not a personasync store or has lost part of its schema (nothing is
written to a refused database).

It holds the identity cache (raw identifier -> normalised, so the phone library runs
once per distinct number) and the sync ledger (what each destination acknowledged, runs,
per-record outcomes, the run lock: read and written by ``sync/ledger.py``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from sync.batches import batches

if TYPE_CHECKING:
    from sync.pending_identities import PendingIdentities

METADATA = sa.MetaData()


def _serial(table: str, column: str) -> sa.Sequence:
    """The id sequence, named as PostgreSQL's SERIAL names it (so stores created with SERIAL
    keep working): DuckDB has no SERIAL; SQLite ignores sequences (its rowid counts)."""
    return sa.Sequence(f"{table}_{column}_seq")


SCHEMA_MIGRATIONS = sa.Table(
    "schema_migrations",
    METADATA,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.String(40), nullable=False),
)
IDENTITY_CACHE = sa.Table(
    "identity_cache",
    METADATA,
    # A 64-bit hash of (namespace, raw): an integer key is the fastest lookup there is; the
    # stored namespace and raw value are compared on read, so a collision is just a miss.
    sa.Column("digest", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("namespace", sa.String(100), nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("normalised", sa.Text, nullable=False),  # '' = not a usable identifier
)

# --- the sync ledger (migration 2) -------------------------------------------------------
MEMBERSHIPS = sa.Table(
    "memberships",
    METADATA,
    # What each destination acknowledged holding for each contact we touched.
    sa.Column("destination", sa.String(63), primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("address", sa.Text, primary_key=True),  # email or E.164 phone, by channel
    sa.Column("email", sa.Text),
    sa.Column("phone", sa.Text),
    sa.Column("tags", sa.Text, nullable=False),  # our tags, sorted, comma-joined
    sa.Column("suppressed", sa.Boolean, nullable=False),  # a suppression we added
    sa.Column("reasons", sa.Text, nullable=False),  # why we suppressed, comma-joined
    sa.Column("fingerprint", sa.String(16), nullable=False),  # of address, tags, suppressed
    sa.Column("failed_fingerprint", sa.String(16)),  # desired state whose change failed permanently
    sa.Column("failure", sa.Text),  # the destination's reason for that failure
    sa.Column("run_id", sa.Integer, nullable=False),  # run of the last change
    sa.Column("changed_at", sa.String(40), nullable=False),
)
RUNS = sa.Table(
    "runs",
    METADATA,
    sa.Column("run_id", sa.Integer, _serial("runs", "run_id"), primary_key=True, autoincrement=True),
    sa.Column("command", sa.String(20), nullable=False),  # sync | apply
    sa.Column("status", sa.String(20), nullable=False),  # running, succeeded, ... (sync/ledger.py)
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("finished_at", sa.String(40)),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("summary", sa.Text),  # JSON: counts, failures, migration matrix, requests
)
OUTCOMES = sa.Table(
    "record_outcomes",
    METADATA,
    sa.Column("id", sa.Integer, _serial("record_outcomes", "id"), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, nullable=False, index=True),
    sa.Column("destination", sa.String(63), nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("change", sa.String(20), nullable=False),
    sa.Column("tag", sa.Text),
    sa.Column("status", sa.String(20), nullable=False),  # applied | failed_retryable | failed_permanent
    sa.Column("reason", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("at", sa.String(40), nullable=False, quote=True),
)
LEDGER_META = sa.Table(
    "ledger_meta",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),  # always 1
    sa.Column("store_id", sa.String(36), nullable=False),  # tells one store from another
    sa.Column("version", sa.BigInteger, nullable=False),  # +1 with every commit to the ledger
)
LOCKS = sa.Table(
    "locks",
    METADATA,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("owner", sa.String(36), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("heartbeat_at", sa.String(40), nullable=False),
)


# --- changes sent but not yet recorded (migration 3) ----------------------------------------
INTENTS = sa.Table(
    "intents",
    METADATA,
    # A change whose repetition has a side effect (an SMS unsubscribe texts the person) is
    # written here before it is sent and deleted when its outcome is committed. One still
    # here at the start of a run was sent by a run that died: it counts as sent.
    sa.Column("id", sa.Integer, _serial("intents", "id"), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("destination", sa.String(63), nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("change", sa.String(20), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # the Change, as the spool encodes it
    sa.Column("at", sa.String(40), nullable=False, quote=True),
    sa.Index("ix_intents_record", "destination", "key", "address"),
)


# --- keys verified in sync, skipped in the warehouse on the next run (migration 4) -----------
VERIFIED_KEYS = sa.Table(
    "verified_keys",
    METADATA,
    # A customer whose every destination was verified to hold exactly what the source row
    # with this digest asks for, under this config (sync/verified.py). A run whose source
    # row still has the digest skips the customer in the warehouse: nothing to send.
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("row_digest", sa.Text, nullable=False),  # computed by the warehouse, compared there
    sa.Column("config", sa.String(16), nullable=False),  # config_digest of the run that verified it
    # Stable hashes of the identifiers the email and phone suppression lists are matched on,
    # so a change to a list finds the customers it affects (sync/verified.py). Not indexed
    # (migration 5): a first sync writes a row per customer, and three indexes of random
    # hashes made that 12x slower than the one scan a list change costs instead.
    sa.Column("email_h", sa.BigInteger),
    sa.Column("phone_h", sa.BigInteger),
    sa.Column("digits_h", sa.BigInteger),
)
VERIFIED_HASH_INDEXES: Final = ("ix_verified_email", "ix_verified_phone", "ix_verified_digits")
LISTED_IDENTIFIERS = sa.Table(
    "listed_identifiers",
    METADATA,
    # The email and phone suppression lists as the verified keys were verified against:
    # one stable hash per (kind, identifier, sources listing it).
    sa.Column("entry", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(5), nullable=False),  # email | phone
    sa.Column("value_h", sa.BigInteger, nullable=False),
)


def _create_ledger(conn: Connection) -> None:
    for table in (MEMBERSHIPS, RUNS, OUTCOMES, LEDGER_META, LOCKS):
        table.create(conn)
    conn.execute(LEDGER_META.insert().values(id=1, store_id=str(uuid.uuid4()), version=0))


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def _create(*tables: sa.Table) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        for table in tables:
            table.create(conn)

    return apply


def _drop_indexes(names: tuple[str, ...]) -> Callable[[Connection], None]:
    """Drop indexes a store made by migration 4 has (a store created since never had them);
    unqualified, so in the store's schema (the connection's own)."""

    def apply(conn: Connection) -> None:
        for name in names:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")

    return apply


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "identity cache", _create(IDENTITY_CACHE)),
    Migration(2, "sync ledger: memberships, runs, record outcomes, lock", _create_ledger),
    Migration(3, "intents: changes sent at most once", _create(INTENTS)),
    Migration(4, "verified keys, skipped in the warehouse", _create(VERIFIED_KEYS, LISTED_IDENTIFIERS)),
    Migration(5, "verified keys: no indexes on identifier hashes", _drop_indexes(VERIFIED_HASH_INDEXES)),
)
KEY_BATCH: Final = 2_000  # keys per IN (...): under every driver's parameter limit
# DuckDB looks a list of keys up by scanning the table (a hash join, not its index), so a
# statement costs about the same for 2,000 keys as for 50,000: fewer, larger lists. They
# go as one list parameter (see key_in), so no parameter limit applies.
DUCKDB_KEY_BATCH: Final = 50_000
NOT_OURS: Final = "not a personasync state store"
RESTORE: Final = "restore it from a backup, or move it away to start again with a first sync"


class StateError(Exception):
    """The state store cannot be opened, is not personasync's, is damaged, or is from a newer
    personasync. The message says what to do."""


def create_state_engine(url: URL, schema: str | None = None) -> Engine:
    """An engine on the state store; a SQLite file (and its folder must exist) is created.

    ``schema``: keep the tables in this schema (created if missing) of the database, as
    ``[state] location = "warehouse"`` does; every connection starts in it.
    """
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        if not path.parent.is_dir():
            raise StateError(f"folder {path.parent} for the state file does not exist")
        if path.is_dir():
            raise StateError(
                f"{path} is a folder; set [state] url to a file, e.g. {path / 'personasync-state.db'}"
            )
    engine = sa.create_engine(url)
    if url.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    if url.get_backend_name() == "postgresql":
        sa.event.listen(engine, "connect", _postgres_custom_plans)
    if schema is not None:
        sa.event.listen(engine, "connect", _in_schema(url.get_backend_name(), schema))
    return engine


def _in_schema(backend: str, schema: str) -> Callable[[Any, object], None]:
    """A connect hook creating ``schema`` if missing and making it the connection's own."""
    quoted = '"' + schema.replace('"', '""') + '"'
    use = f"SET search_path TO {quoted}" if backend == "postgresql" else f"SET schema = '{schema}'"

    def enter(dbapi_connection: Any, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        cursor.execute(use)
        cursor.close()
        dbapi_connection.commit()

    return enter


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; safe with WAL
    cursor.close()


def _postgres_custom_plans(dbapi_connection: Any, _record: object) -> None:
    """Plan every statement with its parameters. psycopg prepares a statement run five
    times, and PostgreSQL then keeps one generic plan for it: the ledger's lookups, first
    planned while a first sync's tables were empty, went on scanning them whole as they
    filled (a 100k first sync with the state in the warehouse: 88 s, 26 s with this)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("SET plan_cache_mode = force_custom_plan")
    cursor.close()
    dbapi_connection.commit()


def migrate(engine: Engine) -> int:
    """Apply missing migrations; the schema version the store is now at.

    Refuses, writing nothing, a database that is not a personasync state store (another
    application's tables), a store from a newer personasync, and a damaged store (a table,
    column or row the recorded migrations created is gone).
    """
    with engine.connect() as conn:
        applied = _applied_versions(conn)
    newest = max(m.version for m in MIGRATIONS)
    unknown = {v for v in applied if v > newest}
    if unknown:
        raise StateError(
            f"the state store has schema version {max(unknown)}, newer than this personasync "
            f"understands ({newest}); upgrade personasync"
        )
    pending = [m for m in MIGRATIONS if m.version not in applied]
    if not pending:
        _check_schema(engine)
    if engine.dialect.name == "sqlite":  # persistent; set only once the file is known to be ours
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # readers do not block the writer
    if not pending:
        return newest
    with engine.begin() as conn:
        SCHEMA_MIGRATIONS.create(conn, checkfirst=True)
    for migration in pending:
        with engine.begin() as conn:
            migration.apply(conn)
            conn.execute(
                SCHEMA_MIGRATIONS.insert().values(
                    version=migration.version,
                    name=migration.name,
                    applied_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                )
            )
    _check_schema(engine)
    return newest


def _applied_versions(conn: Connection) -> set[int]:
    """The versions ``schema_migrations`` records; raises :class:`StateError` when the database
    is not a personasync state store."""
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    if SCHEMA_MIGRATIONS.name not in tables:
        # A SQLite file is ours alone; a PostgreSQL schema may hold other tables beside ours.
        foreign = sorted(tables if conn.dialect.name == "sqlite" else tables & set(METADATA.tables))
        if foreign:
            raise StateError(
                f"{NOT_OURS}: it holds tables personasync did not create ({_listed(foreign)}); "
                "point [state] url at a file of its own"
            )
        return set()
    columns = _column_names(conn, SCHEMA_MIGRATIONS.name)
    versions = set(conn.scalars(sa.select(SCHEMA_MIGRATIONS.c.version))) if "version" in columns else set()
    ours = columns == set(SCHEMA_MIGRATIONS.c.keys()) and all(isinstance(v, int) for v in versions)
    if not ours or (versions and 1 not in versions):  # personasync records 1, 2, ... from the first run
        raise StateError(
            f"{NOT_OURS}: its schema_migrations table belongs to another application; "
            "point [state] url at a file of its own"
        )
    return versions


def _check_schema(engine: Engine) -> None:
    """Every table and column of the current schema, and the ledger's one meta row, are there."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        tables = set(inspector.get_table_names())
        for table in METADATA.sorted_tables:
            if table.name not in tables:
                raise StateError(f"the state store is damaged: table {table.name!r} is missing; {RESTORE}")
            columns = set(
                conn.execute(sa.select(sa.text("*")).select_from(sa.table(table.name)).limit(0)).keys()
            )
            missing = [column.name for column in table.c if column.name not in columns]
            if missing:
                raise StateError(
                    f"the state store is damaged: table {table.name!r} lacks column {missing[0]!r}; {RESTORE}"
                )
        if conn.execute(sa.select(sa.func.count()).select_from(LEDGER_META)).scalar_one() != 1:
            raise StateError(f"the state store is damaged: table 'ledger_meta' lost its row; {RESTORE}")


def _column_names(conn: Connection, table: str) -> set[str]:
    """A table's columns, read off an empty result (the inspector fails on DuckDB's catalog)."""
    return set(conn.execute(sa.select(sa.text("*")).select_from(sa.table(table)).limit(0)).keys())


def _listed(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class SqlIdentityCache:
    """:class:`personas.identity.IdentityCache` in the state store. With ``pending``, what
    is stored is held there until the caller flushes it (see :mod:`sync.pending_identities`)."""

    # SQLite pages kept in memory by a connection that looks phones up (KiB, as PRAGMA
    # cache_size takes them): a run looks up every customer's phone, and with the default
    # 2 MiB nearly every lookup reads its pages from the file again. 16 MiB holds the whole
    # digest index at a million phones (12 MiB) and halves the time spent in system calls.
    SQLITE_PAGE_CACHE_KIB: Final = 16_384

    def __init__(self, engine: Engine, pending: PendingIdentities | None = None) -> None:
        self._engine = engine
        self._pending = pending

    def lookup(self, namespace: str, raws: Collection[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        digest = self._digester(namespace)
        digests = [digest(raw) for raw in raws]
        with self._engine.connect() as conn:
            # Plain driver SQL: this runs once per 2,000 phones on every run, and compiling an
            # expanding IN (...) each time cost more than the lookup itself. The rows are read
            # as the driver's tuples, through the result's fetch strategy (no Row objects).
            dialect = conn.dialect.name
            qmark = conn.dialect.paramstyle == "qmark" or dialect == "duckdb"  # duckdb takes "?"
            marker = "?" if qmark else "%s"
            if dialect == "sqlite" and not conn.connection.info.get("personasync_page_cache"):
                conn.exec_driver_sql(f"PRAGMA cache_size = -{self.SQLITE_PAGE_CACHE_KIB}")
                conn.connection.info["personasync_page_cache"] = True
            select = f"SELECT raw, normalised FROM identity_cache WHERE namespace = {marker} AND digest"
            statements: dict[int, str] = {}
            parameters: tuple[Any, ...]
            for batch in batches(digests, key_batch(dialect)):
                if dialect == "duckdb":  # the digests as one list parameter (see key_in)
                    sql, parameters = f"{select} = ANY(CAST(? AS BIGINT[]))", (namespace, batch)
                else:
                    if len(batch) not in statements:
                        statements[len(batch)] = f"{select} IN ({', '.join([marker] * len(batch))})"
                    sql, parameters = statements[len(batch)], (namespace, *batch)
                result = conn.exec_driver_sql(sql, parameters)
                found.update(result.cursor_strategy.fetchall(result, result.cursor))
        return found

    def store(self, namespace: str, normalised: Mapping[str, str]) -> None:
        digest = self._digester(namespace)
        rows = [
            {"digest": digest(raw), "namespace": namespace, "raw": raw, "normalised": v}
            for raw, v in normalised.items()
        ]
        if self._pending is not None:
            self._pending.add(rows)
            return
        with self._engine.begin() as conn:
            insert_rows(conn, IDENTITY_CACHE, rows, skip_existing=True)
        keep_statistics(self._engine, IDENTITY_CACHE)

    @staticmethod
    def _digester(namespace: str) -> Callable[[str], int]:
        """``cache_digest(namespace, raw)`` as a function of ``raw``, faster: the hash state
        after the namespace is made once."""
        prefix = hashlib.blake2b(f"{namespace}\x1f".encode(), digest_size=8)
        from_bytes = int.from_bytes

        def digest(raw: str) -> int:
            state = prefix.copy()
            state.update(raw.encode())
            return from_bytes(state.digest(), "big", signed=True)

        return digest


def cache_digest(namespace: str, raw: str) -> int:
    """A signed 64-bit hash of (namespace, raw), the same on every machine."""
    return stable_hash(f"{namespace}\x1f{raw}")


def stable_hash(text: str) -> int:
    """A signed 64-bit hash, the same on every machine and run (``hash()`` is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


# A table is analysed once its changes since the last ANALYZE reach this many rows plus this
# share of its size: autovacuum's own rule (see keep_statistics).
ANALYZE_AFTER_ROWS: Final = 1_000
ANALYZE_AFTER_SHARE: Final = 0.2
_ANALYZE_DUE = sa.text(
    "SELECT s.n_mod_since_analyze >= :rows + :share * greatest(c.reltuples, 0) "
    "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE s.relid = to_regclass(:table)"
)


def keep_statistics(engine: Engine, *tables: sa.Table) -> None:
    """On PostgreSQL, ``ANALYZE`` each of ``tables`` that has changed by 1,000 rows plus a
    fifth of its size since it was last analysed; other databases need nothing.

    PostgreSQL plans the store's lookups from what it last learned of each table, and only
    ANALYZE teaches it: autovacuum does, if it is on, between its naps. A first sync grows
    the ledger from nothing to millions of rows within one run; planned as if it were
    empty, the lookup of 2,000 keys read every ledger row of the destination (0.41 s a
    statement at 1.8M rows, growing with the table), and 27 ms once analysed. So each
    writer calls this after committing, and the store follows autovacuum's rule itself."""
    if engine.dialect.name != "postgresql":
        return
    quote = engine.dialect.identifier_preparer.quote
    with engine.connect() as conn:
        for table in tables:
            name = quote(table.name)  # found on the search path, as the store's statements are
            limits = {"rows": ANALYZE_AFTER_ROWS, "share": ANALYZE_AFTER_SHARE, "table": name}
            if conn.execute(_ANALYZE_DUE, limits).scalar():
                conn.exec_driver_sql(f"ANALYZE {name}")
            conn.commit()  # holds the table's ANALYZE lock no longer than that


def key_batch(dialect: str) -> int:
    """How many keys one statement of ``dialect`` should look up or delete (see :func:`key_in`)."""
    return DUCKDB_KEY_BATCH if dialect == "duckdb" else KEY_BATCH


def key_in(column: sa.ColumnElement[Any], keys: Sequence[Any], dialect: str) -> sa.ColumnElement[bool]:
    """``column IN (keys)``, for at most :func:`key_batch` keys. On DuckDB the keys go as one
    list parameter (``= ANY(?)``): it binds each parameter of an ``IN`` list slowly (2,000
    random keys of a 5M-row table: 191 ms a statement as an ``IN`` list, 87 ms as a list)."""
    if dialect == "duckdb":
        return column == sa.any_(sa.bindparam(None, list(keys), type_=sa.ARRAY(column.type)))
    return column.in_(list(keys))


def insert_rows(
    conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], *, skip_existing: bool = False
) -> None:
    """Insert ``rows`` (each with the same keys) into ``table``. ``skip_existing``: skip a row
    whose key is already there: two runs may write the same rows at once (the identity
    cache; a run whose lock was taken over), and the second must not fail.

    Values go to the driver as they are, without SQLAlchemy's type processing: ``str``,
    ``int``, ``bool`` and ``None``, which every state table holds and every driver takes.

    On DuckDB the rows go in as one list per column, unnested by the database: SQLAlchemy's
    multi-row ``VALUES`` binds every value as a parameter of its own, which DuckDB plans
    slowly (a first sync of 100k customers with the state in DuckDB spent 52 of its 79 s
    there; 20,000 ledger rows take 3.0 s that way and 0.13 s as lists)."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "duckdb":
        _insert_unnested(conn, table, rows, " ON CONFLICT DO NOTHING" if skip_existing else "")
        return
    statement = table.insert()
    if skip_existing and dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(table).on_conflict_do_nothing()
    elif skip_existing and dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement = pg_insert(table).on_conflict_do_nothing()
    # Compiled once and handed to the driver's executemany as plain values: through
    # SQLAlchemy each row's dict is processed in Python, which cost a first sync of 1M
    # customers some 24 s (the identity cache, the ledger, the verified keys).
    inline = statement.inline()  # ids from their sequence in the SQL, and nothing returned
    compiled = inline.compile(dialect=conn.dialect, column_keys=list(rows[0]))
    if compiled.positional:
        order = compiled.positiontup or []
        conn.exec_driver_sql(str(compiled), [tuple(row[name] for name in order) for row in rows])
    else:
        conn.exec_driver_sql(str(compiled), [dict(row) for row in rows])


def _insert_unnested(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], tail: str) -> None:
    names = list(rows[0])
    preparer = conn.dialect.identifier_preparer
    columns = [preparer.format_column(table.c[name]) for name in names]
    values = [f"unnest(CAST(? AS {table.c[name].type.compile(conn.dialect)}[]))" for name in names]
    for column in table.c:  # ids numbered by a sequence (DuckDB has no SERIAL)
        if column.name not in names and isinstance(column.default, sa.Sequence):
            columns.append(preparer.format_column(column))
            values.append(f"nextval('{column.default.name}')")
    conn.exec_driver_sql(
        f"INSERT INTO {preparer.format_table(table)} ({', '.join(columns)}) SELECT {', '.join(values)}{tail}",
        tuple([row[name] for row in rows] for name in names),
    )
