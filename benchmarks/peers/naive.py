"""Peer (a): "resend everything each run", as a team writes it in an afternoon.

    python -m benchmarks.peers.naive --warehouse WAREHOUSE.db [--as-of 2026-11-22]

Reads every customer, computes the demo's personas in Python (its rules written out by
hand, first match wins), and pushes every contact's current state to both vendors in the
biggest batches their APIs take, every run: no state, so no diff. It is careful where an
afternoon allows: emails trimmed, lower-cased and syntax-checked, a shared email kept by
the lowest key, email consent and the suppression tables honoured, a 429 waited out. What
it cannot know without state: which contacts it tagged before under an address that
changed or a customer that was deleted (their tags stay), which suppressions it added
(none is ever lifted). It does not know about holdouts.

Credentials and base URLs come from the environment, as the benchmark's personasync
config reads them (``BENCH_KLAVIYO_KEY``, ``BENCH_KLAVIYO_URL``, ``BENCH_HUBSPOT_TOKEN``,
``BENCH_HUBSPOT_URL``). Prints one JSON line: rows read, requests sent, 429s received,
batches refused.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

import requests

PREFIX = "persona:"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
EMAIL_PERSONAS = (
    "champion",
    "loyal",
    "new_customer",
    "at_risk",
    "win_back",
)  # sms_responder is not for email
CRM_PERSONAS = (*EMAIL_PERSONAS, "sms_responder")
KLAVIYO_PROPERTY = "personas"
HUBSPOT_PROPERTY = "personasync_personas"
SUBSCRIPTION_ID = 77
KLAVIYO_JOB = 10_000  # profiles per bulk import job
KLAVIYO_SUPPRESS = 100  # emails per suppression job
HUBSPOT_BATCH = 100  # inputs per batch upsert or status write


def persona(row: sqlite3.Row, today: date) -> str | None:
    """The demo's personas, in priority order (serial_refunder is negative: no persona)."""

    def days_ago(column: str) -> int | None:
        value = row[column]
        return (today - date.fromisoformat(value)).days if value else None

    last_order, orders, value = days_ago("last_order_date"), row["orders_count"], row["lifetime_value"]
    signup, sms_click = days_ago("signup_date"), days_ago("last_sms_click_date")
    if row["refunds_count"] >= 3:
        return "serial_refunder"
    if orders >= 5 and value >= 300 and last_order is not None and last_order <= 60:
        return "champion"
    if orders >= 3 and last_order is not None and last_order <= 120:
        return "loyal"
    if signup is not None and signup <= 30:
        return "new_customer"
    if orders >= 2 and last_order is not None and 90 < last_order <= 365:
        return "at_risk"
    if orders >= 1 and last_order is not None and last_order > 365:
        return "win_back"
    if sms_click is not None and sms_click <= 90:
        return "sms_responder"
    return None


