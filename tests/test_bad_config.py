"""A corpus of broken configs, each run through ``personasync validate``.

For every case the corpus guarantees what an operator sees: exit code 2, the config
file's name, one line giving the dotted key to fix (``personas[0].rules.all[1].op``) and
saying what is wrong (with a did-you-mean where one helps), no traceback, and no
credential from the config or the environment repeated in the output.

Each case starts from ``BASE_CONFIG`` (valid against the small demo warehouse, see
``test_base_config_is_valid``) and applies one mutation: text replacements or TOML
appended at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import Result

from connectors.demo_data import write_sqlite_demo
from tests.conftest import SMALL_DEMO, run_cli

CONFIG_NAME = "bad-personasync.toml"
WAREHOUSE = "@WAREHOUSE@"  # absolute path of the module's demo SQLite file
HERE = "@HERE@"  # absolute path of the folder holding the config file

BASE_CONFIG = f"""\
[warehouse]
url = "sqlite:///{WAREHOUSE}"

[state]
url = "sqlite:///personasync-state.db"

[source]
table = "customers"
key = "customer_id"
email = "email"
phone = "phone"

[consent.email]
column = "email_opt_in"
granted_values = [true, 1, "yes", "true"]

[consent.sms]
column = "sms_opt_in"
granted_values = ["opted_in"]

[[suppressions]]
table = "email_unsubscribes"
match_on = "email"
column = "email"
channels = ["email"]
reason = "unsubscribed"

[[suppressions]]
query = "SELECT customer_id FROM do_not_contact"
match_on = "key"
column = "customer_id"
channels = ["email", "sms", "crm"]
reason = "do_not_contact"

[[personas]]
name = "champion"
description = "Frequent and recent buyers."
rules = {{ all = [
    {{ column = "orders_count", op = ">=", value = 5 }},
    {{ column = "last_order_date", op = "within_days", value = 60 }},
] }}

[[personas]]
name = "new_customer"
description = "Signed up in the last 30 days."
rules = {{ column = "signup_date", op = "within_days", value = 30 }}

[[destinations]]
type = "file"
name = "email_outbox"
channel = "email"
path = "outbox/email"

