"""The OAuth providers Zixly connects to: endpoints, scopes, token lifetimes, rotation.

Sourced (docs/au-rules-and-provider-apis.md): Xero's token endpoint, 30-minute access tokens
and single-use (rotating) refresh tokens; Asana's 1-hour access tokens. HubSpot: 30-minute
access tokens, refresh tokens unaffected (HubSpot developer changelog, "Expiration of OAuth
access tokens is changing"; its v1 OAuth endpoints used here are announced for deprecation on
16 February 2027 in favour of v3, which takes the same values in the request body). The
other values follow each provider's public OAuth documentation and should be re-checked
there before relying on them: Asana (refresh token reusable), Shopify expiring offline
tokens (1 h, rotating), MYOB (20 min, rotating). Every refresh honours the ``expires_in`` the
provider returns; these lifetimes are only the fallback when it sends none.

``provider_base_urls`` in the settings replaces a provider's host (the sandbox in tests);
the paths stay the provider's own, so the sandbox serves the same paths.

Revocation (disconnect), from each provider's OAuth documentation: Xero
``POST identity.xero.com/connect/revocation`` (RFC 7009, Basic auth), HubSpot
``DELETE /oauth/v1/refresh-tokens/<token>``, Asana ``POST /-/oauth_revoke`` (form with the
client credentials). MYOB documents no revocation endpoint (the user removes access in
my.MYOB); Shopify's only one is uninstalling the app (``DELETE
/admin/api_permissions/current.json``), which is the merchant's decision, not a disconnect's:
for both, disconnecting forgets the tokens here only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from urllib.parse import quote

from zixly.core.errors import ValidationError
from zixly.core.settings import Settings

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
    # Revoking a grant at disconnect (zixly.integrations.connect): the path on ``base_url``
    # (None: the provider has no revocation endpoint) and how the refresh token is sent:
    # POST form ``token=<refresh token>`` with the client auth above (RFC 7009: Xero, Asana),
    # or DELETE with the token in the path (HubSpot: ``/oauth/v1/refresh-tokens/{token}``).
    revocation_path: str | None = None
    revocation_method: Literal["POST", "DELETE"] = "POST"
    scope_separator: str = " "  # how the authorize URL joins scopes (Shopify: commas)
    # The data API's host (templates call it through ``provider:<name>``); may contain
    # ``{shop}``. ``provider_base_urls`` replaces it too: the sandbox serves a provider's
    # token endpoint and its data API under one base.
    api_base_url: str = ""

    def base(self, settings: Settings, **params: str) -> str:
        base = settings.provider_base_urls.get(self.name, self.base_url)
        return base.rstrip("/").format(**params)

    def token_url(self, settings: Settings, **params: str) -> str:
        return self.base(settings, **params) + self.exchange_path

    def authorize_url(self, settings: Settings, **params: str) -> str:
        override = settings.provider_base_urls.get(self.name)
        base = override or self.authorize_base_url or self.base_url
        return base.rstrip("/").format(**params) + self.authorize_path

    def api_url(self, settings: Settings, **params: str) -> str:
        """The data API's base URL (no trailing slash), e.g. ``https://api.xero.com``."""
        return self.api_base(settings.provider_base_urls, **params)

    def api_base(self, overrides: Mapping[str, str], **params: str) -> str:
        """:meth:`api_url` from the overrides alone (``provider_base_urls``); a missing URL
        parameter (``{shop}``) raises KeyError."""
        base = overrides.get(self.name) or self.api_base_url
        return base.rstrip("/").format(**params)

    def revocation_url(self, settings: Settings, token: str = "", **params: str) -> str | None:
        """Where a grant is revoked (None: nowhere). A DELETE path carries the token,
        percent-encoded."""
        if self.revocation_path is None:
            return None
        path = self.revocation_path
        if "{token}" in path:
            path = path.replace("{token}", quote(token, safe=""))
        return self.base(settings, **params) + path


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider(
            name="xero",
            api_base_url="https://api.xero.com",
            base_url="https://identity.xero.com",
            authorize_base_url="https://login.xero.com",
            authorize_path="/identity/connect/authorize",
            exchange_path="/connect/token",
            scopes=("offline_access", "accounting.reports.read", "accounting.transactions.read"),
            access_token_lifetime=timedelta(minutes=30),
            rotates_refresh_tokens=True,
            client_auth="basic",
            revocation_path="/connect/revocation",
        ),
        Provider(
            name="hubspot",
            api_base_url="https://api.hubapi.com",
            base_url="https://api.hubapi.com",
            authorize_base_url="https://app.hubspot.com",
            authorize_path="/oauth/authorize",
            exchange_path="/oauth/v1/token",
            scopes=("oauth", "crm.objects.deals.read"),
            access_token_lifetime=timedelta(minutes=30),
            rotates_refresh_tokens=False,
            client_auth="body",
            revocation_path="/oauth/v1/refresh-tokens/{token}",
            revocation_method="DELETE",
        ),
        Provider(
            name="asana",
            api_base_url="https://app.asana.com",
            base_url="https://app.asana.com",
            authorize_path="/-/oauth_authorize",
            exchange_path="/-/oauth_token",
            scopes=("default",),
            access_token_lifetime=timedelta(hours=1),
            rotates_refresh_tokens=False,
            client_auth="body",
            revocation_path="/-/oauth_revoke",
        ),
        Provider(
            name="shopify",
            api_base_url="https://{shop}.myshopify.com",
            base_url="https://{shop}.myshopify.com",
            authorize_path="/admin/oauth/authorize",
            exchange_path="/admin/oauth/access_token",
            scopes=("read_orders",),
            access_token_lifetime=timedelta(hours=1),
            rotates_refresh_tokens=True,
            client_auth="body",
            scope_separator=",",
        ),
        Provider(
            name="myob",
            api_base_url="https://api.myob.com",
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
