"""Deterministic synthetic warehouse data for the demo, the tests and the benchmarks.

One schema (``DEMO_METADATA``) and one generator (``iter_demo_chunks``) feed two writers:
a fast SQLite writer for the demo and benchmarks (millions of rows, bounded memory), and
a SQLAlchemy writer used to load the same rows into PostgreSQL or DuckDB in tests.

The data is realistic enough for personas to mean something: a long-tailed lifetime
value, order recency, email and SMS engagement, consent flags with gaps, and suppression
tables. A small share of rows is deliberately messy: mixed-case or padded emails,
invalid emails, duplicate emails across customers, phones in every local format and
some that cannot be parsed.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateIndex, CreateTable

GENERATOR_VERSION = 2  # bump when the schema or the rows change: old demo warehouses are rebuilt
DEFAULT_CHUNK_SIZE = 50_000
HISTORY_DAYS = 5 * 365  # signups spread over five years before the as-of date

DEMO_METADATA = sa.MetaData()

CUSTOMERS = sa.Table(
    "customers",
    DEMO_METADATA,
    sa.Column("customer_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("first_name", sa.String(40)),
    sa.Column("last_name", sa.String(40)),
    sa.Column("email", sa.String(254)),
    sa.Column("phone", sa.String(40)),
    sa.Column("country", sa.String(2)),
    sa.Column("signup_date", sa.Date),
    sa.Column("orders_count", sa.Integer, nullable=False),
    sa.Column("lifetime_value", sa.Numeric(12, 2), nullable=False),
    sa.Column("last_order_date", sa.Date),
    sa.Column("refunds_count", sa.Integer, nullable=False),
    sa.Column("last_email_open_date", sa.Date),
    sa.Column("last_email_click_date", sa.Date),
    sa.Column("last_sms_click_date", sa.Date),
    sa.Column("email_opt_in", sa.Boolean),
    sa.Column("sms_opt_in", sa.String(16)),
)
ORDERS = sa.Table(
    "orders",
    DEMO_METADATA,
    sa.Column("order_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.Integer, nullable=False, index=True),
    sa.Column("order_date", sa.Date, nullable=False),
    sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
)
EMAIL_UNSUBSCRIBES = sa.Table(
    "email_unsubscribes",
    DEMO_METADATA,
    sa.Column("email", sa.String(254), nullable=False, index=True),
    sa.Column("unsubscribed_at", sa.Date, nullable=False),
)
HARD_BOUNCES = sa.Table(
    "hard_bounces",
    DEMO_METADATA,
    sa.Column("email", sa.String(254), nullable=False, index=True),
    sa.Column("bounced_at", sa.Date, nullable=False),
)
SPAM_COMPLAINTS = sa.Table(
    "spam_complaints",
    DEMO_METADATA,
    sa.Column("email", sa.String(254), nullable=False, index=True),
    sa.Column("complained_at", sa.Date, nullable=False),
)
SMS_OPT_OUTS = sa.Table(
    "sms_opt_outs",
    DEMO_METADATA,
    sa.Column("phone", sa.String(40), nullable=False, index=True),
    sa.Column("opted_out_at", sa.Date, nullable=False),
)
DO_NOT_CONTACT = sa.Table(
    "do_not_contact",
    DEMO_METADATA,
    sa.Column("customer_id", sa.Integer, nullable=False, index=True),
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("added_at", sa.Date, nullable=False),
)
DEMO_META = sa.Table(
    "personasync_demo_meta",
    DEMO_METADATA,
    sa.Column("customers", sa.Integer, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("generator_version", sa.Integer, nullable=False),
)
DATA_TABLES = (
    CUSTOMERS,
    ORDERS,
    EMAIL_UNSUBSCRIBES,
    HARD_BOUNCES,
    SPAM_COMPLAINTS,
    SMS_OPT_OUTS,
    DO_NOT_CONTACT,
)
_DATE_COLUMNS = {
    t.name: [i for i, c in enumerate(t.columns) if isinstance(c.type, sa.Date)] for t in DATA_TABLES
}

FIRST_NAMES = [
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Oliver",
    "Sophia",
    "Elijah",
    "Isabella",
    "Lucas",
    "Mia",
    "Mason",
    "Amelia",
    "Ethan",
    "Harper",
    "Logan",
    "Evelyn",
    "James",
    "Abigail",
    "Aiden",
    "Emily",
    "Jacob",
    "Ella",
    "Michael",
    "Elizabeth",
    "Daniel",
    "Sofia",
    "Henry",
    "Avery",
    "Jackson",
    "Scarlett",
    "Sebastian",
    "Chloe",
    "Jack",
    "Aria",
    "Owen",
    "Lily",
    "Samuel",
    "Zoe",
    "Matthew",
    "Nora",
    "Leo",
    "Hannah",
    "Léa",
    "Zoë",
    "José",
    "Amélie",
    "Jürgen",
    "Siobhan",
    "Chiara",
]
LAST_NAMES = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Müller",
    "O'Brien",
    "Dubois",
    "Rossi",
]
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "shop.example.co.uk")
INVALID_EMAILS = (
    "n/a",
    "none",
    "john.doe@",
    "@example.com",
    "jane@@example.com",
    "bob at example.com",
    "test@localhost",
    "ann@example..com",
    "-",
    "",
)
BAD_PHONES = ("N/A", "12345", "call me", "000", "+", "555-CALL-NOW", "(none)")
COUNTRIES = ("US", "US", "US", "US", "GB", "GB", "CA", "DE", "FR", "AU")
US_AREA_CODES = ("212", "310", "415", "617", "312", "206", "305", "512", "303", "404", "702", "971")
CA_AREA_CODES = ("416", "604", "514", "403", "613")


@dataclass(frozen=True)
class DemoSpec:
    customers: int
    seed: int
    as_of: date


def _ascii_local(name: str) -> str:
    return name.lower().replace("'", "").translate(str.maketrans("éèëüöäïç", "eeeuoaic"))


def _phone(rng: random.Random, country: str) -> str:
    """A plausible phone number for ``country`` in one of the formats people really type."""
    d = rng.randrange
    fmt = d(4)
    if country in ("US", "CA"):
        area = rng.choice(US_AREA_CODES if country == "US" else CA_AREA_CODES)
        exchange, line = d(200, 1000), d(10_000)
        return (
            f"+1 {area}-{exchange}-{line:04d}",
            f"({area}) {exchange}-{line:04d}",
            f"{area}.{exchange}.{line:04d}",
            f"+1{area}{exchange}{line:04d}",
        )[fmt]
    if country == "GB":
        block = f"79{d(10, 100)}"
        rest = f"{d(1_000_000):06d}"
        return (f"0{block} {rest}", f"+44 {block} {rest}", f"+44{block}{rest}", f"(0{block}) {rest}")[fmt]
    if country == "DE":
        prefix, rest = rng.choice(("151", "160", "170", "176")), f"{d(10_000_000, 100_000_000)}"
        return (f"0{prefix} {rest}", f"+49 {prefix} {rest}", f"+49{prefix}{rest}", f"0{prefix}/{rest}")[fmt]
    if country == "FR":
        pairs = " ".join(f"{d(100):02d}" for _ in range(4))
        return (
            f"06 {pairs}",
            f"+33 6 {pairs}",
            "+336" + pairs.replace(" ", ""),
            f"06.{pairs.replace(' ', '.')}",
        )[fmt]
    a, b = d(100, 1000), d(100, 1000)
    return (
        f"04{d(10)}{d(10)} {a} {b}",
        f"+61 4{d(10)}{d(10)} {a} {b}",
        f"+614{d(10)}{d(10)}{a}{b}",
        f"04{d(10)}{d(10)}-{a}-{b}",
    )[fmt]


def iter_demo_chunks(
    spec: DemoSpec, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """Rows for every demo table, ``chunk_size`` customers at a time. Dates are ISO strings.

    The same ``spec`` always yields the same rows, whatever ``chunk_size``.
    """
    rng = random.Random(spec.seed)
    rand, randrange, choice = rng.random, rng.randrange, rng.choice
    days = [(spec.as_of - timedelta(days=n)).isoformat() for n in range(HISTORY_DAYS + 1)]
    recent_emails: list[str] = []  # a small pool to draw deliberate duplicates from
    order_id = 0
    for start in range(1, spec.customers + 1, chunk_size):
        chunk: dict[str, list[tuple[Any, ...]]] = {t.name: [] for t in DATA_TABLES}
        customers, orders = chunk["customers"], chunk["orders"]
        for cid in range(start, min(start + chunk_size, spec.customers + 1)):
            first, last, country = choice(FIRST_NAMES), choice(LAST_NAMES), choice(COUNTRIES)
            tenure = randrange(HISTORY_DAYS)  # days since signup
            # Orders: a third never bought; the rest follow a long tail.
            orders_count = 0 if rand() < 0.33 else min(int(rng.paretovariate(1.6)) + randrange(3), 250)
            ltv = round(orders_count * 20 * rng.paretovariate(2.2), 2) if orders_count else 0.0
            refunds = 0 if rand() < 0.93 or not orders_count else randrange(1, min(orders_count, 6) + 1)
            last_order_age = None
            if orders_count:
                # Recency skews recent: half of buyers ordered in the last quarter of their tenure.
                last_order_age = min(tenure, int(tenure * rand() ** 2))
                first_order_age = tenure if orders_count > 1 else last_order_age
                for n in range(orders_count):
                    order_id += 1
                    age = last_order_age if n == 0 else randrange(last_order_age, first_order_age + 1)
                    status = "refunded" if n < refunds else "paid"
                    orders.append((order_id, cid, days[age], round(ltv / orders_count, 2), status))

            email: str | None = f"{_ascii_local(first)}.{_ascii_local(last)}{cid}@{choice(DOMAINS)}"
            roll = rand()
            if roll < 0.005:
                email = None
            elif roll < 0.008:
                email = choice(INVALID_EMAILS)
            elif roll < 0.011 and recent_emails:
                email = choice(recent_emails)  # shared inbox: duplicate email across keys
            elif roll < 0.02:
                email = email.title() if roll < 0.016 else f"  {email.upper()} "
            elif roll < 0.03 and len(recent_emails) < 1000:
                recent_emails.append(email)

            roll = rand()
            phone = None if roll < 0.3 else (choice(BAD_PHONES) if roll < 0.31 else _phone(rng, country))

            opens = rand() < 0.6
            open_age = randrange(min(tenure, 400) + 1) if opens else None
            click_age = (
                max(open_age - randrange(30), 0) if opens and rand() < 0.45 else None
            )  # after the open
            sms_click_age = randrange(min(tenure, 200) + 1) if phone and rand() < 0.15 else None
            roll = rand()
            email_opt_in = None if roll < 0.08 else roll < 0.78
            roll = rand()
            sms_opt_in = (
                None
                if roll < 0.3 or phone is None
                else ("opted_in" if roll < 0.7 else ("opted_out" if roll < 0.9 else "pending"))
            )

            customers.append(
                (
                    cid,
                    first,
                    last,
                    email,
                    phone,
                    country,
                    days[tenure],
                    orders_count,
                    ltv,
                    days[last_order_age] if last_order_age is not None else None,
                    refunds,
                    days[open_age] if open_age is not None else None,
                    days[click_age] if click_age is not None else None,
                    days[sms_click_age] if sms_click_age is not None else None,
                    email_opt_in,
                    sms_opt_in,
                )
            )

            roll = rand()
            if email and roll < 0.03:
                chunk["email_unsubscribes"].append(
                    (email.strip().lower() if roll < 0.02 else email, days[randrange(tenure + 1)])
                )
            elif email and roll < 0.04:
                chunk["hard_bounces"].append((email.strip().upper(), days[randrange(tenure + 1)]))
            elif email and roll < 0.043:
                chunk["spam_complaints"].append((email, days[randrange(tenure + 1)]))
            elif roll < 0.048:
                chunk["do_not_contact"].append(
                    (cid, choice(("legal_request", "deceased", "staff")), days[randrange(tenure + 1)])
                )
            if phone and sms_opt_in == "opted_in" and rand() < 0.03:
                chunk["sms_opt_outs"].append((phone, days[randrange(tenure + 1)]))
        yield chunk


# --- writers ----------------------------------------------------------------------------


def existing_demo_spec(path: Path) -> DemoSpec | None:
    """The spec a SQLite demo warehouse at ``path`` was generated from, if it is one."""
    if not path.exists():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            row = conn.execute(
                "SELECT customers, seed, as_of, generator_version FROM personasync_demo_meta"
            ).fetchone()
    except sqlite3.Error:
        return None
    if row is None or row[3] != GENERATOR_VERSION:
        return None
    return DemoSpec(customers=row[0], seed=row[1], as_of=date.fromisoformat(row[2]))


def write_sqlite_demo(path: Path, spec: DemoSpec, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
    """Write the demo warehouse to a fresh SQLite file, replacing ``path`` atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        dialect = sqlite_dialect.dialect()
        for table in DEMO_METADATA.sorted_tables:
            conn.execute(str(CreateTable(table).compile(dialect=dialect)))
        inserts = {
            t.name: f"INSERT INTO {t.name} VALUES ({', '.join('?' for _ in t.columns)})" for t in DATA_TABLES
        }
        for chunk in iter_demo_chunks(spec, chunk_size):
            for name, rows in chunk.items():
                if rows:
                    conn.executemany(inserts[name], rows)
            conn.commit()
        for table in DEMO_METADATA.sorted_tables:
            for index in table.indexes:
                conn.execute(str(CreateIndex(index).compile(dialect=dialect)))
        conn.execute(
            "INSERT INTO personasync_demo_meta VALUES (?, ?, ?, ?)",
            (spec.customers, spec.seed, spec.as_of.isoformat(), GENERATOR_VERSION),
        )
        conn.commit()
        conn.execute("ANALYZE")
    finally:
        conn.close()
    tmp.replace(path)


