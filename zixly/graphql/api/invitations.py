"""Invitations: an ADMIN invites an email, the invitee accepts with the mailed link's token.

Inviting answers with the pending invitation whatever the email is (see
zixly.domain.invitations); the mail goes out after the invitation's transaction commits.
"""

from __future__ import annotations

import datetime as dt
import enum
from datetime import timedelta
from typing import Any

import strawberry

from zixly.domain import invitations as domain
from zixly.domain.audit import Actor
from zixly.domain.ids import parse_id
from zixly.domain.invitation_mail import send_invitation
from zixly.graphql.api.me import RoleEnum
from zixly.graphql.api.members import checked_email
from zixly.graphql.context import Context, Info
from zixly.graphql.inputs import checked_text
from zixly.graphql.relay import Connection, build_connection, decode_after, page_size
from zixly.security.principal import Role


@strawberry.enum(description="PENDING until accepted or revoked; EXPIRED once its link ran out.")
class InvitationStatus(enum.Enum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


MAX_TOKEN_LENGTH = 128


@strawberry.type(description="An invitation into the tenant, pending the invitee's consent.")
class Invitation:
    id: strawberry.ID
    email: str
    role: RoleEnum
    status: InvitationStatus
    expires_at: dt.datetime
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: Any) -> Invitation:
        return cls(
            id=strawberry.ID(str(row.id)),
            email=row.email,
            role=RoleEnum(row.role),
            status=InvitationStatus(row.status),
            expires_at=row.expires_at,
            created_at=row.created_at,
        )


@strawberry.type(description="The tenant an accepted invitation made you a member of.")
class AcceptedInvitation:
    tenant_id: strawberry.ID
    tenant_slug: str
    role: RoleEnum


def _admin(ctx: Context, session: Any) -> domain.InvitationAdmin:
    ttl = timedelta(seconds=ctx.settings.invitation_ttl_seconds)
    return domain.InvitationAdmin(session, Actor.of(ctx.principal, ctx.request_id), ttl)


@strawberry.type
class InvitationQuery:
    @strawberry.field(
        description="The tenant's invitations by email, PENDING ones unless told (ADMIN)."
    )
    async def invitations(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: InvitationStatus | None = InvitationStatus.PENDING,
    ) -> Connection[Invitation]:
        ctx = info.context
        tenant_id = ctx.tenant(Role.ADMIN)
        limit = page_size(ctx, first)
        cursor = decode_after(ctx, "invitations", after, 2)
        async with ctx.session() as session:
            page = await domain.InvitationRepository(session, tenant_id).page(
                first=limit,
                after=(cursor[0], cursor[1]) if cursor else None,
                status=domain.InvitationStatus(status.value) if status else None,
            )
        return build_connection(
            ctx, "invitations", page, Invitation.from_row, lambda r: [r.email, str(r.id)]
        )


@strawberry.type
class InvitationMutation:
    @strawberry.mutation(
        description="Invite an email into the tenant with a role (ADMIN): a pending invitation "
        "whose link is mailed; the invitee becomes a member only by accepting it. The answer "
        "is the same whether or not the email has a Zixly account."
    )
    async def invite_user(self, info: Info, email: str, role: RoleEnum) -> Invitation:
        ctx = info.context
        ctx.tenant(Role.ADMIN)
        address = checked_email(email)
        # A transaction of its own: the mail goes out only once the invitation is committed.
        async with ctx.services.db.transaction(ctx.principal.scope) as session:
            issued = await _admin(ctx, session).invite(address, Role(role.value))
        await send_invitation(ctx.settings, issued)
        return Invitation.from_row(issued.row)

    @strawberry.mutation(description="Revoke a pending invitation: its link stops working (ADMIN).")
    async def revoke_invitation(self, info: Info, id: strawberry.ID) -> Invitation:
        ctx = info.context
        ctx.tenant(Role.ADMIN)
        target = parse_id(id, "id")
        async with ctx.session() as session:
            row = await _admin(ctx, session).revoke(target)
        return Invitation.from_row(row)

    @strawberry.mutation(
        description="Accept an invitation with the token from its link, signed in with the "
        "invited email: you become a member of its tenant with its role. Staff accounts "
        "cannot. With several memberships, name a tenant (claim or X-Zixly-Tenant) from then on."
    )
    async def accept_invitation(self, info: Info, token: str) -> AcceptedInvitation:
        ctx = info.context
        secret = checked_text(token, "token", max_length=MAX_TOKEN_LENGTH)
        async with ctx.session() as session:
            row = await domain.accept(session, ctx.principal.user_id, secret, ctx.request_id)
        return AcceptedInvitation(
            tenant_id=strawberry.ID(str(row.tenant_id)),
            tenant_slug=row.tenant_slug,
            role=RoleEnum(row.role),
        )
