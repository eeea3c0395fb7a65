"""Every vendor behind its HTTP emulator, a demo world whose config points at them, and
``personasync sync`` run as a real process against them: the harness of the crash tests
and the hostile-API tests.

Each :class:`Vendor` knows what its account holds per destination (tags and suppressions,
by address, or by customer key for Salesforce), which of its side effects a person notices
if repeated (an Attentive unsubscribe texts them), and what it must never be asked to do
(``violations``: subscribing anyone). The credentials come from the environment, as in
production: :data:`CREDENTIALS` must be set (``monkeypatch.setenv``) before a run.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync.destinations import destination_tags
from tests.emulators.hubspot import hubspot_emulator
from tests.emulators.klaviyo import klaviyo_emulator
from tests.emulators.mailchimp import api_url, mailchimp_emulator
from tests.emulators.salesforce import salesforce_emulator
from tests.emulators.server import Emulator
from tests.fakes.attentive import AttentiveModel
from tests.fakes.hubspot import HubSpotModel
from tests.fakes.klaviyo import KlaviyoModel
from tests.fakes.mailchimp import MailchimpModel
from tests.fakes.memory_destination import MemoryDestination
from tests.fakes.salesforce import SalesforceModel
from tests.sync_world import AS_OF, World, make_world

HUBSPOT_TOKEN = "pat-na1-c4a5h000-0000-4000-8000-c4a5h0000000"
ATTENTIVE_TOKEN = "atn_c4a5h0000000000000000000000000"
KLAVIYO_KEY = "pk_c4a5h0000000000000000000000000000"
MAILCHIMP_KEY = "c4a5h000000000000000000000000000-us6"
SALESFORCE_CLIENT_ID = "3MVG9c4a5h_client_0000000000000000"
SALESFORCE_SECRET = "sfsecret_c4a5h000000000000000000000"
SALESFORCE_REFRESH = "5Aep861_c4a5h_refresh_00000000000000"
CREDENTIALS = {
    "CLI_HUBSPOT_TOKEN": HUBSPOT_TOKEN,
    "CLI_ATTENTIVE_TOKEN": ATTENTIVE_TOKEN,
    "CLI_KLAVIYO_KEY": KLAVIYO_KEY,
    "CLI_MAILCHIMP_KEY": MAILCHIMP_KEY,
    "CLI_SALESFORCE_CLIENT_ID": SALESFORCE_CLIENT_ID,
    "CLI_SALESFORCE_SECRET": SALESFORCE_SECRET,
    "CLI_SALESFORCE_REFRESH": SALESFORCE_REFRESH,
}
SUBSCRIPTION = 77  # the HubSpot email subscription type suppressed contacts leave
CUSTOMERS = 60
Held = tuple[dict[str, frozenset[str]], set[str]]  # tags by address (or key), suppressed ones


@dataclass
class Vendor:
    """One vendor account behind its emulator, and the destinations of the config using it."""

    name: str
    model: Any
    emulator: Emulator
    config: str  # [[destinations]] blocks pointing at the emulator
    held: dict[str, Callable[[], Held]]  # destination -> what the account holds for it
    by_key: frozenset[str] = frozenset()  # destinations addressed by customer key
    noticed_once: Callable[[], dict[str, int]] | None = None  # address -> times the person noticed
    noticed_on: str = ""  # the destination whose suppressions the person notices
    prepare: Callable[[World], None] = lambda world: None

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(self.held)


def _hubspot(stack: ExitStack) -> Vendor:
    model = HubSpotModel(HUBSPOT_TOKEN)
    emulator = stack.enter_context(hubspot_emulator(model, latency=0, enforce_limits=False, max_seconds=900))

    def prepare(world: World) -> None:
        model.add_subscription(SUBSCRIPTION, "Newsletter")
        spec = next(d for d in world.config.destinations if d.name == "hubspot")
        model.add_property("personasync_personas", list(destination_tags(spec, world.config.personas)))

    config = f"""
[[destinations]]
type = "hubspot"
name = "hubspot"
channel = "email"
access_token = "${{CLI_HUBSPOT_TOKEN}}"
subscription_id = "{SUBSCRIPTION}"
base_url = "{emulator.url}"
timeout_seconds = 2
max_suppress_percent = 100
"""
    return Vendor(
        "hubspot", model, emulator, config,
        {"hubspot": lambda: (model.tags(), model.unsubscribed(SUBSCRIPTION))}, prepare=prepare,
    )  # fmt: skip


def _attentive(stack: ExitStack) -> Vendor:
    model = AttentiveModel(ATTENTIVE_TOKEN)
    emulator = stack.enter_context(Emulator(model.handle, max_seconds=900))

    def prepare(world: World) -> None:
        for phone in world.desired("attentive")[0]:
            model.add(phone)

    config = f"""