[[destinations]]
type = "file"
name = "sms_outbox"
channel = "sms"
path = "outbox/sms"
"""

# Environment variables the cases rely on being unset (or set by the case itself).
MISSING_VAR = "PS_TEST_MISSING_KEY"
SECRET_VAR = "PS_TEST_SECRET_VALUE"


@dataclass(frozen=True)
class Case:
    id: str
    key: str  # dotted key the output must name; "" for a problem with the whole file
    message: str  # substring of the expected message, on the same line as the key
    replace: tuple[tuple[str, str], ...] = ()  # (old, new): `old` must occur in the config
    append: str = ""  # TOML added at the end of the config
    env: dict[str, str] = field(default_factory=dict)
    absent: tuple[str, ...] = ()  # must never appear in the output (secrets, jargon)
    write: bool = True  # False: the config file does not exist
    encoding: str = "utf-8"  # how the config file is written
    xfail: str | None = None  # why the product does not behave as asserted yet


def swap(old: str, new: str) -> tuple[tuple[str, str], ...]:
    """Replace the first occurrence of ``old`` in the base config."""
    return ((old, new),)


# Lines of BASE_CONFIG that several cases replace.
WAREHOUSE_SECTION = f'[warehouse]\nurl = "sqlite:///{WAREHOUSE}"'
WAREHOUSE_URL = f'url = "sqlite:///{WAREHOUSE}"'
STATE_URL = 'url = "sqlite:///personasync-state.db"'
FIRST_RULE = '{ column = "orders_count", op = ">=", value = 5 }'  # personas[0].rules.all[0]
NEW_CUSTOMER_RULES = 'rules = { column = "signup_date", op = "within_days", value = 30 }'


def swap_first_rule(new: str) -> tuple[tuple[str, str], ...]:
    return swap(FIRST_RULE, new)


def swap_warehouse_url(url: str) -> tuple[tuple[str, str], ...]:
    return swap(WAREHOUSE_URL, f'url = "{url}"')


CASES: list[Case] = [
    # --- the file itself ----------------------------------------------------------------
    Case("file-not-found", "", "file not found", write=False),
    Case("invalid-toml", "", "invalid TOML", append="[source\nkey = 1\n"),
    Case(
        "invalid-toml-duplicate-key",
        "",
        "invalid TOML",
        swap('key = "customer_id"', 'key = "customer_id"\nkey = "email"'),
    ),
    Case("not-utf8", "", "cannot read file", swap('"Frequent', '"Fréquent'), encoding="latin-1"),
    # --- unknown keys, with did-you-mean ------------------------------------------------
    Case(
        "unknown-section-close",
        "destination",
        "unknown key 'destination' (did you mean 'destinations'?)",
        append='[destination]\ntype = "file"\n',
    ),
    Case(
        "unknown-section-far",
        "logging",
        "unknown key 'logging'; valid keys: warehouse, state, source",
        append='[logging]\nlevel = "debug"\n',
    ),
    Case(
        "unknown-key-warehouse",
        "warehouse.uri",
        "unknown key 'uri' (did you mean 'url'?)",
        swap(WAREHOUSE_URL, WAREHOUSE_URL.replace("url", "uri", 1)),
    ),
    Case(
        "unknown-key-source",
        "source.emial",
        "unknown key 'emial' (did you mean 'email'?)",
        swap('email = "email"', 'emial = "email"'),
    ),
    Case(
        "unknown-key-consent-email",
        "consent.email.granted_value",
        "did you mean 'granted_values'",
        swap("granted_values = [true", "granted_value = [true"),
    ),
    Case(
        "unknown-consent-channel",
        "consent.mail",
        "did you mean 'email'",
        swap("[consent.email]", "[consent.mail]"),
    ),
    Case(
        "unknown-key-suppressions",
        "suppressions[0].matchon",
        "did you mean 'match_on'",
        swap('match_on = "email"', 'matchon = "email"'),
    ),
    Case(
        "unknown-key-personas",
        "personas[1].descripton",
        "did you mean 'description'",
        swap('description = "Signed', 'descripton = "Signed'),
    ),
    Case(
        "unknown-key-destinations",
        "destinations[1].chanel",
        "did you mean 'channel'",
        swap('channel = "sms"', 'chanel = "sms"'),
    ),
    Case(
        "unknown-key-rule",
        "personas[0].rules.all[0].valeu",
        "did you mean 'value'",
        swap_first_rule('{ column = "orders_count", op = ">=", valeu = 5 }'),
    ),
    # --- wrong types --------------------------------------------------------------------
    Case(
        "channels-not-a-list",
        "suppressions[0].channels",
        "must be a valid list",
        swap('channels = ["email"]', 'channels = "email"'),
    ),
    Case(
        "key-not-a-string",
        "source.key",
        "must be a valid string (got 5)",
        swap('key = "customer_id"', "key = 5"),
    ),
    Case(
        "granted-values-not-a-list",
        "consent.sms.granted_values",
        "must be a valid list",
        swap('granted_values = ["opted_in"]', 'granted_values = "opted_in"'),
    ),
    Case(
        "granted-value-float",
        "consent.email.granted_values[1]",
        "has a value of the wrong type",
        swap("granted_values = [true, 1,", "granted_values = [true, 1.5,"),
    ),
    Case(
        "url-not-a-string", "warehouse.url", "must be a valid string (got 5)", swap(WAREHOUSE_URL, "url = 5")
    ),
    Case(
        "persona-name-not-a-string",
        "personas[0].name",
        "must be a valid string (got 7)",
        swap('name = "champion"', "name = 7"),
    ),
    Case(
        "rule-value-a-table",
        "personas[0].rules.all[0].value",
        "has a value of the wrong type",
        swap_first_rule('{ column = "orders_count", op = ">=", value = { at_least = 5 } }'),
    ),
    Case(
        "warehouse-not-a-table",
        "warehouse",
        "must be a table",
        swap(WAREHOUSE_SECTION, f'warehouse = "sqlite:///{WAREHOUSE}"'),
        absent=("WarehouseConfig", "dictionary"),
    ),
    Case(
        "warehouse-string-with-password",
        "warehouse",
        "must be",
        swap(WAREHOUSE_SECTION, 'warehouse = "postgresql+psycopg://u:sekret-pw-654@127.0.0.1:1/x"'),
        absent=("sekret-pw-654",),
    ),
    # --- missing required keys ----------------------------------------------------------
    Case("missing-source-key", "source.key", "missing required key", swap('key = "customer_id"\n', "")),
    Case(
        "missing-warehouse-section", "warehouse", "missing required key", swap(WAREHOUSE_SECTION + "\n", "")
    ),
    Case(
        "missing-destination-name",
        "destinations[1].name",
        "missing required key",
        swap('name = "sms_outbox"\n', ""),
    ),
    Case(
        "missing-suppression-reason",
        "suppressions[1].reason",
        "missing required key",
        swap('reason = "do_not_contact"\n', ""),
    ),
    Case(
        "missing-persona-rules",
        "personas[1].rules",
        "missing required key",
        swap(NEW_CUSTOMER_RULES + "\n", ""),
    ),
    Case(
        "missing-destination-type",
        "destinations[0]",
        "missing key 'type' (one of: attentive, file, hubspot, klaviyo, mailchimp, salesforce)",
        swap('type = "file"\nname = "email_outbox"', 'name = "email_outbox"'),
    ),
    # --- ${VAR} interpolation: names the variable, never repeats a value ----------------
    Case(
        "env-var-not-set",
        "source.key",
        f"environment variable {MISSING_VAR} is not set",
        swap('key = "customer_id"', f'key = "${{{MISSING_VAR}}}"'),
    ),
    Case(
        "env-var-not-set-in-url",
        "warehouse.url",
        f"environment variable {MISSING_VAR} is not set",
        swap_warehouse_url(f"postgresql+psycopg://u:${{{MISSING_VAR}}}@127.0.0.1:1/x"),
    ),
    Case(
        "env-value-not-repeated",
        "destinations[0].channel",
        "must be 'email', 'sms' or 'crm'",
        swap('channel = "email"', f'channel = "${{{SECRET_VAR}}}"'),
        env={SECRET_VAR: "sekret-pw-999"},
        absent=("sekret-pw-999",),
    ),
    Case(
        "env-reference-unclosed",
        "source.key",
        "malformed reference '${PS_TEST_KEY'",
        swap('key = "customer_id"', 'key = "${PS_TEST_KEY"'),
    ),
    Case(
        "env-reference-bad-name",
        "source.table",
        "malformed reference '${my-table}'",
        swap('table = "customers"', 'table = "${my-table}"'),
    ),
    # --- database URLs: clear problems, passwords never printed -------------------------
    Case("url-not-a-url", "warehouse.url", "not a SQLAlchemy database URL", swap_warehouse_url("not a url")),
    Case(
        "url-unparseable-with-password",
        "warehouse.url",
        "not a SQLAlchemy database URL",
        swap_warehouse_url("postgresql//u:sekret-pw-456@host/db"),
        absent=("sekret-pw-456",),
    ),
    Case(
        "url-from-env-unparseable",
        "warehouse.url",
        "not a SQLAlchemy database URL",
        swap_warehouse_url(f"${{{SECRET_VAR}}}"),
        env={SECRET_VAR: "postgres ql://u:sekret-pw-789@host/db"},
        absent=("sekret-pw-789",),
    ),
    Case(
        "url-bad-port-with-password",
        "warehouse.url",
        "not a SQLAlchemy database URL",
        swap_warehouse_url("postgresql+psycopg://u:sekret-pw-135@host:port/db"),
        absent=("sekret-pw-135",),
    ),
    Case(
        "url-unreachable-with-password",
        "warehouse.url",
        "cannot connect",
        swap_warehouse_url("postgresql+psycopg://u:sekret-pw-123@127.0.0.1:1/x"),
        absent=("sekret-pw-123",),
    ),
    Case(
        "url-unknown-dialect",
        "warehouse.url",
        "no SQLAlchemy dialect 'nosuchdb' is installed",
        swap_warehouse_url("nosuchdb://u:sekret-pw-321@host/db"),
        absent=("sekret-pw-321",),
    ),
    Case(
        "warehouse-file-missing",
        "warehouse.url",
        "database file not found",
        swap_warehouse_url(f"sqlite:///{HERE}/no-such-warehouse.db"),
    ),
    Case(
        "state-url-not-a-url",
        "state.url",
        "not a SQLAlchemy database URL",
        swap(STATE_URL, 'url = "state please"'),
    ),
    Case(
        "state-folder-missing",
        "state.url",
        "for the state file does not exist",
        swap(STATE_URL, 'url = "sqlite:///no/such/folder/state.db"'),
    ),
    # --- tables, queries and columns the warehouse does not have ------------------------
    Case(
        "source-table-typo",
        "source.table",
        "table 'customer' not found (did you mean 'customers'?)",
        swap('table = "customers"', 'table = "customer"'),
    ),
    Case(
        "schema-table-typo",
        "source.table",
        "table 'main.customer' not found (did you mean 'customers'?)",
        swap('table = "customers"', 'table = "main.customer"'),
    ),
    Case(
        "suppression-table-typo",
        "suppressions[0].table",
        "did you mean 'email_unsubscribes'",
        swap('table = "email_unsubscribes"', 'table = "email_unsubscribe"'),
    ),
    Case(
        "source-email-column-typo",
        "source.email",
        "column 'emails' not found in source table 'customers' (did you mean 'email'?)",
        swap('email = "email"', 'email = "emails"'),
    ),
    Case(
        "consent-sms-column-typo",
        "consent.sms.column",
        "did you mean 'sms_opt_in'",
        swap('column = "sms_opt_in"', 'column = "sms_optin"'),
    ),
    Case(
        "rule-column-typo",
        "personas[0].rules.all[0].column",
        "did you mean 'orders_count'",
        swap_first_rule('{ column = "order_count", op = ">=", value = 5 }'),
    ),
    Case(
        "top-level-rule-column-typo",
        "personas[1].rules.column",
        "did you mean 'signup_date'",
        swap('column = "signup_date"', 'column = "signup_dat"'),
    ),
    Case(
        "nested-not-rule-column-typo",
        "personas[2].rules.not.column",
        "did you mean 'refunds_count'",
        append='[[personas]]\nname = "no_refunds"\n'
        'rules = { not = { column = "refund_count", op = ">", value = 0 } }\n',
    ),
    Case(
        "rule-text-value-for-number-column",
        "personas[0].rules.all[0]",
        "compares the number column 'orders_count' with str 'lots'",
        swap_first_rule('{ column = "orders_count", op = ">=", value = "lots" }'),
    ),
    Case(
        "rule-number-compared-to-text-column",
        "personas[0].rules.all[0]",
        "compares the text column 'country' with int 5",
        swap_first_rule('{ column = "country", op = ">", value = 5 }'),
    ),
    Case(
        "rule-days-on-number-column",
        "personas[0].rules.all[0]",
        "needs a date or timestamp column",
        swap_first_rule('{ column = "orders_count", op = "within_days", value = 5 }'),
    ),
    Case(
        "suppression-column-typo",
        "suppressions[0].column",
        "column 'mail' not found in table 'email_unsubscribes' (did you mean 'email'?)",
        swap('column = "email"\nchannels = ["email"]', 'column = "mail"\nchannels = ["email"]'),
    ),
    Case(
        "suppression-query-column-typo",
        "suppressions[1].column",
        "column 'customerid' not found in the query (did you mean 'customer_id'?)",
        swap('column = "customer_id"', 'column = "customerid"'),
    ),
    Case(
        "suppression-query-fails",
        "suppressions[1].query",
        "the query failed in the warehouse: no such table: nowhere",
        swap('query = "SELECT customer_id FROM do_not_contact"', 'query = "SELECT nope FROM nowhere"'),
    ),
    Case(
        "source-query-fails",
        "source.query",
        "the query failed in the warehouse",
        swap('table = "customers"', 'query = "SELEC * FROM customers"'),
    ),
    # --- table / query ------------------------------------------------------------------
    Case(
        "source-table-and-query",
        "source",
        "set exactly one of 'table' or 'query'",
        swap('table = "customers"', 'table = "customers"\nquery = "SELECT * FROM customers"'),
    ),
    Case(
        "suppression-neither-table-nor-query",
        "suppressions[0]",
        "set exactly one of 'table' or 'query'",
        swap('table = "email_unsubscribes"\n', ""),
    ),
    # --- names --------------------------------------------------------------------------
    Case(
        "duplicate-destination-names",
        "destinations",
        "duplicate destination name(s): email_outbox",
        swap('name = "sms_outbox"', 'name = "email_outbox"'),
    ),
    Case(
        "duplicate-persona-names",
        "personas",
        "duplicate persona name(s): champion",
        swap('name = "new_customer"', 'name = "champion"'),
    ),
    Case(
        "persona-name-not-tag-safe",
        "personas[0].name",
        "must be lower-case letters, digits, '_' or '-', starting with a letter (got 'Champion!')",
        swap('name = "champion"', 'name = "Champion!"'),
    ),
    Case(
        "reason-not-tag-safe",
        "suppressions[0].reason",
        "must be lower-case letters",
        swap('reason = "unsubscribed"', 'reason = "Un subscribed"'),
    ),
    # --- rule ops and values ------------------------------------------------------------
    Case(
        "op-gte",
        "personas[0].rules.all[0].op",
        "unknown op 'gte' (did you mean '>='?)",
        swap_first_rule('{ column = "orders_count", op = "gte", value = 5 }'),
    ),
    Case(
        "op-typo",
        "personas[1].rules.op",
        "unknown op 'within_day' (did you mean 'within_days'?)",
        swap('op = "within_days", value = 30', 'op = "within_day", value = 30'),
    ),
    Case(
        "between-one-value",
        "personas[0].rules.all[0]",
        "op 'between' needs a list of exactly two values",
        swap_first_rule('{ column = "orders_count", op = "between", value = [5] }'),
    ),
    Case(
        "between-low-above-high",
        "personas[0].rules.all[0]",
        "has low 9 greater than high 5",
        swap_first_rule('{ column = "orders_count", op = "between", value = [9, 5] }'),
    ),
    Case(
        "is-null-with-value",
        "personas[0].rules.all[0]",
        "op 'is_null' takes no value",
        swap_first_rule('{ column = "orders_count", op = "is_null", value = 5 }'),
    ),
    Case(
        "equals-without-value",
        "personas[0].rules.all[0]",
        "op '=' needs a value (use op = \"is_null\")",
        swap_first_rule('{ column = "orders_count", op = "=" }'),
    ),
    Case(
        "within-days-negative",
        "personas[1].rules",
        "op 'within_days' needs a whole number of days >= 0",
        swap("value = 30", "value = -30"),
    ),
    Case(
        "within-days-string",
        "personas[1].rules",
        "op 'within_days' needs a whole number of days >= 0",
        swap("value = 30", 'value = "30"'),
    ),
    Case(
        "in-empty-list",
        "personas[0].rules.all[0]",
        "op 'in' needs a non-empty list of values",
        swap_first_rule('{ column = "orders_count", op = "in", value = [] }'),
    ),
    Case(
        "ordering-a-list",
        "personas[0].rules.all[0]",
        "takes a single value, not a list",
        swap_first_rule('{ column = "orders_count", op = ">=", value = [5, 6] }'),
    ),
    Case(
        "ordering-a-boolean",
        "personas[0].rules.all[0]",
        "cannot order booleans",
        swap_first_rule('{ column = "orders_count", op = ">=", value = true }'),
    ),
    Case(
        "contains-a-number",
        "personas[0].rules.all[0]",
        "op 'contains' needs a text value",
        swap_first_rule('{ column = "orders_count", op = "contains", value = 5 }'),
    ),
    # --- rule shapes --------------------------------------------------------------------
    Case(
        "rules-not-a-table",
        "personas[1].rules",
        "a rule must be a table",
        swap(NEW_CUSTOMER_RULES, "rules = 5"),
    ),
    Case(
        "rules-a-list",
        "personas[1].rules",
        "a rule must be a table",
        swap(NEW_CUSTOMER_RULES, NEW_CUSTOMER_RULES.replace("{", "[{").replace("}", "}]")),
    ),
    Case(
        "rule-child-not-a-table",
        "personas[0].rules.all[0]",
        "a rule must be a table",
        swap_first_rule('"orders_count >= 5"'),
    ),
    Case(
        "not-a-list",
        "personas[0].rules.all[0].not",
        "a rule must be a table",
        swap_first_rule("{ not = [] }"),
    ),
    Case(
        "all-empty",
        "personas[1].rules.all",
        "must not be empty",
        swap(NEW_CUSTOMER_RULES, "rules = { all = [] }"),
        absent=("after validation",),
    ),
    # --- resolver settings ---------------------------------------------------------------
    Case(
        "holdout-over-50",
        "personas[1].holdout_percent",
        "less than or equal to 50",
        swap(NEW_CUSTOMER_RULES, NEW_CUSTOMER_RULES + "\nholdout_percent = 60"),
    ),
    Case(
        "holdout-negative-number",
        "personas[1].holdout_percent",
        "greater than or equal to 0",
        swap(NEW_CUSTOMER_RULES, NEW_CUSTOMER_RULES + "\nholdout_percent = -5"),
    ),
    Case(
        "negative-persona-with-holdout",
        "personas[1]",
        "a negative persona cannot have a holdout",
        swap(NEW_CUSTOMER_RULES, NEW_CUSTOMER_RULES + "\nnegative = true\nholdout_percent = 10"),
    ),
    Case(
        "persona-bad-channel",
        "personas[1].channels[0]",
        "must be 'email', 'sms' or 'crm' (got 'text')",
        swap(NEW_CUSTOMER_RULES, NEW_CUSTOMER_RULES + '\nchannels = ["text"]'),
    ),
    Case(
        "assignment-mode-typo",
        "assignment.mode",
        "'first_match' or 'all_matches' (got 'first')",
        append='\n[assignment]\nmode = "first"\n',
    ),
    Case(
        "phone-region-unknown",
        "source.phone_region",
        "unknown phone region 'UK' (did you mean",
        swap('phone = "phone"', 'phone = "phone"\nphone_region = "UK"'),
    ),
    Case(
        "phone-country-column-missing",
        "source.phone_country",
        "column 'contry' not found in source table 'customers' (did you mean 'country'?)",
        swap('phone = "phone"', 'phone = "phone"\nphone_country = "contry"'),
    ),
    Case(
        "on-duplicate-email-typo",
        "source.on_duplicate_email",
        "'first_by_key' or 'error'",
        swap('phone = "phone"', 'phone = "phone"\non_duplicate_email = "first"'),
    ),
    Case(
        "sql-rule-fails-in-warehouse",
        "personas[1].rules",
        "no such column: nope",
        swap(NEW_CUSTOMER_RULES, 'rules = { sql = "nope > 3" }'),
    ),
    # --- destinations and channels ------------------------------------------------------
    Case(
        "destination-type-typo",
        "destinations[0]",
        "unknown destination type 'fiel' (did you mean 'file'?)",
        swap('type = "file"\nname = "email_outbox"', 'type = "fiel"\nname = "email_outbox"'),
    ),
    Case(
        "destination-bad-channel",
        "destinations[0].channel",
        "must be 'email', 'sms' or 'crm' (got 'mail')",
        swap('channel = "email"', 'channel = "mail"'),
    ),
    Case(
        "destination-without-consent-for-its-channel",
        "destinations[1]",
        "channel 'sms' needs [consent.sms]: without it every customer would be suppressed",
        swap("[consent.sms]", "[consent.crm]"),
    ),
    Case(
        "destination-tag-name-for-unknown-persona",
        "destinations[0].tag_names",
        "unknown persona 'champoin' (did you mean 'champion'?)",
        swap('path = "outbox/email"', 'path = "outbox/email"\ntag_names = { champoin = "VIP" }'),
    ),
    Case(
        "destination-tag-prefix-with-separator",
        "destinations[0].tag_prefix",
        "tag names may not contain ';'",
        swap('path = "outbox/email"', 'path = "outbox/email"\ntag_prefix = "persona;"'),
    ),
    Case(
        "destination-guardrail-over-100",
        "destinations[0].max_remove_percent",
        "less than or equal to 100",
        swap('path = "outbox/email"', 'path = "outbox/email"\nmax_remove_percent = 150'),
    ),
    Case(
        "mailchimp-on-the-sms-channel",
        "destinations[2]",
        "a mailchimp destination sends email; channel must be 'email' (got 'sms')",
        append='[[destinations]]\ntype = "mailchimp"\nname = "mc"\nchannel = "sms"\n'
        'api_key = "abc-us6"\nlist_id = "l1"\n',
    ),
    Case(
        "mailchimp-key-without-data-centre",
        "destinations[2]",
        "a Mailchimp API key ends with its data centre, e.g. '-us6' (or set base_url)",
        append='[[destinations]]\ntype = "mailchimp"\nname = "mc"\nchannel = "email"\n'
        'api_key = "abcdef"\nlist_id = "l1"\n',
        absent=("abcdef",),
    ),
    Case(
        "klaviyo-on-the-crm-channel",
        "destinations[2]",
        "a klaviyo destination is for channel 'email' or 'sms' (got 'crm')",
        append='[[destinations]]\ntype = "klaviyo"\nname = "kl"\nchannel = "crm"\napi_key = "pk_abc"\n',
    ),
    Case(
        "klaviyo-list-for-an-unknown-persona",
        "destinations[2].lists",
        "unknown persona 'champoin' (did you mean 'champion'?)",
        append='[[destinations]]\ntype = "klaviyo"\nname = "kl"\nchannel = "email"\napi_key = "pk_abc"\n'
        'lists = { champoin = "XyZ" }\n',
    ),
    Case(
        "klaviyo-revision-not-a-date",
        "destinations[2].revision",
        "a Klaviyo revision is a date, YYYY-MM-DD[.suffix] (got 'latest')",
        append='[[destinations]]\ntype = "klaviyo"\nname = "kl"\nchannel = "email"\napi_key = "pk_abc"\n'
        'revision = "latest"\n',
    ),
    Case(
        "klaviyo-rate-share-over-one",
        "destinations[2].rate_limit_share",
        "less than or equal to 1",
        append='[[destinations]]\ntype = "klaviyo"\nname = "kl"\nchannel = "email"\napi_key = "pk_abc"\n'
        "rate_limit_share = 2\n",
    ),
    Case(
        "attentive-on-the-email-channel",
        "destinations[2]",
        "an attentive destination sends texts; channel must be 'sms' (got 'email')",
        append='[[destinations]]\ntype = "attentive"\nname = "at"\nchannel = "email"\napi_key = "atn_abc"\n',
    ),
    Case(
        "attentive-primary-mode-with-all-matches",
        "destinations[2].attribute_mode",
        "'primary' holds one persona per customer; it needs [assignment] mode = \"first_match\"",
        append='[[destinations]]\ntype = "attentive"\nname = "at"\nchannel = "sms"\napi_key = "atn_abc"\n'
        'attribute_mode = "primary"\n\n[assignment]\nmode = "all_matches"\n',
    ),
    Case(
        "state-lock-timeout-zero",
        "state.lock_timeout_minutes",
        "greater than 0",
        swap(STATE_URL, STATE_URL + "\nlock_timeout_minutes = 0"),
    ),
    Case(
        "suppression-bad-channel",
        "suppressions[0].channels[0]",
        "must be 'email', 'sms' or 'crm' (got 'mail')",
        swap('channels = ["email"]', 'channels = ["mail"]'),
    ),
    Case(
        "suppression-bad-match-on",
        "suppressions[0].match_on",
        "must be 'key', 'email' or 'phone' (got 'id')",
        swap('match_on = "email"', 'match_on = "id"'),
    ),
    Case(
        "destination-path-under-a-file",
        "destinations[0].path",
        "cannot create or write",
        swap('path = "outbox/email"', f'path = "{CONFIG_NAME}/outbox"'),
    ),
]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad-config-warehouse") / "warehouse.db"
    write_sqlite_demo(path, SMALL_DEMO)
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the cases rely on being unset are unset, whatever the caller's shell has."""
    for name in (MISSING_VAR, SECRET_VAR):
        monkeypatch.delenv(name, raising=False)


