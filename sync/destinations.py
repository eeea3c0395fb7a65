"""From a ``[[destinations]]`` entry to its connector: the one place that knows every
destination type and the settings each connector takes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from connectors.destinations import attentive, hubspot, klaviyo, mailchimp, salesforce
from connectors.destinations.file import FileDestination
from personas.config import PersonaConfig
from sync.config import (
    AttentiveDestinationConfig,
    DestinationConfig,
    HubSpotDestinationConfig,
    KlaviyoDestinationConfig,
    MailchimpDestinationConfig,
    SalesforceDestinationConfig,
)
from sync.ports import Destination


def destination_tags(config: DestinationConfig, personas: Sequence[PersonaConfig]) -> dict[str, str]:
    """Tag -> persona name, for every tag this destination may carry: the positive
    personas allowed on its channel."""
    naming = config.naming()
    return {naming.tag(p.name): p.name for p in personas if not p.negative and config.channel in p.channels}


def destination_for(
    config: DestinationConfig, personas: Sequence[PersonaConfig] = (), rate_share: float = 1.0
) -> Destination:
    """The connector for one configured destination; ``personas`` name the tags that
    destinations with a fixed set of values (a property's options, a picklist) must accept.
    ``rate_share`` is the part of the vendor's rate limit this process may use: 1/N for each
    of N shards running side by side."""
    if isinstance(config, MailchimpDestinationConfig):
        return mailchimp.build(
            config.name,
            config.api_key.get_secret_value(),
            config.list_id,
            base_url=config.base_url,
            requests_per_second=config.requests_per_second * rate_share,
            timeout=(10.0, config.timeout_seconds),
        )
    if isinstance(config, KlaviyoDestinationConfig):
        naming = config.naming()
        settings = klaviyo.KlaviyoSettings(
            channel=config.channel,
            tag_property=config.tag_property,
            lists={naming.tag(persona): list_id for persona, list_id in config.lists.items()},
            job_timeout=config.job_timeout_seconds,
        )
        return klaviyo.build(
            config.name,
            config.api_key.get_secret_value(),
            settings,
            base_url=config.base_url,
            revision=config.revision,
            rate_share=config.rate_limit_share * rate_share,
            timeout=(10.0, config.timeout_seconds),
        )
    if isinstance(config, AttentiveDestinationConfig):
        return attentive.build(
            config.name,
            config.api_key.get_secret_value(),
            attentive.AttentiveSettings(
                config.attribute_mode, config.true_value, config.false_value, config.primary_attribute
            ),
            base_url=config.base_url,
            timeout=(10.0, config.timeout_seconds),
            rate_share=rate_share,
        )
    if isinstance(config, HubSpotDestinationConfig):
        return _hubspot(config, personas, rate_share)
    if isinstance(config, SalesforceDestinationConfig):
        return _salesforce(config, personas)
    return FileDestination(config.name, config.channel, Path(config.path))


def _hubspot(
    config: HubSpotDestinationConfig, personas: Sequence[PersonaConfig], rate_share: float
) -> hubspot.HubSpotDestination:
    naming = config.naming()
    tags = destination_tags(config, personas)
    settings = hubspot.HubSpotSettings(
        tags=tuple(tags),
        tag_property=config.tag_property,
        tag_labels=tags,
        primary_values={naming.tag(persona): value for persona, value in config.hs_persona.items()},
        lists={naming.tag(persona): list_id for persona, list_id in config.lists.items()},
        subscription_id=config.subscription_id,
        legal_basis=config.legal_basis,
        legal_basis_explanation=config.legal_basis_explanation,
    )
    return hubspot.build(
        config.name,
        config.access_token.get_secret_value(),
        settings,
        base_url=config.base_url,
        requests_per_ten_seconds=config.requests_per_ten_seconds,
        rate_share=rate_share,
        timeout=(10.0, config.timeout_seconds),
    )


def _salesforce(
    config: SalesforceDestinationConfig, personas: Sequence[PersonaConfig]
) -> salesforce.SalesforceDestination:
    secret = config.client_secret.get_secret_value() if config.client_secret else None
    oauth = salesforce.OAuthSettings(
        client_id=config.client_id.get_secret_value(),
        refresh_token=config.refresh_token.get_secret_value(),
        client_secret=secret,
        token_url=config.login_url.rstrip("/") + "/services/oauth2/token",
        refresh_token_file=Path(config.refresh_token_file) if config.refresh_token_file else None,
    )
    settings = salesforce.SalesforceSettings(
        tags=tuple(destination_tags(config, personas)),
        sobject=config.object,
        external_id_field=config.external_id_field,
        tag_field=config.tag_field,
        api_version=config.api_version,
    )
    return salesforce.build(config.name, oauth, settings, timeout=(10.0, config.timeout_seconds))
