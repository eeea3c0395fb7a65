"""The resolver query compiles for warehouses we cannot run here (Snowflake, BigQuery),
when their SQLAlchemy dialects are installed; skipped otherwise."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from personas.query import build_resolver_query, email_groups_query, unusual_emails_query
from sync.app import example_config_text
from sync.config import AppConfig
from sync.config_loader import load_config

KINDS = {
    "customer_id": "number", "email": "text", "phone": "text", "country": "text",
    "signup_date": "date", "orders_count": "number", "lifetime_value": "number",
    "last_order_date": "date", "refunds_count": "number", "last_sms_click_date": "date",
    "email_opt_in": "boolean", "sms_opt_in": "text",
}  # fmt: skip
CLOCK = datetime(2026, 11, 22, tzinfo=timezone.utc)


def example_config(tmp_path: object) -> AppConfig:
    from pathlib import Path

    path = Path(str(tmp_path)) / "personasync.toml"
    path.write_text(example_config_text(), encoding="utf-8")
    return load_config(path)


@pytest.mark.parametrize(
    ("module", "dialect_path"),
    [
        ("snowflake.sqlalchemy", "snowflake.sqlalchemy.snowdialect:SnowflakeDialect"),
        ("sqlalchemy_bigquery", "sqlalchemy_bigquery.base:BigQueryDialect"),
    ],
)
def test_resolver_query_compiles(module: str, dialect_path: str, tmp_path: object) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed")
    import importlib

    module_name, _, class_name = dialect_path.partition(":")
    dialect = getattr(importlib.import_module(module_name), class_name)()
    config = example_config(tmp_path)
    query = build_resolver_query(
        config.resolver_settings(), KINDS, datetime(2026, 11, 22, tzinfo=timezone.utc)
    )
    sql = str(query.statement.compile(dialect=dialect))
    assert "row_number() OVER" in sql.replace("ROW_NUMBER", "row_number")
    assert "ORDER BY" in sql

    # the second look at emails the SQL may group differently uses the warehouse's own regex
    unusual = unusual_emails_query(config.resolver_settings(), KINDS)
    assert unusual is not None
    unusual_sql = str(unusual.compile(dialect=dialect)).lower()
    assert "regexp_like" in unusual_sql or "regexp_contains" in unusual_sql, unusual_sql
    groups = email_groups_query(config.resolver_settings(), KINDS, ["ann@example.com"])
    assert "row_number() over" in str(groups.compile(dialect=dialect)).lower()
