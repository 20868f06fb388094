"""Writing clients (EDITOR)."""

from __future__ import annotations

import strawberry

from zixly.domain.clients import ClientRepository
from zixly.graphql.api.clients import Client
from zixly.graphql.context import Info
from zixly.graphql.inputs import checked_text
from zixly.security.principal import Role


@strawberry.input
class UpsertClientInput:
    client_id: str = strawberry.field(description="The client's id in the source system.")
    name: str
    industry: str | None = None


@strawberry.type
class ClientMutation:
    @strawberry.mutation(
        description="Create a client, or update the one with this clientId (EDITOR or higher)."
    )
    async def upsert_client(self, info: Info, input: UpsertClientInput) -> Client:
        ctx = info.context
        tenant_id = ctx.tenant(Role.EDITOR)
        client_id = checked_text(input.client_id, "clientId", max_length=100)
        name = checked_text(input.name, "name", max_length=200)
        industry = (
            None
            if input.industry is None
            else checked_text(input.industry, "industry", max_length=100)
        )
        async with ctx.session() as session:
            row = await ClientRepository(session, tenant_id).upsert(
                client_id=client_id, client_name=name, industry=industry
            )
        return Client.from_row(row)
