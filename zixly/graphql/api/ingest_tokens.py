"""Ingest tokens: a tenant ADMIN lists and revokes them; staff rotate an instance's token.

No field ever carries a token's plaintext: tokens are shown by name and display prefix.
A rotated token goes straight into the tenant's n8n credential (zixly/ingest/
instance_tokens.py), which is the only place it is needed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import strawberry

from zixly.domain.audit import Actor
from zixly.domain.ids import parse_id
from zixly.graphql.context import Info
from zixly.ingest.tokens import IngestTokenAdmin, IngestTokenRepository
from zixly.provisioning.credentials import CredentialDeps, token_rotation
from zixly.security.principal import Role

MAX_LISTED = 100


@strawberry.type(description="A token a tenant's n8n workflows present to the ingest endpoint.")
class IngestToken:
    id: strawberry.ID
    name: str
    prefix: str = strawberry.field(
        description="The token's first characters (zik_ and 8 more), to tell tokens apart."
    )
    created_at: dt.datetime
    last_used_at: dt.datetime | None = strawberry.field(
        description="When the token was last used (updated at most once a minute)."
    )
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: Any) -> IngestToken:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            prefix=row.prefix,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )


@strawberry.type
class IngestTokenQuery:
    @strawberry.field(
        description="The tenant's ingest tokens, newest first (ADMIN). Revoked ones only "
        f"with includeRevoked (at most {MAX_LISTED})."
    )
    async def ingest_tokens(self, info: Info, include_revoked: bool = False) -> list[IngestToken]:
        ctx = info.context
        tenant_id = ctx.tenant(Role.ADMIN)
        async with ctx.session() as session:
            rows = await IngestTokenRepository(session, tenant_id).listing(
                include_revoked=include_revoked, limit=MAX_LISTED
            )
        return [IngestToken.from_row(row) for row in rows]


@strawberry.type
class IngestTokenMutation:
    @strawberry.mutation(
        description="Revoke one of the tenant's ingest tokens (ADMIN); it stops working at once."
    )
    async def revoke_ingest_token(self, info: Info, id: strawberry.ID) -> IngestToken:
        ctx = info.context
        ctx.tenant(Role.ADMIN)
        token_id = parse_id(id, "id")
        async with ctx.session() as session:
            row = await IngestTokenAdmin(session, Actor.of(ctx.principal, ctx.request_id)).revoke(
                token_id
            )
        return IngestToken.from_row(row)

    @strawberry.mutation(
        description="Issue a new ingest token for a tenant's n8n instance, put it into the "
        "instance's 'Zixly ingest token' credential, then revoke the old one (Zixly staff)."
    )
    async def rotate_ingest_token(self, info: Info, tenant_id: strawberry.ID) -> IngestToken:
        ctx = info.context
        ctx.principal.require_staff()
        tenant = parse_id(tenant_id, "tenantId")
        services = ctx.services
        deps = CredentialDeps(
            services.db,
            services.keyring,
            services.http,
            services.settings.ingest_base_url,
        )
        issued = await token_rotation(deps).rotate(tenant, Actor.of(ctx.principal, ctx.request_id))
        return IngestToken.from_row(issued.row)
