"""What the resolver is configured with: the source model, consent, suppressions, personas.

These are the persona-side sections of ``personasync.toml``; ``sync/config.py`` composes
them with the warehouse, state and destination sections into the whole ``AppConfig``.
Every section is strict (``extra="forbid"``) and validated before any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from personas.model import CHANNELS, TAG_SAFE_PATTERN, Channel
from personas.rules import Rule, suggest


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


TagSafeName = Annotated[
    str,
    Field(
        pattern=TAG_SAFE_PATTERN,
        description="Lower-case letters, digits, '_' or '-', starting with a letter (max 63).",
    ),
]

PHONE_REGIONS: Final[frozenset[str]] = frozenset(phonenumbers.SUPPORTED_REGIONS)


class _TableOrQuery(StrictModel):
    table: str | None = Field(
        default=None, min_length=1, description="Table or view name, optionally 'schema.table'."
    )
    query: str | None = Field(
        default=None, min_length=1, description="A SELECT statement used as the source instead."
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> _TableOrQuery:
        if (self.table is None) == (self.query is None):
            raise ValueError("set exactly one of 'table' or 'query'")
        return self


class SourceConfig(_TableOrQuery):
    key: str = Field(min_length=1, description="Column that uniquely identifies a customer.")
    email: str | None = Field(default=None, min_length=1, description="Column holding the email address.")
    phone: str | None = Field(default=None, min_length=1, description="Column holding the phone number.")
    phone_region: str = Field(
        default="US",
        description="Region (ISO 3166 alpha-2) assumed for phone numbers written without a country code.",
    )
    phone_country: str | None = Field(
        default=None,
        min_length=1,
        description="Column with each customer's ISO country code, used instead of phone_region when set.",
    )
    on_duplicate_email: Literal["first_by_key", "error"] = Field(
        default="first_by_key",
        description=(
            "When several keys share an email: the lowest key keeps it and the others lose the "
            "email channel ('first_by_key'), or the run stops ('error')."
        ),
    )

    @field_validator("phone_region")
    @classmethod
    def _known_region(cls, region: str) -> str:
        if region.upper() in PHONE_REGIONS:
            return region.upper()
        hint = {"UK": "GB"}.get(region.upper()) or suggest(region.upper(), sorted(PHONE_REGIONS))
        did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
        raise ValueError(f"unknown phone region {region!r}{did_you_mean}; use an ISO code like 'US', 'GB'")


GrantedValue = bool | int | str
DEFAULT_GRANTED_VALUES: Final[tuple[GrantedValue, ...]] = (True, 1, "yes", "true", "opted_in")


class ChannelConsentConfig(StrictModel):
    column: str = Field(min_length=1, description="Source column recording consent for the channel.")
    granted_values: list[GrantedValue] = Field(
        default_factory=lambda: list(DEFAULT_GRANTED_VALUES),
        min_length=1,
        description="Values that mean consent was granted; NULL and anything else mean not granted.",
    )


class ConsentConfig(StrictModel):
    email: ChannelConsentConfig | None = Field(default=None, description="Email marketing consent.")
    sms: ChannelConsentConfig | None = Field(default=None, description="SMS marketing consent.")
    crm: ChannelConsentConfig | None = Field(default=None, description="Optional consent for CRM sync.")


class SuppressionConfig(_TableOrQuery):
    match_on: Literal["key", "email", "phone"] = Field(
        description="Which customer identifier the suppression rows carry."
    )
    column: str = Field(min_length=1, description="Column of the table/query holding that identifier.")
    channels: list[Channel] = Field(min_length=1, description="Channels the suppression applies to.")
    reason: TagSafeName = Field(description="Reason recorded for suppressed customers, e.g. 'unsubscribed'.")


class PersonaConfig(StrictModel):
    name: TagSafeName = Field(description="Persona name, used as the tag value.")
    description: str = Field(default="", description="What the persona means, for marketers.")
    rules: Rule = Field(description="Eligibility rule tree (all / any / not / comparisons / sql).")
    channels: list[Channel] = Field(
        default_factory=lambda: list(CHANNELS),
        min_length=1,
        description="Channels the persona's tag may be sent on (default: every channel).",
    )
    holdout_percent: float = Field(
        default=0,
        ge=0,
        le=50,
        description="Share of members (0-50 %) held out of every destination to measure uplift.",
    )
    negative: bool = Field(
        default=False,
        description="Members get no persona and are suppressed on this persona's channels.",
    )

    @model_validator(mode="after")
    def _negative_has_no_holdout(self) -> PersonaConfig:
        if self.negative and self.holdout_percent:
            raise ValueError("a negative persona cannot have a holdout (holdout_percent must be 0)")
        return self


class AssignmentConfig(StrictModel):
    mode: Literal["first_match", "all_matches"] = Field(
        default="first_match",
        description=(
            "'first_match': the first persona in file order wins; "
            "'all_matches': every matching persona is a tag."
        ),
    )
    holdout_salt: str = Field(
        default="personasync",
        min_length=1,
        description="Mixed into the holdout hash; changing it reshuffles every holdout group.",
    )


@dataclass(frozen=True)
class ResolverSettings:
    """Everything the resolver reads from the config, in one value."""

    source: SourceConfig
    consent: ConsentConfig
    suppressions: tuple[SuppressionConfig, ...]
    personas: tuple[PersonaConfig, ...]
    assignment: AssignmentConfig
