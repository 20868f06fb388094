"""Tenants across Zixly (staff only), through the explicit staff policy."""

from __future__ import annotations

from typing import Any

import strawberry

from zixly.core.errors import ValidationError
from zixly.domain.audit import Actor
from zixly.domain.tenants import SLUG_PATTERN, TenantRepository, create_tenant
from zixly.graphql.api.me import Tenant
from zixly.graphql.context import Info
from zixly.graphql.inputs import checked_text
from zixly.graphql.relay import Connection, build_connection, decode_after, page_size


def tenant_from_row(row: Any) -> Tenant:
    return Tenant(
        id=strawberry.ID(str(row.id)),
        slug=row.slug,
        name=row.name,
        industry=row.industry,
        plan=row.plan,
    )


@strawberry.type
class TenantQuery:
    @strawberry.field(description="Every tenant, by slug (Zixly staff).")
    async def tenants(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Tenant]:
        ctx = info.context
        ctx.principal.require_staff()
        limit = page_size(ctx, first)
        cursor = decode_after(ctx, "tenants", after, 2)
        async with ctx.staff_session() as session:
            page = await TenantRepository(session).page(
                first=limit, after=(cursor[0], cursor[1]) if cursor else None
            )
        return build_connection(
            ctx, "tenants", page, tenant_from_row, lambda r: [r.slug, str(r.id)]
        )


@strawberry.type
class TenantMutation:
    @strawberry.mutation(description="Create a tenant (Zixly staff).")
    async def create_tenant(
        self, info: Info, slug: str, name: str, industry: str | None = None
    ) -> Tenant:
        ctx = info.context
        ctx.principal.require_staff()
        if not SLUG_PATTERN.fullmatch(slug):
            raise ValidationError(
                "slug must be 2 to 63 lowercase letters, digits or '-', not starting with '-'",
                field="slug",
            )
        name = checked_text(name, "name", max_length=200)
        industry = None if industry is None else checked_text(industry, "industry", max_length=100)
        async with ctx.staff_session() as session:
            row = await create_tenant(
                session,
                Actor.of(ctx.principal, ctx.request_id),
                slug=slug,
                name=name,
                industry=industry,
            )
        return tenant_from_row(row)