def contacts(warehouse: str, today: date) -> Iterator[dict[str, Any]]:
    """One record per usable email: the tag and suppression each vendor should get."""
    conn = sqlite3.connect(f"file:{warehouse}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    lists = " UNION ".join(
        f"SELECT email FROM {t}" for t in ("email_unsubscribes", "hard_bounces", "spam_complaints")
    )
    unsubscribed = {(e or "").strip().lower() for (e,) in conn.execute(lists)}
    blocked = {key for (key,) in conn.execute("SELECT customer_id FROM do_not_contact")}
    seen: set[str] = set()
    for row in conn.execute("SELECT * FROM customers ORDER BY customer_id"):
        email = (row["email"] or "").strip().lower()
        if not EMAIL.match(email) or email in seen:
            continue
        seen.add(email)
        chosen = persona(row, today)
        do_not_contact = row["customer_id"] in blocked
        may_email = row["email_opt_in"] == 1 and email not in unsubscribed and not do_not_contact
        may_email = may_email and chosen != "serial_refunder"
        yield {
            "email": email,
            "klaviyo_tag": PREFIX + chosen if may_email and chosen in EMAIL_PERSONAS else None,
            "klaviyo_suppress": not may_email,
            "hubspot_tag": PREFIX + chosen if chosen in CRM_PERSONAS and not do_not_contact else None,
            "hubspot_suppress": do_not_contact,
        }


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Pusher:
    """Sends the records to Klaviyo and HubSpot; counts requests, 429s and refused batches.
    Thread-safe counters: dlt may call it from several load threads. A record's ``None``
    fields may be missing (dlt drops null values)."""

    def __init__(self) -> None:
        self.session = requests.Session()
        self.klaviyo = os.environ["BENCH_KLAVIYO_URL"]
        self.hubspot = os.environ["BENCH_HUBSPOT_URL"]
        self.klaviyo_headers = {
            "Authorization": f"Klaviyo-API-Key {os.environ['BENCH_KLAVIYO_KEY']}",
            "revision": "2026-07-15",
            "Content-Type": "application/vnd.api+json",
        }
        self.hubspot_headers = {"Authorization": f"Bearer {os.environ['BENCH_HUBSPOT_TOKEN']}"}
        self.counts = {"requests": 0, "throttled": 0, "refused": 0}
        self._lock = threading.Lock()

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def post(self, url: str, body: Any, headers: dict[str, str]) -> None:
        """POST, waiting out 429s; a refused batch is counted and skipped."""
        while True:
            self._count("requests")
            answer = self.session.post(
                url,
                data=json.dumps(body),
                headers={"Content-Type": "application/json", **headers},
                timeout=120,
            )
            if answer.status_code != 429:
                break
            self._count("throttled")
            time.sleep(float(answer.headers.get("Retry-After") or 1))
        if answer.status_code >= 400:
            self._count("refused")

    def push(self, records: Iterable[dict[str, Any]]) -> None:
        batch = list(records)
        self.klaviyo_tags(batch)
        self.klaviyo_suppress([r["email"] for r in batch if r.get("klaviyo_suppress")])
        self.hubspot_tags(batch)
        self.hubspot_suppress([r["email"] for r in batch if r.get("hubspot_suppress")])

    def klaviyo_tags(self, batch: list[dict[str, Any]]) -> None:
        every = [PREFIX + p for p in EMAIL_PERSONAS]
        for chunk in chunks(batch, KLAVIYO_JOB):
            profiles = []
            for r in chunk:
                tag = r.get("klaviyo_tag")
                patch: dict[str, Any] = {"unappend": {KLAVIYO_PROPERTY: [t for t in every if t != tag]}}
                if tag:
                    patch["append"] = {KLAVIYO_PROPERTY: [tag]}
                profiles.append(
                    {
                        "type": "profile",
                        "attributes": {"email": r["email"]},
                        "meta": {"patch_properties": patch},
                    }
                )
            job = {
                "data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": profiles}}}
            }
            self.post(f"{self.klaviyo}/api/profile-bulk-import-jobs", job, self.klaviyo_headers)

    def klaviyo_suppress(self, emails: list[str]) -> None:
        for chunk in chunks(emails, KLAVIYO_SUPPRESS):
            profiles = [{"type": "profile", "attributes": {"email": e}} for e in chunk]
            job = {
                "data": {
                    "type": "profile-suppression-bulk-create-job",
                    "attributes": {"profiles": {"data": profiles}},
                }
            }
            self.post(f"{self.klaviyo}/api/profile-suppression-bulk-create-jobs", job, self.klaviyo_headers)

    def hubspot_tags(self, batch: list[dict[str, Any]]) -> None:
        for chunk in chunks(batch, HUBSPOT_BATCH):
            inputs = [
                {
                    "id": r["email"],
                    "idProperty": "email",
                    "properties": {HUBSPOT_PROPERTY: r.get("hubspot_tag") or ""},
                }
                for r in chunk
            ]
            self.post(
                f"{self.hubspot}/crm/v3/objects/contacts/batch/upsert",
                {"inputs": inputs},
                self.hubspot_headers,
            )

    def hubspot_suppress(self, emails: list[str]) -> None:
        for chunk in chunks(emails, HUBSPOT_BATCH):
            inputs = [
                {
                    "subscriberIdString": e,
                    "channel": "EMAIL",
                    "statusState": "UNSUBSCRIBED",
                    "subscriptionId": SUBSCRIPTION_ID,
                }
                for e in chunk
            ]
            url = f"{self.hubspot}/communication-preferences/v4/statuses/batch/write"
            self.post(url, {"inputs": inputs}, self.hubspot_headers)


def arguments(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--warehouse", required=True, help="the demo's SQLite warehouse")
    parser.add_argument("--as-of", default=date.today().isoformat(), help="the day the data is read as of")
    return parser


def main() -> None:
    args = arguments(__doc__).parse_args()
    pusher = Pusher()
    records = list(contacts(args.warehouse, date.fromisoformat(args.as_of)))
    pusher.push(records)
    print(json.dumps({"rows": len(records), **pusher.counts}))


if __name__ == "__main__":
    main()