[[destinations]]
type = "attentive"
name = "attentive"
channel = "sms"
api_key = "${{CLI_ATTENTIVE_TOKEN}}"
base_url = "{emulator.url}/v1"
tag_prefix = "persona_"
timeout_seconds = 2
max_suppress_percent = 100
"""
    return Vendor(
        "attentive", model, emulator, config, {"attentive": lambda: (model.tagged(), model.unsubscribed())},
        noticed_once=model.unsubscribe_texts, noticed_on="attentive", prepare=prepare,
    )  # fmt: skip


def _klaviyo(stack: ExitStack) -> Vendor:
    model = KlaviyoModel(KLAVIYO_KEY, polls_to_finish=2)  # one poll answers "queued": a kill point
    emulator = stack.enter_context(klaviyo_emulator(model, latency=0, enforce_limits=False, max_seconds=900))
    config = "".join(
        f"""
[[destinations]]
type = "klaviyo"
name = "klaviyo_{channel}"
channel = "{channel}"
api_key = "${{CLI_KLAVIYO_KEY}}"
base_url = "{emulator.url}"
timeout_seconds = 2
max_suppress_percent = 100
"""
        for channel in ("email", "sms")
    )

    def email() -> Held:
        return {a: t for a, t in model.tagged().items() if a}, model.suppressed()

    def sms() -> Held:
        return {
            p: t for p, t in model.tagged(identifier="phone_number").items() if p
        }, model.sms_unsubscribed()

    return Vendor("klaviyo", model, emulator, config, {"klaviyo_email": email, "klaviyo_sms": sms})


def _salesforce(stack: ExitStack) -> Vendor:
    model = SalesforceModel(SALESFORCE_CLIENT_ID, SALESFORCE_REFRESH, SALESFORCE_SECRET)
    emulator = stack.enter_context(salesforce_emulator(model, latency=0, max_seconds=900))

    def prepare(world: World) -> None:
        spec = next(d for d in world.config.destinations if d.name == "salesforce")
        model.add_external_id("Contact", "Warehouse_Id__c")
        model.add_picklist(
            "Contact", "Persona_Tags__c", [*destination_tags(spec, world.config.personas), "Partner"]
        )
        with sqlite3.connect(world.warehouse) as conn:
            for (key,) in conn.execute("SELECT customer_id FROM customers"):
                model.add_record("Contact", Warehouse_Id__c=str(key), LastName=f"Customer {key}")

    config = f"""
[[destinations]]
type = "salesforce"
name = "salesforce"
channel = "crm"
client_id = "${{CLI_SALESFORCE_CLIENT_ID}}"
client_secret = "${{CLI_SALESFORCE_SECRET}}"
refresh_token = "${{CLI_SALESFORCE_REFRESH}}"
login_url = "{emulator.url}"
timeout_seconds = 2
max_suppress_percent = 100
"""

    def held() -> Held:
        return {str(k): t for k, t in model.tags().items()}, {str(k) for k in model.opted_out()}

    return Vendor(
        "salesforce", model, emulator, config, {"salesforce": held}, by_key=frozenset({"salesforce"}),
        prepare=prepare,
    )  # fmt: skip


def _mailchimp(stack: ExitStack) -> Vendor:
    model = MailchimpModel(MAILCHIMP_KEY)
    emulator = stack.enter_context(mailchimp_emulator(model, latency=0, max_seconds=900))

    def prepare(world: World) -> None:
        tagged, suppressed = world.desired("mailchimp")
        model.add_members(sorted(tagged) + sorted(suppressed)[::2])  # tags go only to members

    config = f"""