def config_text(case: Case, warehouse: Path, here: Path) -> str:
    text = BASE_CONFIG
    for old, new in case.replace:
        assert old in text, f"case {case.id}: {old!r} is not in the base config"
        text = text.replace(old, new, 1)
    text += case.append
    return text.replace(WAREHOUSE, str(warehouse)).replace(HERE, str(here))


def run_validate(path: Path) -> tuple[Result, str]:
    return run_cli("validate", "--config", str(path))


def names_key_and_message(output: str, key: str, message: str) -> bool:
    """Some line names exactly ``key`` (not a longer key it prefixes) and contains ``message``."""
    key_pattern = re.compile(rf"(^|\s){re.escape(key)}(:|\s)")
    return any(message in line and (not key or key_pattern.search(line)) for line in output.splitlines())


def test_base_config_is_valid(warehouse: Path, tmp_path: Path) -> None:
    path = tmp_path / CONFIG_NAME
    path.write_text(config_text(Case("base", "", ""), warehouse, tmp_path), encoding="utf-8")
    result, output = run_validate(path)
    assert result.exit_code == 0, output
    assert "problem" not in output


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 30


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
        for c in CASES
    ],
)
def test_bad_config_is_explained(
    case: Case, warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / CONFIG_NAME
    if case.write:
        path.write_text(config_text(case, warehouse, tmp_path), encoding=case.encoding)

    result, output = run_validate(path)  # no traceback: checked by run_cli
    assert result.exit_code == 2, output
    assert CONFIG_NAME in output, output
    assert names_key_and_message(output, case.key, case.message), (
        f"expected a line naming {case.key!r} with {case.message!r}:\n{output}"
    )
    for text in case.absent:
        assert text not in output, output
