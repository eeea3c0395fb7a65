"""Loading good configs: the example, env interpolation, paths, and secrets kept secret."""

from __future__ import annotations

import re
import shutil
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from connectors.demo_data import write_sqlite_demo
from sync.app import example_config_text
from sync.cli import cli
from sync.config import DESTINATION_TYPES, AppConfig, FileDestinationConfig, database_url, display_url
from sync.config_loader import ConfigError, load_config
from sync.redact import Redactor, secrets_in
from tests.conftest import SMALL_DEMO

REPO = Path(__file__).resolve().parent.parent


def test_config_example_is_the_packaged_template() -> None:
    assert example_config_text() == (REPO / "config.example.toml").read_text(encoding="utf-8")


def test_config_example_validates_against_the_demo_warehouse(tmp_path: Path) -> None:
    (tmp_path / "personasync-demo").mkdir()
    write_sqlite_demo(tmp_path / "personasync-demo" / "warehouse.db", SMALL_DEMO)
    shutil.copy(REPO / "config.example.toml", tmp_path)
    config = load_config(tmp_path / "config.example.toml")
    assert [p.name for p in config.personas] == [
        "serial_refunder",
        "champion",
        "loyal",
        "new_customer",
        "at_risk",
        "win_back",
        "sms_responder",
    ]
    result = CliRunner().invoke(cli, ["validate", "--config", str(tmp_path / "config.example.toml")])
    assert result.exit_code == 0, result.output
    assert "problem" not in result.output


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "personasync.toml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
[warehouse]
url = "sqlite:///data/warehouse.db"
[source]
table = "customers"
key = "customer_id"
[consent.email]
column = "email_opt_in"
[[destinations]]
type = "file"
name = "outbox"
channel = "email"
path = "out"
"""


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL))
    assert database_url(config.warehouse.url).database == str(tmp_path / "data" / "warehouse.db")
    assert config.state.url is not None
    assert database_url(config.state.url).database == str(tmp_path / "personasync-state.db")
    destination = config.destinations[0]
    assert isinstance(destination, FileDestinationConfig)
    assert destination.path == str(tmp_path / "out")


def test_env_references_are_replaced_and_the_password_stays_secret(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        '"sqlite:///data/warehouse.db"', '"postgresql+psycopg://analyst:${PS_TEST_PW}@db.internal:5432/dw"'
    ).replace('table = "customers"', 'table = "${PS_TEST_SCHEMA}.customers"')
    config = load_config(
        _write(tmp_path, text), environ={"PS_TEST_PW": "hunter2-long", "PS_TEST_SCHEMA": "mart"}
    )
    assert config.source.table == "mart.customers"
    assert database_url(config.warehouse.url).password == "hunter2-long"
    assert "hunter2-long" not in repr(config) and "hunter2-long" not in str(config)
    assert "hunter2-long" not in display_url(config.warehouse.url)
    assert Redactor(secrets_in(config))("login with hunter2-long failed") == "login with *** failed"


def test_dollar_dollar_is_a_literal_dollar(tmp_path: Path) -> None:
    text = MINIMAL.replace('table = "customers"', "query = \"SELECT * FROM t WHERE price > '$$5'\"")
    config = load_config(_write(tmp_path, text), environ={})
    assert config.source.query == "SELECT * FROM t WHERE price > '$5'"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = MINIMAL.replace('key = "customer_id"', 'key = "customer_id"\nemial = "email"').replace(
        'channel = "email"', 'channel = "mail"'
    )
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, text))
    keys = [p.key for p in error.value.problems]
    assert keys == ["source.emial", "destinations[0].channel"]


def test_redactor_masks_url_passwords_it_was_not_told_about() -> None:
    redact = Redactor(["api-key-123456"])
    text = "failed: postgresql+psycopg://analyst:hunter2-long@db:5432/dw with api-key-123456"
    assert redact(text) == "failed: postgresql+psycopg://analyst:***@db:5432/dw with ***"
    assert redact("sqlite:////tmp/warehouse.db") == "sqlite:////tmp/warehouse.db"


def _field_names(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """Every key a config model accepts, nested models included (rule nodes once)."""
    seen.add(model)
    names = {info.alias or name for name, info in model.model_fields.items()}
    for info in model.model_fields.values():
        pending = [info.annotation]
        while pending:
            annotation = pending.pop()
            pending.extend(typing.get_args(annotation))
            if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in seen:
                names |= _field_names(annotation, seen)
    return names


def test_every_config_key_is_documented_in_the_example() -> None:
    example = (REPO / "config.example.toml").read_text(encoding="utf-8")
    seen: set[type[BaseModel]] = set()
    keys = set().union(*(_field_names(m, seen) for m in [AppConfig, *DESTINATION_TYPES.values()]))
    shown = set(re.findall(r"[\[{,#\s]([a-z_]+)\s*=", example)) | {
        k for h in re.findall(r"\[+([a-z_.]+)", example) for k in h.split(".")
    }
    assert not sorted(keys - shown), f"config.example.toml does not show: {sorted(keys - shown)}"