[[destinations]]
type = "mailchimp"
name = "mailchimp"
channel = "email"
api_key = "${{CLI_MAILCHIMP_KEY}}"
list_id = "{model.list_id}"
base_url = "{api_url(emulator)}"
timeout_seconds = 2
max_suppress_percent = 100
"""
    return Vendor(
        "mailchimp", model, emulator, config,
        {"mailchimp": lambda: (model.tagged(), model.with_status("unsubscribed"))}, prepare=prepare,
    )  # fmt: skip


VENDORS: dict[str, Callable[[ExitStack], Vendor]] = {
    "mailchimp": _mailchimp,
    "hubspot": _hubspot,
    "attentive": _attentive,
    "klaviyo": _klaviyo,
    "salesforce": _salesforce,
}


@dataclass
class Stage:
    """The vendors, their emulators and the world; ``desired`` is computed once (the warehouse
    does not change during a test)."""

    world: World
    vendors: list[Vendor]
    desired: dict[str, Held] = field(default_factory=dict)

    @property
    def destinations(self) -> list[str]:
        return [name for vendor in self.vendors for name in vendor.destinations]

    def vendor(self, name: str) -> Vendor:
        return next(v for v in self.vendors if v.name == name)

    def answered(self) -> int:
        return sum(v.emulator.requests for v in self.vendors)


@contextmanager
def stage(
    folder: Path,
    vendors: Sequence[str] = tuple(VENDORS),
    customers: int = CUSTOMERS,
    *,
    state_url: str | None = None,
    lock_timeout_minutes: float = 0.001,
) -> Iterator[Stage]:
    """Emulators for ``vendors`` running, and a demo world whose config points at them. By
    default a killed run's lock is stale at once (the timeout has its own test)."""
    with ExitStack() as stack:
        chosen = [VENDORS[name](stack) for name in vendors]
        extra = "".join(v.config for v in chosen)
        world = make_world(folder, customers=customers, state_url=state_url, extra_config=extra)
        config_file = folder / "personasync.toml"
        timeout = f"lock_timeout_minutes = {lock_timeout_minutes}"
        config_file.write_text(config_file.read_text().replace("lock_timeout_minutes = 120", timeout))
        # World.desired() computes through the config's destinations; the memory ones are placeholders
        world.destinations = {name: MemoryDestination(name, 50) for v in chosen for name in v.destinations}
        for vendor in chosen:
            vendor.prepare(world)
        desired = {
            name: (world.desired_by_key(name) if name in v.by_key else world.desired(name))
            for v in chosen
            for name in v.destinations
        }
        yield Stage(world, chosen, desired)


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str


def sync_command(stage: Stage, *extra: str) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "sync.cli_main",
        "sync",
        "--config",
        str(stage.world.folder / "personasync.toml"),
    ]
    for name in stage.destinations:
        command += ["--destination", name]
    return [*command, "--as-of", AS_OF.isoformat(), *extra]


def run_sync(
    stage: Stage, *extra: str, on_start: Callable[[subprocess.Popen[bytes]], None] | None = None
) -> Run:
    """``personasync sync`` as a process, to the end (or until killed)."""
    proc = subprocess.Popen(sync_command(stage, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if on_start is not None:
        on_start(proc)
    out, err = proc.communicate(timeout=600)
    return Run(proc.returncode, out.decode(), err.decode())


def assert_exactly_desired(stage: Stage) -> None:
    """Each vendor holds exactly what the warehouse says, nobody was subscribed, and what a
    person notices happened once per suppressed person, ever."""
    for vendor in stage.vendors:
        for name, held in vendor.held.items():
            tags, suppressed = held()
            want_tags, want_suppressed = stage.desired[name]
            assert tags == want_tags, f"{name}: tags differ for {_differ(tags, want_tags)}"
            assert suppressed == want_suppressed, f"{name}: suppressed differ: {suppressed ^ want_suppressed}"
        if vendor.noticed_once is not None:
            assert vendor.noticed_once() == dict.fromkeys(stage.desired[vendor.noticed_on][1], 1)
        assert vendor.model.violations == [], vendor.model.violations


def assert_ledger_not_ahead(stage: Stage) -> None:
    """The ledger never claims a tag or a suppression the vendor does not hold."""
    for vendor in stage.vendors:
        for name, held in vendor.held.items():
            tags, suppressed = held()
            for row in stage.world.ledger_rows(name):
                who = row.key if name in vendor.by_key else row.address
                assert row.tags <= tags.get(who, frozenset()), f"ledger ahead of {name}: {who} {row.tags}"
                assert not row.suppressed or who in suppressed, f"ledger claims {who} suppressed on {name}"


def _differ(got: dict[str, frozenset[str]], want: dict[str, frozenset[str]]) -> list[str]:
    return sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))[:5]
