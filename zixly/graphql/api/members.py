"""The tenant's members and their roles (ADMIN). Every change is audited.

Members join by accepting an invitation (zixly.graphql.api.invitations)."""

from __future__ import annotations

from functools import partial
from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import ValidationError
from zixly.domain.audit import Actor
from zixly.domain.ids import parse_id
from zixly.domain.members import EMAIL_PATTERN, MemberAdmin, MemberRepository
from zixly.graphql.api.me import RoleEnum
from zixly.graphql.context import Context, Info
from zixly.graphql.inputs import checked_text
from zixly.graphql.relay import Connection, build_connection, decode_after, page_size
from zixly.security.principal import Role
from zixly.security.principal_events import publish_change


@strawberry.type(description="A user's membership in the tenant.")
class Member:
    id: strawberry.ID = strawberry.field(description="The user's id.")
    email: str
    display_name: str | None
    role: RoleEnum

    @classmethod
    def from_row(cls, row: Any) -> Member:
        return cls(
            id=strawberry.ID(str(row.id)),
            email=row.email,
            display_name=row.display_name,
            role=RoleEnum(row.role),
        )


def _admin(ctx: Context, session: AsyncSession) -> MemberAdmin:
    return MemberAdmin(session, Actor.of(ctx.principal, ctx.request_id))


def _announce(ctx: Context, admin: MemberAdmin) -> None:
    """Once the request commits, tell every replica whose sockets the changes affect."""
    for change in admin.changes:
        ctx.uow.after_commit(partial(publish_change, ctx.services.redis_commands, change))


def checked_email(email: str) -> str:
    address = checked_text(email, "email", max_length=254).lower()
    if not EMAIL_PATTERN.match(address):
        raise ValidationError("email is not an email address", field="email")
    return address


@strawberry.type
class MemberQuery:
    @strawberry.field(description="The tenant's members, by email (ADMIN).")
    async def members(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Member]:
        ctx = info.context
        tenant_id = ctx.tenant(Role.ADMIN)
        limit = page_size(ctx, first)
        cursor = decode_after(ctx, "members", after, 2)
        async with ctx.session() as session:
            page = await MemberRepository(session, tenant_id).page(
                first=limit, after=(cursor[0], cursor[1]) if cursor else None
            )
        return build_connection(
            ctx, "members", page, Member.from_row, lambda r: [r.email, str(r.id)]
        )


@strawberry.type
class MemberMutation:
    @strawberry.mutation(
        description="Change a member's role (ADMIN); effective from their next request."
    )
    async def set_user_role(self, info: Info, user_id: strawberry.ID, role: RoleEnum) -> Member:
        ctx = info.context
        ctx.tenant(Role.ADMIN)
        target = parse_id(user_id, "userId")
        async with ctx.session() as session:
            admin = _admin(ctx, session)
            row = await admin.set_role(target, Role(role.value))
        _announce(ctx, admin)
        return Member.from_row(row)

    @strawberry.mutation(description="Remove a member from the tenant (ADMIN); returns them.")
    async def remove_user(self, info: Info, user_id: strawberry.ID) -> Member:
        ctx = info.context
        ctx.tenant(Role.ADMIN)
        target = parse_id(user_id, "userId")
        async with ctx.session() as session:
            admin = _admin(ctx, session)
            row = await admin.remove(target)
        _announce(ctx, admin)
        return Member.from_row(row)
