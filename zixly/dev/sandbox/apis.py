"""The sandbox's data APIs, one module per provider, mounted beside its token endpoints.

``ProviderSandbox.app()`` (zixly/dev/sandbox/oauth.py) mounts each provider at ``/<provider>``
with both its OAuth endpoints and what :func:`data_routes` returns here, so one
``provider_base_urls`` entry points Zixly and the workflow templates at the whole provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from zixly.dev.sandbox.asana import AsanaApi
from zixly.dev.sandbox.common import ProviderApi
from zixly.dev.sandbox.hubspot import HubSpotApi
from zixly.dev.sandbox.shopify import ShopifyApi
from zixly.dev.sandbox.xero import XeroApi

if TYPE_CHECKING:
    from zixly.dev.sandbox.oauth import ProviderSandbox

APIS: dict[str, type[ProviderApi]] = {
    "xero": XeroApi,
    "hubspot": HubSpotApi,
    "asana": AsanaApi,
    "shopify": ShopifyApi,
}


def data_routes(sandbox: ProviderSandbox, provider: str) -> list[BaseRoute]:
    """The routes of ``provider``'s data API (none for a provider without one: MYOB)."""
    api = APIS.get(provider)
    return api(sandbox).routes() if api is not None else []