def load_demo(engine: Engine, spec: DemoSpec, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
    """Create the demo tables in any SQLAlchemy database and load ``spec``'s rows (tests, small sizes)."""
    DEMO_METADATA.drop_all(engine)
    DEMO_METADATA.create_all(engine)
    with engine.begin() as conn:
        for chunk in iter_demo_chunks(spec, chunk_size):
            for table in DATA_TABLES:
                rows = chunk[table.name]
                if rows:
                    conn.execute(table.insert(), [_as_params(table, row) for row in rows])
        conn.execute(
            DEMO_META.insert(),
            {
                "customers": spec.customers,
                "seed": spec.seed,
                "as_of": spec.as_of,
                "generator_version": GENERATOR_VERSION,
            },
        )


def _as_params(table: sa.Table, row: tuple[Any, ...]) -> dict[str, Any]:
    values = list(row)
    for i in _DATE_COLUMNS[table.name]:
        if values[i] is not None:
            values[i] = date.fromisoformat(values[i])
    return dict(zip(table.columns.keys(), values, strict=True))


# --- mutations: a small, explainable change to an existing SQLite demo warehouse ------------
@dataclass(frozen=True)
class Mutation:
    """What :func:`mutate_sqlite_demo` changed, by kind of change: customer keys."""

    round: int
    changed: dict[str, list[int]]

    @property
    def customers(self) -> int:
        return sum(len(keys) for keys in self.changed.values())


MUTATION_SHARES: Final = (
    ("ordered again today", 0.35),  # lapsed or at-risk customers come back: persona moves
    ("last order pushed 100 days back", 0.2),  # loyal customers drift to at-risk
    ("withdrew email consent", 0.1),  # suppressed on email, tags removed
    ("unsubscribed from email", 0.1),  # on the unsubscribe list
    ("changed email address", 0.06),  # identity change: tags move to the new address
    ("opted in to SMS", 0.06),  # consent granted: suppression lifted, tags added
    ("deleted from the warehouse", 0.05),  # key vanished: our tags come off
    ("refunded a third order", 0.08),  # the negative persona: suppressed
)


def mutate_sqlite_demo(path: Path, customers: int | None = None) -> Mutation:
    """Change a few hundred customers of the demo warehouse at ``path`` (deterministic per
    round: the n-th mutation of the same warehouse always changes the same customers)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS personasync_demo_mutations "
            "(round INTEGER PRIMARY KEY, customers INTEGER)"
        )
        spec_row = conn.execute("SELECT seed, as_of FROM personasync_demo_meta").fetchone()
        (last,) = conn.execute("SELECT COALESCE(MAX(round), 0) FROM personasync_demo_mutations").fetchone()
        round_number = last + 1
        rng = random.Random(f"{spec_row[0]}:{round_number}")
        keys = [row[0] for row in conn.execute("SELECT customer_id FROM customers ORDER BY customer_id")]
        size = customers if customers is not None else min(300, max(10, len(keys) // 30))
        chosen = rng.sample(keys, min(size, len(keys)))
        changed: dict[str, list[int]] = {}
        start = 0
        for label, share in MUTATION_SHARES:
            count = max(1, round(share * len(chosen)))
            changed[label] = sorted(chosen[start : start + count])
            start += count
        as_of = spec_row[1]
        _mutate(conn, changed, as_of, round_number)
        conn.execute("INSERT INTO personasync_demo_mutations VALUES (?, ?)", (round_number, start))
        conn.commit()
    finally:
        conn.close()
    return Mutation(round_number, {k: v for k, v in changed.items() if v})


def _mutate(conn: sqlite3.Connection, changed: dict[str, list[int]], as_of: str, round_number: int) -> None:
    def each(label: str, sql: str, params: Callable[[int], tuple[Any, ...]] = lambda k: (k,)) -> None:
        conn.executemany(sql, [params(k) for k in changed[label]])

    each(
        "ordered again today",
        "UPDATE customers SET orders_count = orders_count + 3, lifetime_value = lifetime_value + 450, "
        "last_order_date = ? WHERE customer_id = ?",
        lambda k: (as_of, k),
    )
    each(
        "last order pushed 100 days back",
        "UPDATE customers SET last_order_date = date(?, '-100 days') WHERE customer_id = ?",
        lambda k: (as_of, k),
    )
    each("withdrew email consent", "UPDATE customers SET email_opt_in = 0 WHERE customer_id = ?")
    each(
        "unsubscribed from email",
        "INSERT INTO email_unsubscribes "
        "SELECT email, ? FROM customers WHERE customer_id = ? AND email IS NOT NULL",
        lambda k: (as_of, k),
    )
    each(
        "changed email address",
        "UPDATE customers SET email = ? WHERE customer_id = ?",
        lambda k: (f"customer{k}.r{round_number}@new.example.com", k),
    )
    each("opted in to SMS", "UPDATE customers SET sms_opt_in = 'opted_in' WHERE customer_id = ?")
    each("deleted from the warehouse", "DELETE FROM customers WHERE customer_id = ?")
    each("refunded a third order", "UPDATE customers SET refunds_count = 3 WHERE customer_id = ?")
