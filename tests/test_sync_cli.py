"""``personasync demo``, ``sync``, ``apply``, ``runs`` and ``destinations`` as an operator runs them."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import responses
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from connectors.demo_data import mutate_sqlite_demo
from sync.cli import cli
from sync.config import database_url
from sync.config_loader import load_config
from sync.lock import acquire
from sync.state import create_state_engine
from tests.sync_world import LEDGER_TABLES, make_world

AS_OF = "2026-11-01"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.csv"))}


def ledger_tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as conn:
        return {table: conn.execute(f"SELECT * FROM {table}").fetchall() for table in LEDGER_TABLES}


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    folder = tmp_path / "demo"
    code, output = run("demo", "--dir", str(folder), "--customers", "600", "--as-of", AS_OF)
    assert code == 0, output
    return folder


def test_the_demo_syncs_into_csv_files_and_a_second_run_changes_nothing(demo: Path) -> None:
    members = (demo / "outbox" / "email" / "members.csv").read_text().splitlines()
    assert members[0] == "key,email,phone,tags"
    assert len(members) > 50 and all("persona:" in line for line in members[1:])
    keys = [line.split(",")[0] for line in members[1:]]
    assert keys == sorted(keys)
    suppressions = (demo / "outbox" / "sms" / "suppressions.csv").read_text()
    assert "no_consent" in suppressions
    files = digest(demo / "outbox")
    code, output = run("demo", "--dir", str(demo), "--customers", "600", "--as-of", AS_OF)
    assert code == 0, output
    assert "0 change(s) planned, 0 request(s) sent" in output
    assert digest(demo / "outbox") == files
    assert not list((demo / "outbox").rglob(".*.tmp"))  # atomic writes leave nothing behind


def test_demo_mutate_shows_a_small_explainable_diff(demo: Path) -> None:
    code, output = run("demo", "--dir", str(demo), "--customers", "600", "--as-of", AS_OF, "--mutate")
    assert code == 0, output
    changed = int(re.search(r"Mutation 1: changed (\d+) customers", output).group(1))  # type: ignore[union-attr]
    assert 10 <= changed <= 300
    assert "moves since the last sync" in output and "changed email address" in output
    planned = int(re.search(r"([\d,]+) change\(s\) planned", output).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 0 < planned <= 4 * changed  # a few changes per changed customer, not a resend


def test_dry_run_json_is_documented_and_writes_nothing(demo: Path) -> None:
    config = str(demo / "personasync.toml")
    mutate_sqlite_demo(demo / "warehouse.db")  # changed in the warehouse, not synced yet
    before = ledger_tables(demo / "personasync-state.db")
    code, output = run("sync", "--dry-run", "--config", config, "--as-of", AS_OF, "--format", "json")
    assert code == 0, output
    data = json.loads(output)
    assert data["dry_run"] is True and data["run_id"] is None and data["status"] == "dry_run"
    plan = data["destinations"][0]
    assert set(plan) >= {"destination", "channel", "changes", "customers", "tags", "migrations", "estimate",
                         "guardrails", "samples", "audience", "result"}  # fmt: skip
    assert set(plan["changes"]) == {"suppress", "remove_tag", "unsuppress", "add_tag"}
    assert sum(plan["changes"].values()) > 0 and plan["result"] is None
    assert ledger_tables(demo / "personasync-state.db") == before


def test_a_run_while_another_holds_the_lock_exits_4_and_names_the_holder(demo: Path) -> None:
    config = load_config(demo / "personasync.toml")
    assert config.state.url is not None
    engine = create_state_engine(database_url(config.state.url))
    lock = acquire(engine, timedelta(hours=1))
    try:
        code, output = run("sync", "--config", str(demo / "personasync.toml"), "--as-of", AS_OF)
    finally:
        lock.release()
        engine.dispose()
    assert code == 4
    assert "another run holds the lock" in output and "pid" in output


def test_plan_out_then_apply_and_apply_refuses_a_stale_plan(demo: Path, tmp_path: Path) -> None:
    config = str(demo / "personasync.toml")
    mutate_sqlite_demo(demo / "warehouse.db")
    plan = tmp_path / "plan.jsonl"
    run("sync", "--dry-run", "--config", config, "--as-of", AS_OF, "--plan-out", str(plan))
    code, output = run("apply", str(plan), "--config", config)
    assert code == 0, output
    assert "0 change(s) planned" not in output
    code, output = run("sync", "--dry-run", "--config", config, "--as-of", AS_OF, "--format", "json")
    assert sum(sum(d["changes"].values()) for d in json.loads(output)["destinations"]) == 0
    code, output = run("apply", str(plan), "--config", config)
    assert code == 2 and "changed since this plan was made" in output


def test_runs_list_and_show(demo: Path) -> None:
    config = str(demo / "personasync.toml")
    code, output = run("runs", "list", "--config", config, "--format", "json")
    assert code == 0
    runs = json.loads(output)
    assert runs[0]["status"] == "succeeded" and runs[0]["applied"] > 0 and runs[0]["requests"] >= 2
    code, output = run("runs", "show", str(runs[0]["run_id"]), "--config", config, "--format", "json")
    shown = json.loads(output)
    assert shown["failure_count"] == 0 and shown["summary"]["destinations"][0]["migrations"]
    code, output = run("runs", "show", str(runs[0]["run_id"]), "--config", config)
    assert code == 0 and "email_outbox" in output and "moves since the last sync" in output
    code, output = run("runs", "show", "999", "--config", config)
    assert code == 2 and "no run 999" in output


def test_an_unknown_destination_is_a_usage_error(demo: Path) -> None:
    code, output = run("sync", "--config", str(demo / "personasync.toml"), "--destination", "emial_outbox")
    assert code == 2 and "unknown destination 'emial_outbox'" in output


def test_json_logs_are_one_object_per_line(demo: Path) -> None:
    mutate_sqlite_demo(demo / "warehouse.db")
    result = CliRunner().invoke(
        cli, ["sync", "--config", str(demo / "personasync.toml"), "--as-of", AS_OF, "--log-format", "json"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines and all({"ts", "level", "message"} <= set(line) for line in lines)
    assert any(line.get("destination") == "email_outbox" for line in lines)


def test_sigterm_stops_a_run_cleanly_and_releases_the_lock(tmp_path: Path) -> None:
    make_world(tmp_path, customers=50_000)  # a demo warehouse and config (file destinations)
    state = tmp_path / "personasync-state.db"
    command = [sys.executable, "-m", "sync.cli_main", "sync", "--config", str(tmp_path / "personasync.toml")]
    proc = subprocess.Popen([*command, "--allow-large-changes", "--quiet", "--as-of", AS_OF])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not _lock_held(state):
        time.sleep(0.02)
    assert _lock_held(state), "the run never took the lock"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not _lock_held(state)  # released: the next scheduled run does not wait for it to go stale


def _lock_held(state: Path) -> bool:
    if not state.exists():
        return False
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5) as conn:
            return bool(conn.execute("SELECT count(*) FROM locks").fetchone()[0])
    except sqlite3.OperationalError:  # the tables are being created
        return False


@pytest.mark.postgres
def test_no_secret_reaches_output_logs_plans_or_state(
    tmp_path: Path, postgres_schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "Sup3r-S3cret-Passw0rd"  # trust auth on the test server accepts any password
    state_url = make_url(postgres_schema_url).set(password=secret).render_as_string(hide_password=False)
    monkeypatch.setenv("PS_TEST_STATE_URL", state_url)
    make_world(tmp_path, customers=300, state_url="${PS_TEST_STATE_URL}")
    config = str(tmp_path / "personasync.toml")
    plan = tmp_path / "plan.jsonl"
    outputs = []
    for args in (
        [
            "sync",
            "--config",
            config,
            "--as-of",
            AS_OF,
            "--dry-run",
            "--plan-out",
            str(plan),
            "--format",
            "json",
        ],
        ["sync", "--config", config, "--as-of", AS_OF, "--allow-large-changes", "--log-format", "json"],
        ["runs", "show", "1", "--config", config, "--format", "json"],
        ["runs", "list", "--config", config],
        ["validate", "--config", config],
    ):
        result = CliRunner().invoke(cli, args)
        outputs.append(result.output + (result.stderr or ""))
    assert "Run 1: succeeded" in outputs[1]
    assert all(secret not in output for output in outputs)
    assert secret not in plan.read_text()
    engine = sa.create_engine(postgres_schema_url)
    try:
        with engine.connect() as conn:
            for table in LEDGER_TABLES:
                assert secret not in repr(conn.execute(sa.text(f"SELECT * FROM {table}")).all())
    finally:
        engine.dispose()


KLAVIYO_BLOCK = """
[[destinations]]
type = "klaviyo"
name = "klaviyo_email"
channel = "email"
api_key = "${KLAVIYO_TEST_KEY}"
lists = { champion = "LstChamp" }
"""


def test_destinations_check_reads_only_and_names_each_problem(
    demo: Path, monkeypatch: pytest.MonkeyPatch, rsps: responses.RequestsMock
) -> None:
    from tests.fakes.klaviyo import KlaviyoModel

    config = demo / "personasync.toml"
    config.write_text(config.read_text() + KLAVIYO_BLOCK)
    account = KlaviyoModel("pk_right_key_0123456789")
    account.attach(rsps)
    account.lists["LstChamp"] = set()
    monkeypatch.setenv("KLAVIYO_TEST_KEY", "pk_right_key_0123456789")
    code, output = run("destinations", "check", "-c", str(config))
    assert code == 0, output
    assert re.search(r"^ok +klaviyo_email +klaviyo, email$", output, re.M), output
    assert re.search(r"^ok +email_outbox +file, email$", output, re.M), output

    del account.lists["LstChamp"]
    code, output = run("destinations", "check", "-c", str(config), "-d", "klaviyo_email")
    assert code == 5 and "email_outbox" not in output
    assert "problem  klaviyo_email  klaviyo, email: klaviyo_email: list 'LstChamp'" in output

    monkeypatch.setenv("KLAVIYO_TEST_KEY", "pk_wrong_key_9876543210")
    code, output = run("destinations", "check", "-c", str(config), "--format", "json")
    assert code == 5 and "pk_wrong_key_9876543210" not in output
    rows = {row["destination"]: row for row in json.loads(output[: output.rindex("]") + 1])}
    assert rows["email_outbox"]["ok"] and not rows["klaviyo_email"]["ok"]
    assert "refused the API key" in rows["klaviyo_email"]["problem"]
    assert account.writes() == 0
