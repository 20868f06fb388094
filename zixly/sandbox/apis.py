"""The sandbox's data APIs, one module per provider, mounted beside its token endpoints.

``ProviderSandbox.app()`` (zixly/sandbox/oauth.py) mounts each provider at ``/<provider>``
with both its OAuth endpoints and what :func:`data_routes` returns here, so one
``provider_base_urls`` entry points Zixly and the workflow templates at the whole provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from zixly.sandbox.asana import AsanaApi
from zixly.sandbox.common import ProviderApi
from zixly.sandbox.hubspot import HubSpotApi
from zixly.sandbox.shopify import ShopifyApi
from zixly.sandbox.xero import XeroApi

if TYPE_CHECKING:
    from zixly.sandbox.oauth import ProviderSandbox

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
