"""A corpus of bad state stores, each met by the real ``personasync`` commands.

The state store is personasync's own database (``sync/state.py``): versioned by
``schema_migrations``, migrated forward when opened. For each case the corpus checks what
an operator sees:

- a store from an older personasync (built here by hand from frozen copies of the older
  DDL, not from the current code) is migrated, keeps its ledger, and the next sync sends
  nothing it has not sent before;
- anything else that is not a usable personasync store (random bytes, a truncated or
  damaged file, a text file, another application's SQLite database, a store from a newer
  personasync, a folder, a path that cannot be written) is refused by ``sync``,
  ``sync --dry-run``, ``personas preview`` and ``runs list`` alike: exit 2, one ``problem``
  line naming the config file, ``state.url``, the state file and what to do; no traceback;
  nothing sent; and the file left byte for byte as it was.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_cli as run
from tests.sync_world import make_world

AS_OF = "2026-11-01"
STATE = "personasync-state.db"
CONFIG = "personasync.toml"
STATE_URL_LINE = 'url = "sqlite:///personasync-state.db"'
RESTORE = "restore it from a backup, or move it away"
NOT_OURS = "not a personasync state store"

# --- the state store's layout as older versions wrote it (frozen: never import these) ----
V1_DDL = (
    """CREATE TABLE schema_migrations (
        version INTEGER NOT NULL, name VARCHAR(200) NOT NULL, applied_at VARCHAR(40) NOT NULL,
        PRIMARY KEY (version))""",
    """CREATE TABLE identity_cache (
        digest BIGINT NOT NULL, namespace VARCHAR(100) NOT NULL, raw TEXT NOT NULL,
        normalised TEXT NOT NULL, PRIMARY KEY (digest))""",
)
V2_DDL = (
    *V1_DDL,
    """CREATE TABLE memberships (
        destination VARCHAR(63) NOT NULL, "key" TEXT NOT NULL, address TEXT NOT NULL, email TEXT,
        phone TEXT, tags TEXT NOT NULL, suppressed BOOLEAN NOT NULL, reasons TEXT NOT NULL,
        fingerprint VARCHAR(16) NOT NULL, failed_fingerprint VARCHAR(16), failure TEXT,
        run_id INTEGER NOT NULL, changed_at VARCHAR(40) NOT NULL,
        PRIMARY KEY (destination, "key", address))""",
    """CREATE TABLE runs (
        run_id INTEGER NOT NULL, command VARCHAR(20) NOT NULL, status VARCHAR(20) NOT NULL,
        started_at VARCHAR(40) NOT NULL, finished_at VARCHAR(40), host VARCHAR(255) NOT NULL,
        pid INTEGER NOT NULL, summary TEXT, PRIMARY KEY (run_id))""",
    """CREATE TABLE record_outcomes (
        id INTEGER NOT NULL, run_id INTEGER NOT NULL, destination VARCHAR(63) NOT NULL,
        "key" TEXT NOT NULL, address TEXT NOT NULL, change VARCHAR(20) NOT NULL, tag TEXT,
        status VARCHAR(20) NOT NULL, reason TEXT, attempts INTEGER NOT NULL, at VARCHAR(40) NOT NULL,
        PRIMARY KEY (id))""",
    "CREATE INDEX ix_record_outcomes_run_id ON record_outcomes (run_id)",
    """CREATE TABLE ledger_meta (
        id INTEGER NOT NULL, store_id VARCHAR(36) NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (id))""",
    """CREATE TABLE locks (
        name VARCHAR(40) NOT NULL, owner VARCHAR(36) NOT NULL, host VARCHAR(255) NOT NULL,
        pid INTEGER NOT NULL, started_at VARCHAR(40) NOT NULL, heartbeat_at VARCHAR(40) NOT NULL,
        PRIMARY KEY (name))""",
)
OLDER = {
    1: (V1_DDL, ("identity_cache",)),
    2: (V2_DDL, ("identity_cache", "memberships", "runs", "record_outcomes", "ledger_meta", "locks")),
}
APPLIED = (
    (1, "identity cache", "2026-01-05T10:00:00+00:00"),
    (2, "sync ledger: memberships, runs, record outcomes, lock", "2026-03-02T10:00:00+00:00"),
)
CURRENT_VERSIONS = [1, 2, 3, 4, 5]


@dataclass(frozen=True)
class Template:
    """A demo warehouse and config after one real sync: its state store (current version,
    with a ledger) and the files the destinations received."""

    folder: Path

    @property
    def state(self) -> Path:
        return self.folder / STATE

    def outbox(self) -> dict[str, bytes]:
        return read_outbox(self.folder)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    folder = tmp_path_factory.mktemp("bad-state-template")
    make_world(folder, customers=120)
    result, output = run("sync", "--config", str(folder / CONFIG), "--as-of", AS_OF, "--allow-large-changes")
    assert result.exit_code == 0, output
    assert not (folder / f"{STATE}-wal").exists()  # checkpointed: the file alone is the store
    return Template(folder)


def read_outbox(folder: Path) -> dict[str, bytes]:
    outbox = folder / "outbox"
    return {str(p.relative_to(outbox)): p.read_bytes() for p in sorted(outbox.rglob("*.csv"))}


def digest(path: Path) -> str | None:
    """The file's bytes (None: no file); for a folder, its listing."""
    if path.is_dir():
        return repr(sorted(p.name for p in path.iterdir()))
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def sql(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def query(path: Path, statement: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute(statement).fetchall()
    conn.close()
    return rows


def older_store(path: Path, version: int, ledger_from: Path | None = None) -> None:
    """A store as personasync wrote it at schema ``version``, with the data of ``ledger_from``'s
    tables of that version copied in."""
    ddl, tables = OLDER[version]
    with sqlite3.connect(path) as conn:
        for statement in ddl:
            conn.execute(statement)
        conn.executemany("INSERT INTO schema_migrations VALUES (?, ?, ?)", APPLIED[:version])
        if ledger_from is not None:
            conn.execute("ATTACH DATABASE ? AS old", (str(ledger_from),))
            for table in tables:  # the older layout's columns, whatever the current one added
                columns = ", ".join(f'"{r[1]}"' for r in conn.execute(f"PRAGMA main.table_info({table})"))
                conn.execute(f"INSERT INTO main.{table} ({columns}) SELECT {columns} FROM old.{table}")
            conn.commit()
            conn.execute("DETACH DATABASE old")
    conn.close()


def copy_of_current(path: Path, template: Template, *statements: str) -> None:
    shutil.copy(template.state, path)
    sql(path, *statements)


# --- refused stores -----------------------------------------------------------------------
Make = Callable[[Path, Template], None]


@dataclass(frozen=True)
class Refused:
    id: str
    make: Make  # writes the bad store at the path (which the config names)
    message: tuple[str, ...]  # on the problem line, besides the state file's path
    state_url: str | None = None  # the config's [state] url; @HERE@ is the case's folder
    state_path: str = STATE  # what the problem line must name, relative to the case's folder


def nothing(path: Path, template: Template) -> None:
    del path, template


def write(data: bytes) -> Make:
    def make(path: Path, template: Template) -> None:
        path.write_bytes(data)

    return make


def from_template(transform: Callable[[bytes], bytes]) -> Make:
    def make(path: Path, template: Template) -> None:
        path.write_bytes(transform(template.state.read_bytes()))

    return make


def foreign(*statements: str) -> Make:
    def make(path: Path, template: Template) -> None:
        sql(path, *statements)

    return make


def damaged(*statements: str) -> Make:
    def make(path: Path, template: Template) -> None:
        copy_of_current(path, template, *statements)

    return make


def directory(path: Path, template: Template) -> None:
    path.mkdir()


def unwritable_location() -> str:
    """A folder even root cannot create files in."""
    return "sqlite:////proc/personasync-bad-state.db"


REFUSED: list[Refused] = [
    Refused("random-bytes", write(random.Random(7).randbytes(16_384)), ("file is not a database", RESTORE)),
    Refused("gzipped-state-store", from_template(gzip.compress), ("file is not a database", RESTORE)),
    Refused("truncated-to-half", from_template(lambda b: b[: len(b) // 2]), ("malformed", RESTORE)),
    Refused("truncated-to-the-header", from_template(lambda b: b[:100]), ("malformed", RESTORE)),
    Refused(
        "header-overwritten",
        from_template(lambda b: b"X" * 16 + b[16:]),
        ("file is not a database", RESTORE),
    ),
    Refused("csv-text-file", write(b"key,email\n1,a@example.com\n"), ("file is not a database", RESTORE)),
    Refused("json-file", write(b'{"memberships": []}\n' * 40), ("file is not a database", RESTORE)),
    Refused(
        "the-config-file-itself",
        nothing,
        ("file is not a database", RESTORE),
        state_url=f"sqlite:///@HERE@/{CONFIG}",
        state_path=CONFIG,
    ),
    Refused(
        "another-apps-database",
        foreign(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO users VALUES (1, 'x')"
        ),
        (NOT_OURS, "users", "[state] url"),
    ),
    Refused(
        "the-warehouse-file",
        nothing,
        (NOT_OURS, "customers", "[state] url"),
        state_url="sqlite:///@HERE@/warehouse.db",
        state_path="warehouse.db",
    ),
    Refused(
        "a-table-with-our-name-and-other-columns",
        foreign("CREATE TABLE memberships (id INTEGER PRIMARY KEY, member TEXT)"),
        (NOT_OURS, "memberships", "[state] url"),
    ),
    Refused(
        "identity-cache-of-another-shape",
        foreign(
            "CREATE TABLE identity_cache (k TEXT PRIMARY KEY, v TEXT)",
            "INSERT INTO identity_cache VALUES (1, 2)",
        ),
        (NOT_OURS, "identity_cache", "[state] url"),
    ),
    Refused(
        "rails-schema-migrations",
        foreign(
            "CREATE TABLE schema_migrations (version VARCHAR NOT NULL PRIMARY KEY)",
            "INSERT INTO schema_migrations VALUES ('20240101120000')",
        ),
        (NOT_OURS, "schema_migrations", "[state] url"),
    ),
    Refused(
        "schema-migrations-with-timestamps",
        foreign(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)",
            "INSERT INTO schema_migrations VALUES (20240101120000, 'create users', '2024-01-01')",
            "CREATE TABLE users (id INTEGER PRIMARY KEY)",
        ),
        (NOT_OURS, "[state] url"),
    ),
    Refused(
        "newer-version",
        damaged("INSERT INTO schema_migrations VALUES (6, 'from the future', '2030-01-01')"),
        ("schema version 6, newer than this personasync understands (5); upgrade personasync",),
    ),
    Refused(
        "much-newer-version-with-new-tables",
        damaged(
            "INSERT INTO schema_migrations VALUES (999, 'far future', '2040-01-01')",
            "CREATE TABLE audiences (id INTEGER PRIMARY KEY)",
            "DROP TABLE identity_cache",
        ),
        ("schema version 999", "upgrade personasync"),
    ),
    Refused(
        "damaged-memberships-table-missing",
        damaged("DROP TABLE memberships"),
        ("damaged", "memberships", RESTORE),
    ),
    Refused("damaged-intents-table-missing", damaged("DROP TABLE intents"), ("damaged", "intents", RESTORE)),
    Refused(
        "damaged-column-missing",
        damaged("ALTER TABLE memberships DROP COLUMN failure"),
        ("damaged", "memberships", "failure", RESTORE),
    ),
    Refused(
        "damaged-ledger-meta-row-missing",
        damaged("DELETE FROM ledger_meta"),
        ("damaged", "ledger_meta", RESTORE),
    ),
    Refused(
        "migration-recorded-but-not-applied",
        damaged("DROP TABLE locks"),
        ("damaged", "locks", RESTORE),
    ),
    Refused("a-folder-in-place-of-the-file", directory, ("is a folder; set [state] url to a file",)),
    Refused(
        "state-folder-missing",
        nothing,
        ("for the state file does not exist",),
        state_url="sqlite:///@HERE@/no/such/folder/state.db",
        state_path="no/such/folder/state.db",
    ),
    Refused(
        "a-location-that-cannot-be-written",
        nothing,
        ("cannot open the state store", "writable"),
        state_url=unwritable_location(),
        state_path="/proc/personasync-bad-state.db",
    ),
]

COMMANDS = (
    ("sync", "--allow-large-changes", "--quiet", "--as-of", AS_OF),
    ("sync", "--dry-run", "--quiet", "--as-of", AS_OF),
    ("personas", "preview", "--as-of", AS_OF),
    ("runs", "list"),
)


def case_folder(tmp_path: Path, template: Template, state_url: str | None) -> Path:
    for name in ("warehouse.db", CONFIG):
        shutil.copy(template.folder / name, tmp_path / name)
    if state_url is not None:
        config = tmp_path / CONFIG
        text = config.read_text(encoding="utf-8")
        assert STATE_URL_LINE in text
        url = state_url.replace("@HERE@", str(tmp_path))
        config.write_text(text.replace(STATE_URL_LINE, f'url = "{url}"'), encoding="utf-8")
    return tmp_path


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in REFUSED] + [c.id for c in ADOPTED]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 25


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in REFUSED])
def test_a_bad_state_store_is_refused(case: Refused, template: Template, tmp_path: Path) -> None:
    if case.id == "a-location-that-cannot-be-written" and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc, which nobody can create files in")
    folder = case_folder(tmp_path, template, case.state_url)
    state = Path(case.state_path) if case.state_path.startswith("/") else folder / case.state_path
    case.make(state, template)
    before, listing = digest(state), sorted(p.name for p in folder.iterdir())
    config = folder / CONFIG

    for command in COMMANDS:
        result, output = run(*command, "--config", str(config))
        assert result.exit_code == 2, (command, output)
        problems = [line for line in output.splitlines() if line.startswith("problem")]
        assert len(problems) == 1, (command, output)
        line = problems[0]
        assert line.startswith(f"problem  {config}: state.url: "), line
        assert str(state) in line, f"the problem line should name {state}:\n{line}"
        for text in case.message:
            assert text in line, f"expected {text!r} in:\n{line}"
        assert not (folder / "outbox").exists(), "something was sent"
        assert digest(state) == before, f"{command} changed {state}"
        assert sorted(p.name for p in folder.iterdir()) == listing, f"{command} left files behind"


# --- stores that are adopted or migrated --------------------------------------------------
Check = Callable[[Path, Template, str], None]


@dataclass(frozen=True)
class Adopted:
    id: str
    make: Make
    check: Check  # called with the case folder, the template and the sync's output
    first_sync: bool  # the store holds no ledger: the sync is a first sync


def check_nothing_more(folder: Path, template: Template, output: str) -> None:
    """The ledger was kept: the run planned no change and the files did not change."""
    document = json.loads(output[output.index("{") :])
    assert [sum(d["changes"].values()) for d in document["destinations"]] == [0, 0], output
    assert read_outbox(folder) == template.outbox()
    assert query(folder / STATE, "SELECT count(*) FROM memberships") == query(
        template.state, "SELECT count(*) FROM memberships"
    )


def check_cache_kept(folder: Path, template: Template, output: str) -> None:
    assert ("phone:XX:kept", "+14155550100") in query(
        folder / STATE, "SELECT namespace, normalised FROM identity_cache"
    )


def check_interrupted(folder: Path, template: Template, output: str) -> None:
    check_nothing_more(folder, template, output)
    statuses = dict(query(folder / STATE, "SELECT run_id, status FROM runs"))  # type: ignore[arg-type]
    assert statuses[1] == "succeeded" and statuses[2] == "interrupted" and statuses[3] == "succeeded", (
        statuses
    )


def check_first_sync(folder: Path, template: Template, output: str) -> None:
    assert read_outbox(folder) == template.outbox()


def v1_with_cache(path: Path, template: Template) -> None:
    older_store(path, 1)
    sql(path, "INSERT INTO identity_cache VALUES (42, 'phone:XX:kept', '(415) 555-0100', '+14155550100')")


def v2_with_ledger(path: Path, template: Template) -> None:
    older_store(path, 2, ledger_from=template.state)


def v2_with_a_dead_run(path: Path, template: Template) -> None:
    v2_with_ledger(path, template)
    sql(
        path,
        "INSERT INTO runs (run_id, command, status, started_at, host, pid) "
        "VALUES (2, 'sync', 'running', '2026-10-31T23:00:00+00:00', 'old-host', 4242)",
    )


def empty_sqlite(path: Path, template: Template) -> None:
    sql(path, "CREATE TABLE t (x)", "DROP TABLE t")  # a valid database file with no tables
    assert path.stat().st_size > 0


def only_schema_migrations(path: Path, template: Template) -> None:
    sql(path, V1_DDL[0])  # a first run that died right after creating it


ADOPTED: list[Adopted] = [
    Adopted("zero-length-file", write(b""), check_first_sync, first_sync=True),
    Adopted("empty-sqlite-database", empty_sqlite, check_first_sync, first_sync=True),
    Adopted("only-an-empty-schema-migrations", only_schema_migrations, check_first_sync, first_sync=True),
    Adopted("version-1-keeps-its-identity-cache", v1_with_cache, check_cache_kept, first_sync=True),
    Adopted("version-1-first-sync", v1_with_cache, check_first_sync, first_sync=True),
    Adopted("version-2-ledger-sends-nothing-new", v2_with_ledger, check_nothing_more, first_sync=False),
    Adopted(
        "version-2-dead-run-is-marked-interrupted", v2_with_a_dead_run, check_interrupted, first_sync=False
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in ADOPTED])
def test_an_older_or_empty_state_store_is_migrated(case: Adopted, template: Template, tmp_path: Path) -> None:
    folder = case_folder(tmp_path, template, None)
    state = folder / STATE
    case.make(state, template)
    if not case.first_sync:
        shutil.copytree(template.folder / "outbox", folder / "outbox")
    config = str(folder / CONFIG)

    flags = ("--allow-large-changes",) if case.first_sync else ()  # a first sync suppresses many
    dry, dry_output = run(
        "sync", "--config", config, "--as-of", AS_OF, "--dry-run", "--format", "json", "-q", *flags
    )
    assert dry.exit_code == 0, dry_output
    planned = sum(sum(d["changes"].values()) for d in json.loads(dry.stdout)["destinations"])
    assert (planned > 0) == case.first_sync, dry_output

    result, output = run("sync", "--config", config, "--as-of", AS_OF, "--format", "json", "-q", *flags)
    assert result.exit_code == 0, output
    assert [
        v for (v,) in query(state, "SELECT version FROM schema_migrations ORDER BY version")
    ] == CURRENT_VERSIONS
    assert query(state, "SELECT count(*) FROM intents") == [(0,)]
    case.check(folder, template, result.stdout)

    again, again_output = run("sync", "--config", config, "--as-of", AS_OF, "--format", "json", "-q")
    assert again.exit_code == 0, again_output
    assert sum(sum(d["changes"].values()) for d in json.loads(again.stdout)["destinations"]) == 0


def test_a_version_2_store_keeps_its_run_history(template: Template, tmp_path: Path) -> None:
    folder = case_folder(tmp_path, template, None)
    v2_with_ledger(folder / STATE, template)
    result, output = run("runs", "list", "--config", str(folder / CONFIG), "--format", "json")
    assert result.exit_code == 0, output
    runs = json.loads(result.stdout)
    assert [(r["run_id"], r["status"]) for r in runs] == [(1, "succeeded")] and runs[0]["applied"] > 0


def test_a_state_store_of_another_warehouse_is_stopped_by_the_guardrail(
    template: Template, tmp_path: Path
) -> None:
    """personasync does not record which warehouse a store belongs to; what protects the
    destinations is the removal guardrail: every customer the ledger holds is gone."""
    folder = case_folder(tmp_path, template, None)
    shutil.copy(template.state, folder / STATE)
    shutil.copytree(template.folder / "outbox", folder / "outbox")
    sql(folder / "warehouse.db", "UPDATE customers SET customer_id = customer_id + 1000000")
    before = digest(folder / STATE), read_outbox(folder)

    result, output = run("sync", "--config", str(folder / CONFIG), "--as-of", AS_OF, "--quiet")

    assert result.exit_code == 3, output
    assert "max_remove_percent" in output and "--allow-large-changes" in output, output
    assert read_outbox(folder) == before[1], "something was sent"
    assert query(folder / STATE, "SELECT status FROM runs ORDER BY run_id DESC LIMIT 1") == [("blocked",)]
