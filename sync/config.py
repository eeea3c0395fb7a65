"""The configuration model: what a ``personasync.toml`` may contain.

Every section is strict (``extra="forbid"``) and validated before any I/O. Reading the
file, ``${VAR}`` interpolation and error messages live in ``sync/config_loader.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from personas.config import (
    AssignmentConfig,
    ConsentConfig,
    PersonaConfig,
    ResolverSettings,
    SourceConfig,
    StrictModel,
    SuppressionConfig,
    TagSafeName,
)
from personas.model import Channel
from personas.rules import suggest
from sync.membership import TagNaming


def _check_database_url(url: SecretStr) -> SecretStr:
    try:
        make_url(url.get_secret_value())
    except (ArgumentError, ValueError):
        # The message never repeats the URL: it may hold a password.
        raise ValueError(
            "not a SQLAlchemy database URL (expected e.g. "
            "'sqlite:///warehouse.db' or 'postgresql+psycopg://user@host:5432/db')"
        ) from None
    return url


DatabaseUrl = Annotated[SecretStr, AfterValidator(_check_database_url)]
"""A SQLAlchemy URL. Kept secret because it usually carries a password."""


def database_url(url: SecretStr) -> URL:
    """The parsed URL, for connecting."""
    return make_url(url.get_secret_value())


def display_url(url: SecretStr) -> str:
    """The URL with its password masked, safe for output."""
    return database_url(url).render_as_string(hide_password=True)


class WarehouseConfig(StrictModel):
    url: DatabaseUrl = Field(description="SQLAlchemy URL of the warehouse, read-only access.")


STATE_IN_WAREHOUSE: Final = ("postgresql", "duckdb")  # dialects tested with the state in a schema


class StateConfig(StrictModel):
    url: DatabaseUrl | None = Field(
        default=None,
        description="SQLAlchemy URL of the state store; default: personasync-state.db beside the config.",
    )
    lock_timeout_minutes: float = Field(
        default=120,
        gt=0,
        description="A run lock without a heartbeat for this long is stale (its run died) and is taken over.",
    )
    location: Literal["separate", "warehouse"] = Field(
        default="separate",
        description="'separate': the store at url; 'warehouse': in a schema of the warehouse itself "
        "(PostgreSQL, DuckDB), so a steady run's diff is one query where the data lives.",
    )
    schema_name: str = Field(
        default="personasync",
        alias="schema",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="With location = 'warehouse': the schema personasync creates and writes its tables in.",
    )

    @model_validator(mode="after")
    def _one_place(self) -> StateConfig:
        if self.location == "warehouse" and self.url is not None:
            raise ValueError(
                "url: leave it unset with location = 'warehouse' (the state goes into the warehouse's "
                f"schema {self.schema_name!r})"
            )
        return self

    @property
    def in_warehouse(self) -> bool:
        return self.location == "warehouse"


def _check_tag_text(value: str) -> str:
    bad = sorted({c for c in value if c in ",;" or not c.isprintable()})
    if bad:
        raise ValueError(f"tag names may not contain {', '.join(repr(c) for c in bad)}")
    return value


TagText = Annotated[str, AfterValidator(_check_tag_text)]


class DestinationBase(StrictModel):
    name: TagSafeName = Field(description="Unique name of this destination in the config.")
    channel: Channel = Field(description="Channel whose consent governs this destination.")
    tag_prefix: TagText = Field(
        default="persona:",
        max_length=40,
        description="Prepended to persona names to make this destination's tags.",
    )
    tag_names: dict[str, Annotated[TagText, Field(min_length=1, max_length=100)]] = Field(
        default_factory=dict, description="Explicit tag name per persona, instead of tag_prefix + name."
    )
    max_remove_percent: float = Field(
        default=20,
        ge=0,
        le=100,
        description="Block a run that removes tags from more than this % of tagged customers.",
    )
    max_suppress_percent: float = Field(
        default=20, ge=0, le=100, description="Block a run that suppresses more than this % of the audience."
    )

    def naming(self) -> TagNaming:
        return TagNaming(self.tag_prefix, dict(self.tag_names))


class FileDestinationConfig(DestinationBase):
    type: Literal["file"] = Field(description="A local folder of CSV files a marketer can import anywhere.")
    path: str = Field(min_length=1, description="Folder for the CSV files, relative to the config file.")


class MailchimpDestinationConfig(DestinationBase):
    type: Literal["mailchimp"] = Field(
        description="A Mailchimp audience: persona tags as tags, suppression as unsubscribed."
    )
    api_key: SecretStr = Field(
        description='Mailchimp API key, e.g. "${MAILCHIMP_API_KEY}"; ends with its data centre (-us6).'
    )
    list_id: str = Field(min_length=1, description="The audience (list) id.")
    base_url: str | None = Field(
        default=None, description="API base URL; default https://<dc>.api.mailchimp.com/3.0 from the key."
    )
    requests_per_second: float = Field(
        default=10, gt=0, description="Requests per second (Mailchimp publishes only a 10-connection cap)."
    )
    timeout_seconds: float = Field(
        default=120, gt=0, description="Read timeout per request (Mailchimp's own is 120 s)."
    )

    @model_validator(mode="after")
    def _email_channel_and_data_centre(self) -> MailchimpDestinationConfig:
        if self.channel != "email":
            raise ValueError(
                f"a mailchimp destination sends email; channel must be 'email' (got {self.channel!r})"
            )
        key = self.api_key.get_secret_value()
        if self.base_url is None and ("-" not in key or not key.rpartition("-")[2].isalnum()):
            raise ValueError(
                "api_key: a Mailchimp API key ends with its data centre, e.g. '-us6' (or set base_url)"
            )
        return self


def _check_revision(value: str) -> str:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.\w+)?", value):
        raise ValueError(f"a Klaviyo revision is a date, YYYY-MM-DD[.suffix] (got {value!r})")
    return value


class KlaviyoDestinationConfig(DestinationBase):
    type: Literal["klaviyo"] = Field(
        description="A Klaviyo account: persona tags in a profile property, suppression per channel."
    )
    api_key: SecretStr = Field(description='Klaviyo private API key, e.g. "${KLAVIYO_API_KEY}".')
    tag_property: str = Field(
        default="personas",
        min_length=1,
        max_length=100,
        description="Profile property (a list) that holds this destination's tags.",
    )
    lists: dict[str, Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict, description="Static list id per persona, kept in step with its tag."
    )
    base_url: str = Field(default="https://a.klaviyo.com", description="API base URL (tests, proxies).")
    revision: Annotated[str, AfterValidator(_check_revision)] = Field(
        default="2026-07-15",
        description="Klaviyo API revision sent on every call; the one personasync was tested against.",
    )
    rate_limit_share: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of Klaviyo's per-endpoint rate limits this destination may use.",
    )
    job_timeout_seconds: float = Field(
        default=600, gt=0, description="How long to wait for one Klaviyo bulk job before giving up on it."
    )
    timeout_seconds: float = Field(default=60, gt=0, description="Read timeout per request.")

    @model_validator(mode="after")
    def _email_or_sms(self) -> KlaviyoDestinationConfig:
        if self.channel not in ("email", "sms"):
            raise ValueError(f"a klaviyo destination is for channel 'email' or 'sms' (got {self.channel!r})")
        return self


class AttentiveDestinationConfig(DestinationBase):
    type: Literal["attentive"] = Field(
        description="Attentive (SMS): persona tags as custom attributes; suppression = unsubscribe."
    )
    api_key: SecretStr = Field(description='Attentive API key (bearer token), e.g. "${ATTENTIVE_API_KEY}".')
    attribute_mode: Literal["per_persona", "primary"] = Field(
        default="per_persona",
        description="One true/false attribute per persona, or one attribute holding the persona.",
    )
    true_value: str = Field(default="true", min_length=1, description="Value of a persona attribute we set.")
    false_value: str = Field(
        default="false", min_length=1, description="Value of a persona attribute we clear."
    )
    primary_attribute: str = Field(
        default="persona", min_length=1, description="Attribute holding the persona, in 'primary' mode."
    )
    base_url: str = Field(
        default="https://api.attentivemobile.com/v1", description="API base URL (tests, proxies)."
    )
    timeout_seconds: float = Field(default=30, gt=0, description="Read timeout per request.")

    @model_validator(mode="after")
    def _sms_only(self) -> AttentiveDestinationConfig:
        if self.channel != "sms":
            raise ValueError(
                f"an attentive destination sends texts; channel must be 'sms' (got {self.channel!r})"
            )
        return self


HUBSPOT_LEGAL_BASES: Final = (
    "LEGITIMATE_INTEREST_PQL",
    "LEGITIMATE_INTEREST_CLIENT",
    "PERFORMANCE_OF_CONTRACT",
    "CONSENT_WITH_NOTICE",
    "NON_GDPR",
    "PROCESS_AND_STORE",
    "LEGITIMATE_INTEREST_OTHER",
)


class HubSpotDestinationConfig(DestinationBase):
    type: Literal["hubspot"] = Field(
        description="HubSpot contacts: tags in a multiple-checkbox property; suppression = unsubscribe."
    )
    access_token: SecretStr = Field(
        description='HubSpot private app access token, e.g. "${HUBSPOT_ACCESS_TOKEN}".'
    )
    tag_property: str = Field(
        default="personasync_personas",
        pattern=r"^[a-z][a-z0-9_]{0,99}$",
        description="Internal name of the multiple-checkbox contact property holding the tags.",
    )
    hs_persona: dict[str, Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict,
        description="Persona -> hs_persona internal value (e.g. persona_1); needs first_match assignment.",
    )
    lists: dict[str, Annotated[str, Field(pattern=r"^\d+$")]] = Field(
        default_factory=dict, description="Static (MANUAL or SNAPSHOT) list id per persona, kept in step."
    )
    subscription_id: Annotated[str, Field(pattern=r"^\d+$")] | None = Field(
        default=None,
        description="Email subscription type a suppressed contact is unsubscribed from (required for email).",
    )
    legal_basis: Literal[HUBSPOT_LEGAL_BASES] | None = Field(  # type: ignore[valid-type]
        default=None, description="GDPR legal basis sent with unsubscribes, for accounts that require one."
    )
    legal_basis_explanation: str | None = Field(default=None, description="Text sent with legal_basis.")
    requests_per_ten_seconds: int = Field(
        default=100,
        ge=1,
        le=250,
        description="This destination's share of the account's 10-second limit (100 Starter, 190 Pro/Ent).",
    )
    base_url: str = Field(default="https://api.hubapi.com", description="API base URL (tests, proxies).")
    timeout_seconds: float = Field(default=30, gt=0, description="Read timeout per request.")

    @model_validator(mode="after")
    def _crm_or_email(self) -> HubSpotDestinationConfig:
        if self.channel not in ("crm", "email"):
            raise ValueError(f"a hubspot destination is for channel 'crm' or 'email' (got {self.channel!r})")
        if self.channel == "email" and self.subscription_id is None:
            raise ValueError(
                "subscription_id: an email destination must be able to unsubscribe suppressed contacts; "
                "set the id of the email subscription type to unsubscribe them from"
            )
        return self


class SalesforceDestinationConfig(DestinationBase):
    type: Literal["salesforce"] = Field(
        description="Salesforce Contacts or Leads: tags in a multi-select picklist; suppression = opt-out."
    )
    client_id: SecretStr = Field(description='Connected app consumer key, e.g. "${SALESFORCE_CLIENT_ID}".')
    client_secret: SecretStr | None = Field(
        default=None, description='Connected app consumer secret, e.g. "${SALESFORCE_CLIENT_SECRET}".'
    )
    refresh_token: SecretStr = Field(description='OAuth refresh token, e.g. "${SALESFORCE_REFRESH_TOKEN}".')
    refresh_token_file: str | None = Field(
        default=None,
        description="File (relative to the config) keeping a rotated refresh token for the next run.",
    )
    login_url: str = Field(
        default="https://login.salesforce.com",
        pattern=r"^https?://[^/\s]+/?$",
        description="OAuth host: https://test.salesforce.com for sandboxes, or the org's My Domain URL.",
    )
    object: Literal["Contact", "Lead"] = Field(default="Contact", description="Records that carry the tags.")
    external_id_field: str = Field(
        default="Warehouse_Id__c",
        pattern=r"^[A-Za-z][A-Za-z0-9_]{0,79}$",
        description="External ID field holding the customer key; records are matched on it.",
    )
    tag_field: str = Field(
        default="Persona_Tags__c",
        pattern=r"^[A-Za-z][A-Za-z0-9_]{0,79}$",
        description="Multi-select picklist holding this destination's tags.",
    )
    api_version: str = Field(
        default="v60.0", pattern=r"^v\d{2,3}\.0$", description="REST API version, e.g. v60.0."
    )
    timeout_seconds: float = Field(default=60, gt=0, description="Read timeout per request.")

    @model_validator(mode="after")
    def _crm_only(self) -> SalesforceDestinationConfig:
        if self.channel != "crm":
            raise ValueError(f"a salesforce destination is for channel 'crm' (got {self.channel!r})")
        return self


DESTINATION_TYPES: Final[dict[str, type[DestinationBase]]] = {
    "file": FileDestinationConfig,
    "mailchimp": MailchimpDestinationConfig,
    "klaviyo": KlaviyoDestinationConfig,
    "attentive": AttentiveDestinationConfig,
    "hubspot": HubSpotDestinationConfig,
    "salesforce": SalesforceDestinationConfig,
}


def _destination_type(value: object) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type")
        return kind if isinstance(kind, str) else None
    kind = getattr(value, "type", None)
    return kind if isinstance(kind, str) else None


DestinationConfig = Annotated[
    Annotated[FileDestinationConfig, Tag("file")]
    | Annotated[MailchimpDestinationConfig, Tag("mailchimp")]
    | Annotated[KlaviyoDestinationConfig, Tag("klaviyo")]
    | Annotated[AttentiveDestinationConfig, Tag("attentive")]
    | Annotated[HubSpotDestinationConfig, Tag("hubspot")]
    | Annotated[SalesforceDestinationConfig, Tag("salesforce")],
    Discriminator(_destination_type),
]


def _check_destination_type(value: object) -> object:
    """A readable error for a missing or misspelt ``type`` before the union tries to parse."""
    if not isinstance(value, dict):
        return value
    kind = value.get("type")
    known = sorted(DESTINATION_TYPES)
    if kind is None:
        raise ValueError(f"missing key 'type' (one of: {', '.join(known)})")
    if kind not in DESTINATION_TYPES:
        hint = suggest(str(kind), known)
        did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
        raise ValueError(f"unknown destination type {kind!r}{did_you_mean}; known types: {', '.join(known)}")
    return value


def _duplicates(names: list[str]) -> list[str]:
    return sorted(name for name, count in Counter(names).items() if count > 1)


class AppConfig(StrictModel):
    warehouse: WarehouseConfig = Field(description="Where customer data is read from.")
    state: StateConfig = Field(default_factory=StateConfig, description="Where sync state is kept.")
    source: SourceConfig = Field(description="The customer model: one row per customer.")
    consent: ConsentConfig = Field(default_factory=ConsentConfig, description="Consent per channel.")
    suppressions: list[SuppressionConfig] = Field(
        default_factory=list, description="Suppression sources; a match always wins over a persona."
    )
    assignment: AssignmentConfig = Field(
        default_factory=AssignmentConfig, description="How matching personas become tags; holdouts."
    )
    personas: list[PersonaConfig] = Field(default_factory=list, description="Personas in priority order.")
    destinations: list[Annotated[DestinationConfig, BeforeValidator(_check_destination_type)]] = Field(
        default_factory=list, description="Where persona tags and suppressions are sent."
    )

    @model_validator(mode="after")
    def _state_in_the_warehouse(self) -> AppConfig:
        """With ``[state] location = "warehouse"`` the state store is the warehouse itself."""
        if not self.state.in_warehouse:
            return self
        backend = database_url(self.warehouse.url).get_backend_name()
        if backend not in STATE_IN_WAREHOUSE:
            raise ValueError(
                "state.location: 'warehouse' needs a warehouse with schemas "
                f"({', '.join(STATE_IN_WAREHOUSE)}); this one is {backend}"
                + (
                    " (a SQLite warehouse and a SQLite state file are joined without it)"
                    if backend == "sqlite"
                    else ""
                )
            )
        return self

    def state_store(self) -> tuple[SecretStr, str | None]:
        """(URL, schema) of the state store: with ``location = "warehouse"`` the warehouse's URL
        and the schema to keep the state in; otherwise ``[state] url`` and None."""
        if self.state.in_warehouse:
            return self.warehouse.url, self.state.schema_name
        assert self.state.url is not None  # the loader fills in the default
        return self.state.url, None

    @model_validator(mode="after")
    def _destinations_fit_the_personas(self) -> AppConfig:
        names = [p.name for p in self.personas]
        problems = []
        for i, destination in enumerate(self.destinations):
            by_persona = {"tag_names": list(destination.tag_names)}
            if isinstance(destination, KlaviyoDestinationConfig | HubSpotDestinationConfig):
                by_persona["lists"] = list(destination.lists)
            if isinstance(destination, HubSpotDestinationConfig):
                by_persona["hs_persona"] = list(destination.hs_persona)
            for key, personas in by_persona.items():
                for persona in personas:
                    if persona not in names:
                        hint = suggest(persona, names)
                        did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
                        problems.append(f"destinations[{i}].{key}: unknown persona {persona!r}{did_you_mean}")
            one_persona = {  # key -> what holds a single persona per customer
                "attribute_mode": "'primary'"
                if isinstance(destination, AttentiveDestinationConfig)
                and destination.attribute_mode == "primary"
                else None,
                "hs_persona": "hs_persona"
                if isinstance(destination, HubSpotDestinationConfig) and destination.hs_persona
                else None,
            }
            for key, what in one_persona.items():
                if what and self.assignment.mode != "first_match":
                    problems.append(
                        f"destinations[{i}].{key}: {what} holds one persona per customer; "
                        'it needs [assignment] mode = "first_match"'
                    )
            consent = getattr(self.consent, destination.channel)
            if destination.channel in ("email", "sms") and consent is None:
                channel = destination.channel
                problems.append(
                    f"destinations[{i}]: channel {channel!r} needs [consent.{channel}]: "
                    "without it every customer would be suppressed on that channel"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("personas")
    @classmethod
    def _unique_persona_names(cls, personas: list[PersonaConfig]) -> list[PersonaConfig]:
        dupes = _duplicates([p.name for p in personas])
        if dupes:
            raise ValueError(f"duplicate persona name(s): {', '.join(dupes)}")
        return personas

    @field_validator("destinations")
    @classmethod
    def _unique_destination_names(cls, destinations: list[DestinationBase]) -> list[DestinationBase]:
        dupes = _duplicates([d.name for d in destinations])
        if dupes:
            raise ValueError(f"duplicate destination name(s): {', '.join(dupes)}")
        return destinations

    def resolver_settings(self) -> ResolverSettings:
        """The persona-side sections, as the resolver takes them."""
        return ResolverSettings(
            source=self.source,
            consent=self.consent,
            suppressions=tuple(self.suppressions),
            personas=tuple(self.personas),
            assignment=self.assignment,
        )
