"""Connecting and disconnecting providers (ADMIN); the logic is zixly.integrations.connect."""

from __future__ import annotations

import datetime as dt
import enum

import strawberry

from zixly.domain.audit import Actor
from zixly.graphql.api.integrations import IntegrationStatus
from zixly.graphql.context import Info
from zixly.security.principal import Role


@strawberry.type(description="Where to send the user's browser to connect a provider.")
class IntegrationConnectStart:
    provider: str
    authorize_url: str = strawberry.field(
        description="The provider's consent page; it returns to /oauth/<provider>/callback."
    )
    state: str = strawberry.field(description="The connect's single-use state.")
    expires_at: dt.datetime = strawberry.field(
        description="After this the connect can no longer be completed."
    )


@strawberry.enum(description="What happened to the grant at the provider on disconnect.")
class RemoteRevocation(enum.Enum):
    REVOKED = "REVOKED"
    UNSUPPORTED = "UNSUPPORTED"
    NOTHING_TO_REVOKE = "NOTHING_TO_REVOKE"
    FAILED = "FAILED"


@strawberry.type(description="A disconnected integration: its tokens are gone from Zixly.")
class IntegrationDisconnect:
    provider: str
    status: IntegrationStatus
    remote_revocation: RemoteRevocation = strawberry.field(
        description="FAILED: the provider could not revoke; revoke Zixly's access there."
    )
    credentials_updated: int | None = strawberry.field(
        description="n8n credentials set to not-connected (null: n8n could not be updated)."
    )


@strawberry.type
class IntegrationConnectMutation:
    @strawberry.mutation(
        description="Start connecting a provider (ADMIN): send the browser to authorizeUrl. "
        "shop: the Shopify store's name (its <shop>.myshopify.com)."
    )
    async def start_integration_connect(
        self, info: Info, provider: str, shop: str | None = None
    ) -> IntegrationConnectStart:
        ctx = info.context
        tenant_id = ctx.tenant(Role.ADMIN)
        started = await ctx.services.connector.start(
            tenant_id, ctx.principal.user_id, provider, shop
        )
        return IntegrationConnectStart(
            provider=started.provider,
            authorize_url=started.authorize_url,
            state=started.state,
            expires_at=started.expires_at,
        )

    @strawberry.mutation(
        description="Disconnect a provider (ADMIN): revoke the grant where the provider "
        "allows it, forget the tokens, set the tenant's n8n credential to not-connected."
    )
    async def disconnect_integration(self, info: Info, provider: str) -> IntegrationDisconnect:
        ctx = info.context
        ctx.tenant(Role.ADMIN)
        actor = Actor.of(ctx.principal, ctx.request_id)
        done = await ctx.services.connector.disconnect(actor, provider)
        return IntegrationDisconnect(
            provider=done.provider,
            status=IntegrationStatus(done.status),
            remote_revocation=RemoteRevocation(done.remote_revocation.value),
            credentials_updated=done.credentials_updated,
        )
