"""Rules compiled to SQL select the same customers on SQLite, PostgreSQL and DuckDB as an
independent Python reading of the rule semantics over the same rows."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import TypeAdapter

from connectors.demo_data import CUSTOMERS
from connectors.warehouse import create_warehouse_engine, describe_table
from personas.compile import RuleError, RuleScope, compile_rule
from personas.rules import Rule
from tests.conftest import SMALL_DEMO

NOW = datetime.combine(SMALL_DEMO.as_of, datetime.min.time(), tzinfo=timezone.utc)
RULE = TypeAdapter(Rule)

CASES: dict[str, dict[str, Any]] = {
    "eq_text": {"column": "country", "op": "=", "value": "GB"},
    "ne_text": {"column": "country", "op": "!=", "value": "US"},
    "gt_number": {"column": "lifetime_value", "op": ">", "value": 100},
    "le_int": {"column": "orders_count", "op": "<=", "value": 1},
    "in": {"column": "sms_opt_in", "op": "in", "value": ["opted_in", "pending"]},
    "not_in": {"column": "country", "op": "not_in", "value": ["US", "CA"]},
    "between": {"column": "orders_count", "op": "between", "value": [2, 4]},
    "is_null": {"column": "last_order_date", "op": "is_null"},
    "not_null": {"column": "phone", "op": "not_null"},
    "within_days": {"column": "last_order_date", "op": "within_days", "value": 60},
    "older_than_days": {"column": "last_order_date", "op": "older_than_days", "value": 365},
    "date_literal": {"column": "signup_date", "op": ">=", "value": date(2025, 1, 1)},
    "contains_any_case": {"column": "email", "op": "contains", "value": "EXAMPLE.ORG"},
    "starts_with": {"column": "first_name", "op": "starts_with", "value": "em"},
    "boolean": {"column": "email_opt_in", "op": "=", "value": True},
    "not_on_null_column": {"not": {"column": "sms_opt_in", "op": "=", "value": "opted_in"}},
    "all_any_not": {
        "all": [
            {"column": "orders_count", "op": ">=", "value": 2},
            {
                "any": [
                    {"column": "country", "op": "=", "value": "GB"},
                    {"not": {"column": "last_order_date", "op": "within_days", "value": 90}},
                ]
            },
        ]
    },
    "sql_escape_hatch": {"sql": "orders_count * 2 > refunds_count + 3"},
}


def _oracle(rule: dict[str, Any], row: dict[str, Any]) -> bool:
    """The documented semantics, read directly: comparisons on NULL are false."""
    if "all" in rule:
        return all(_oracle(r, row) for r in rule["all"])
    if "any" in rule:
        return any(_oracle(r, row) for r in rule["any"])
    if "not" in rule:
        return not _oracle(rule["not"], row)
    if "sql" in rule:
        return row["orders_count"] * 2 > row["refunds_count"] + 3
    value, op, cell = rule.get("value"), rule["op"], row[rule["column"]]
    if op == "is_null":
        return cell is None
    if op == "not_null":
        return cell is not None
    if cell is None:
        return False
    if op in ("within_days", "older_than_days"):
        bound = SMALL_DEMO.as_of - timedelta(days=value)
        return cell >= bound if op == "within_days" else cell < bound
    if op == "contains":
        return value.lower() in cell.lower()
    if op == "starts_with":
        return cell.lower().startswith(value.lower())
    if isinstance(cell, Decimal):
        cell = float(cell)
    return {
        "=": lambda: cell == value, "!=": lambda: cell != value, ">": lambda: cell > value,
        "<=": lambda: cell <= value, ">=": lambda: cell >= value,
        "in": lambda: cell in value, "not_in": lambda: cell not in value,
        "between": lambda: value[0] <= cell <= value[1],
    }[op]()  # fmt: skip


@pytest.fixture
def demo_rows_and_scope(demo_warehouse_url: str) -> Any:
    engine = create_warehouse_engine(demo_warehouse_url)
    with engine.connect() as conn:
        kinds = describe_table(conn, "customers").kinds
        rows = [dict(r._mapping) for r in conn.execute(sa.select(CUSTOMERS))]
    for row in rows:  # the oracle reads typed values, as the demo generator meant them
        for name in ("signup_date", "last_order_date"):
            if isinstance(row[name], str):
                row[name] = date.fromisoformat(row[name])
        if row["email_opt_in"] is not None:
            row["email_opt_in"] = bool(row["email_opt_in"])
    source = sa.table("customers", *(sa.column(name) for name in kinds))
    yield engine, rows, RuleScope(source=source, kinds=kinds, now=NOW)
    engine.dispose()


@pytest.mark.parametrize("case", CASES)
def test_compiled_rule_selects_what_the_rule_says(demo_rows_and_scope: Any, case: str) -> None:
    engine, rows, scope = demo_rows_and_scope
    rule = RULE.validate_python(CASES[case])
    expression = compile_rule(rule, scope, "personas[0].rules")
    with engine.connect() as conn:
        selected = {r[0] for r in conn.execute(sa.select(scope.source.c.customer_id).where(expression))}
    expected = {row["customer_id"] for row in rows if _oracle(CASES[case], row)}
    assert selected == expected
    assert 0 < len(expected) < len(rows), "a case that selects nobody or everybody proves little"


@pytest.mark.parametrize(
    ("rule", "path", "message"),
    [
        ({"column": "country", "op": ">", "value": 5}, "r", "compares the text column 'country' with int"),
        ({"column": "orders_count", "op": ">", "value": "5"}, "r", "number column 'orders_count' with str"),
        ({"column": "orders_count", "op": "within_days", "value": 5}, "r", "needs a date or timestamp"),
        ({"column": "lifetime_value", "op": "contains", "value": "9"}, "r", "needs a text column"),
        ({"column": "signup_date", "op": ">", "value": "2024-01-01"}, "r", "use a date value"),
        ({"column": "ordrs_count", "op": ">", "value": 5}, "r.column", "did you mean 'orders_count'"),
        ({"all": [{"column": "country", "op": "=", "value": "US"},
                  {"not": {"column": "orders_count", "op": "in", "value": ["1"]}}]},
         "r.all[1].not", "number column"),
    ],
)  # fmt: skip
def test_rule_errors_name_the_rule_path(tmp_path: Any, rule: dict[str, Any], path: str, message: str) -> None:
    kinds = {c.name: k for c, k in zip(CUSTOMERS.columns, _demo_kinds(), strict=True)}
    scope = RuleScope(source=CUSTOMERS, kinds=kinds, now=NOW)
    with pytest.raises(RuleError) as error:
        compile_rule(RULE.validate_python(rule), scope, "r")
    assert error.value.path == path
    assert message in error.value.message


def _demo_kinds() -> list[str]:
    engine = sa.create_engine("sqlite://")
    CUSTOMERS.metadata.create_all(engine, tables=[CUSTOMERS])
    with engine.connect() as conn:
        kinds = describe_table(conn, "customers").kinds
    return list(kinds.values())


@pytest.mark.parametrize(
    ("op", "age_days", "matches"),
    [
        ("within_days", 60, True), ("within_days", 61, False), ("within_days", 0, True),
        ("older_than_days", 60, False), ("older_than_days", 61, True),
    ],
)  # fmt: skip
def test_day_bounds_are_exact(warehouse_engine: sa.Engine, op: str, age_days: int, matches: bool) -> None:
    """``within_days 60`` includes a date exactly 60 days before the run; ``older_than_days 60``
    starts the day after."""
    table = sa.Table("events", sa.MetaData(), sa.Column("id", sa.Integer), sa.Column("happened_on", sa.Date))
    table.metadata.create_all(warehouse_engine)
    with warehouse_engine.begin() as conn:
        conn.execute(table.insert(), [{"id": 1, "happened_on": SMALL_DEMO.as_of - timedelta(days=age_days)}])
    scope = RuleScope(source=table, kinds={"id": "number", "happened_on": "date"}, now=NOW)
    rule = RULE.validate_python({"column": "happened_on", "op": op, "value": 60})
    with warehouse_engine.connect() as conn:
        found = conn.execute(sa.select(table.c.id).where(compile_rule(rule, scope, "r"))).all()
    assert bool(found) is matches


def test_a_key_matched_suppression_is_looked_up_not_scanned_per_customer_on_sqlite() -> None:
    """SQLite matches the key as stored, as text and as a number (1, '1', 1.0 all match), and
    still through the suppression table's index: a scan per customer would make the resolver
    quadratic (a million customers times the do-not-contact list)."""
    from personas.query import same_key

    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE customers (customer_id)")
        conn.exec_driver_sql("CREATE TABLE dnc (customer_id)")
        conn.exec_driver_sql("CREATE INDEX dnc_key ON dnc (customer_id)")
        conn.exec_driver_sql("INSERT INTO customers VALUES (1), ('2'), (3), (4)")
        conn.exec_driver_sql("INSERT INTO dnc VALUES ('1'), (2), (3.0)")
        customers, dnc = (
            sa.table("customers", sa.column("customer_id")),
            sa.table("dnc", sa.column("customer_id")),
        )
        listed = sa.exists().where(same_key(dnc.c.customer_id, customers.c.customer_id))
        query = sa.select(customers.c.customer_id, listed)
        assert {str(key): bool(flag) for key, flag in conn.execute(query)} == {"1": 1, "2": 1, "3": 1, "4": 0}
        sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
        plan = " | ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert "SEARCH dnc USING COVERING INDEX dnc_key" in plan, plan
    engine.dispose()
