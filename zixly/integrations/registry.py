"""The OAuth providers Zixly connects to: endpoints, scopes, token lifetimes, rotation.

Sourced (docs/au-rules-and-provider-apis.md): Xero's token endpoint, 30-minute access tokens
and single-use (rotating) refresh tokens; Asana's 1-hour access tokens. The other values
follow each provider's public OAuth documentation and should be re-checked there before
relying on them: HubSpot (30 min, refresh token reusable), Asana (refresh token reusable),
Shopify expiring offline tokens (1 h, rotating), MYOB (20 min, rotating).

``provider_base_urls`` in the settings replaces a provider's host (the sandbox in tests);
the paths stay the provider's own, so the sandbox serves the same paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from zixly.errors import ValidationError
from zixly.settings import Settings

ClientAuth = Literal["basic", "body"]


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str  # may contain ``{shop}`` (Shopify: one host per shop)
    authorize_path: str
    exchange_path: str  # the token endpoint (code exchange and refresh)
    scopes: tuple[str, ...]
    access_token_lifetime: timedelta
    rotates_refresh_tokens: bool  # the old refresh token stops working once used
    client_auth: ClientAuth  # HTTP Basic, or client_id/client_secret in the form body
    authorize_base_url: str | None = None  # when the authorize page lives on another host

    def base(self, settings: Settings, **params: str) -> str:
        base = settings.provider_base_urls.get(self.name, self.base_url)
        return base.rstrip("/").format(**params)

    def token_url(self, settings: Settings, **params: str) -> str:
        return self.base(settings, **params) + self.exchange_path

    def authorize_url(self, settings: Settings, **params: str) -> str:
        override = settings.provider_base_urls.get(self.name)
        base = override or self.authorize_base_url or self.base_url
        return base.rstrip("/").format(**params) + self.authorize_path


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider(
            name="xero",
            base_url="https://identity.xero.com",
            authorize_base_url="https://login.xero.com",
            authorize_path="/identity/connect/authorize",
            exchange_path="/connect/token",
            scopes=("offline_access", "accounting.reports.read", "accounting.transactions.read"),
            access_token_lifetime=timedelta(minutes=30),
            rotates_refresh_tokens=True,
            client_auth="basic",
        ),
        Provider(
            name="hubspot",
            base_url="https://api.hubapi.com",
            authorize_base_url="https://app.hubspot.com",
            authorize_path="/oauth/authorize",
            exchange_path="/oauth/v1/token",
            scopes=("oauth", "crm.objects.deals.read"),
            access_token_lifetime=timedelta(minutes=30),
            rotates_refresh_tokens=False,
            client_auth="body",
        ),
        Provider(
            name="asana",
            base_url="https://app.asana.com",
            authorize_path="/-/oauth_authorize",
            exchange_path="/-/oauth_token",
            scopes=("default",),
            access_token_lifetime=timedelta(hours=1),
            rotates_refresh_tokens=False,
            client_auth="body",
        ),
        Provider(
            name="shopify",
            base_url="https://{shop}.myshopify.com",
            authorize_path="/admin/oauth/authorize",
            exchange_path="/admin/oauth/access_token",
            scopes=("read_orders",),
            access_token_lifetime=timedelta(hours=1),
            rotates_refresh_tokens=True,
            client_auth="body",
        ),
        Provider(
            name="myob",
            base_url="https://secure.myob.com",
            authorize_path="/oauth2/account/authorize",
            exchange_path="/oauth2/v1/authorize",
            scopes=("CompanyFile",),
            access_token_lifetime=timedelta(minutes=20),
            rotates_refresh_tokens=True,
            client_auth="body",
        ),
    )
}


def provider(name: str) -> Provider:
    found = PROVIDERS.get(name)
    if found is None:
        raise ValidationError(f"unknown provider {name!r}", field="provider")
    return found
