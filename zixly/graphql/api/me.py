"""``me``: who the caller is, in which tenant, with which role."""

from __future__ import annotations

import enum

import strawberry

from zixly.domain.members import MemberRepository
from zixly.graphql.context import Info


@strawberry.enum
class RoleEnum(enum.Enum):
    ADMIN = "ADMIN"
    EDITOR = "EDITOR"
    VIEWER = "VIEWER"


@strawberry.type
class Tenant:
    id: strawberry.ID
    slug: str
    name: str
    industry: str | None
    plan: str


@strawberry.type
class Me:
    id: strawberry.ID
    email: str
    display_name: str | None
    is_staff: bool
    role: RoleEnum | None
    tenant: Tenant | None


@strawberry.type
class MeQuery:
    @strawberry.field(description="The authenticated user, their tenant and role.")
    async def me(self, info: Info) -> Me:
        ctx = info.context
        principal = ctx.principal
        tenant = None
        async with ctx.session() as session:
            members = MemberRepository(session, principal.tenant_id)
            # Under row-level security: a user may always read their own row.
            display_name = await members.display_name(principal.user_id)
            row = await members.tenant()
            if row is not None:
                tenant = Tenant(
                    id=strawberry.ID(str(row.id)),
                    slug=row.slug,
                    name=row.name,
                    industry=row.industry,
                    plan=row.plan,
                )
        return Me(
            id=strawberry.ID(str(principal.user_id)),
            email=principal.email,
            display_name=display_name,
            is_staff=principal.is_staff,
            role=RoleEnum(principal.role.value) if principal.role else None,
            tenant=tenant,
        )
