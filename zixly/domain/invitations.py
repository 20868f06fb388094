"""Invitations into a tenant, which become memberships only when the invitee accepts.

An ADMIN invites an email: whatever the email is (new to Zixly, another tenant's user, a
staff account, already invited) the answer is the same pending invitation, so inviting never
tells whether an account exists elsewhere; only an email that is already a member of the
admin's own tenant is a CONFLICT (the admin can list their members anyway). The invitee gets
a link with a 256-bit random secret by mail; only its SHA-256 is stored. Accepting runs
through the SECURITY DEFINER function ``zixly_accept_invitation`` (the invitee is not yet in
the tenant, so row-level security hides the invitation from them): it checks the invited
email against the signed-in user, refuses staff accounts, expired, revoked and used
invitations, and creates the membership. Every step is audited.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, case, func, literal, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import ConflictError, ForbiddenError, NotFoundError, ZixlyError
from zixly.db.models import Invitation, Membership, User
from zixly.db.rows import AnyRow
from zixly.domain.audit import Actor, AuditEntry, write_audit
from zixly.domain.members import MemberRepository
from zixly.domain.pages import Page, split_page
from zixly.security.principal import Role

INV = cast(Table, Invitation.__table__)
M = cast(Table, Membership.__table__)
U = cast(Table, User.__table__)
TOKEN_BYTES = 32


class InvitationStatus(enum.Enum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


STATUS = case(
    (INV.c.accepted_at.is_not(None), literal(InvitationStatus.ACCEPTED.value)),
    (INV.c.revoked_at.is_not(None), literal(InvitationStatus.REVOKED.value)),
    (INV.c.expires_at <= func.now(), literal(InvitationStatus.EXPIRED.value)),
    else_=literal(InvitationStatus.PENDING.value),
).label("status")
COLUMNS = (INV.c.id, INV.c.email, INV.c.role, STATUS, INV.c.expires_at, INV.c.created_at)
OPEN = and_(INV.c.accepted_at.is_(None), INV.c.revoked_at.is_(None))


class InvitationInvalidError(ZixlyError):
    """The link's secret names no invitation that can still be accepted; ``reason`` says why
    (UNKNOWN, EXPIRED, REVOKED, USED) and nothing says which tenant it was for."""

    code = "INVITATION_INVALID"
    http_status = 400


_INVALID = {
    "UNKNOWN": "this invitation link is not valid",
    "EXPIRED": "this invitation has expired",
    "REVOKED": "this invitation was revoked",
    "USED": "this invitation was already accepted",
}
_FORBIDDEN = {
    "EMAIL_MISMATCH": "this invitation was sent to another email address: sign in with that one",
    "STAFF": "Zixly staff accounts cannot join a tenant",
}


def _refusal(outcome: str) -> ZixlyError:
    """The typed error for what ``zixly_accept_invitation`` answered instead of ACCEPTED."""
    if outcome in _INVALID:
        return InvitationInvalidError(_INVALID[outcome], reason=outcome)
    return ForbiddenError(_FORBIDDEN[outcome])


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class IssuedInvitation:
    """A new invitation and its secret, which exists only in memory until it is mailed."""

    row: AnyRow
    token: str
    tenant_name: str


class InvitationRepository:
    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    def _invitations(self) -> Any:
        return select(*COLUMNS).where(INV.c.tenant_id == self.tenant_id)

    async def page(
        self, *, first: int, after: tuple[str, str] | None, status: InvitationStatus | None
    ) -> Page[AnyRow]:
        query = self._invitations()
        if status is not None:
            query = query.where(STATUS == status.value)
        if after is not None:
            email, last_id = after
            query = query.where(tuple_(INV.c.email, INV.c.id) > (email, uuid.UUID(last_id)))
        query = query.order_by(INV.c.email, INV.c.id).limit(first + 1)
        return split_page(list((await self.session.execute(query)).all()), first)

    async def get(self, invitation_id: uuid.UUID, *, lock: bool = False) -> AnyRow | None:
        query = self._invitations().where(INV.c.id == invitation_id)
        if lock:
            query = query.with_for_update(of=INV)
        return (await self.session.execute(query)).first()

    async def is_member(self, email: str) -> bool:
        query = (
            select(literal(1))
            .select_from(M.join(U, U.c.id == M.c.user_id))
            .where(M.c.tenant_id == self.tenant_id, func.lower(U.c.email) == email)
        )
        return (await self.session.execute(query)).first() is not None

    async def lock_email(self, email: str) -> None:
        """Serialise invitations of one email into this tenant until the transaction ends
        (two at once would both find no open invitation, and one insert would fail)."""
        key = f"zixly.invitation:{self.tenant_id}:{email}"
        await self.session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0)))
        )

    async def close_open(self, email: str, by: uuid.UUID | None) -> list[uuid.UUID]:
        """Revoke the email's open invitation (a new one supersedes it); the ids revoked."""
        statement = (
            update(INV)
            .where(INV.c.tenant_id == self.tenant_id, INV.c.email == email, OPEN)
            .values(revoked_at=func.now(), revoked_by=by)
            .returning(INV.c.id)
        )
        return list((await self.session.execute(statement)).scalars())

    async def create(
        self, email: str, role: Role, digest: bytes, by: uuid.UUID | None, ttl: timedelta
    ) -> uuid.UUID:
        statement = (
            INV.insert()
            .values(
                tenant_id=self.tenant_id,
                email=email,
                role=role.value,
                token_hash=digest,
                invited_by=by,
                expires_at=func.now() + ttl,
            )
            .returning(INV.c.id)
        )
        return uuid.UUID(str((await self.session.execute(statement)).scalar_one()))

    async def revoke(self, invitation_id: uuid.UUID, by: uuid.UUID | None) -> None:
        await self.session.execute(
            update(INV)
            .where(INV.c.tenant_id == self.tenant_id, INV.c.id == invitation_id)
            .values(revoked_at=func.now(), revoked_by=by)
        )


class InvitationAdmin:
    """Inviting and revoking in the actor's tenant (ADMIN), each audited."""

    def __init__(self, session: AsyncSession, actor: Actor, ttl: timedelta) -> None:
        assert actor.tenant_id is not None, "invitations need a tenant"
        self.session = session
        self.actor = actor
        self.ttl = ttl
        self.invitations = InvitationRepository(session, actor.tenant_id)

    async def invite(self, email: str, role: Role) -> IssuedInvitation:
        """``email`` is already normalised (lower case). The same answer for every email
        that is not a member here: a fresh pending invitation, superseding an open one."""
        await self.invitations.lock_email(email)
        if await self.invitations.is_member(email):
            raise ConflictError("this email is already a member of the tenant", field="email")
        members = MemberRepository(self.session, self.actor.tenant_id)
        # The invitee needs a user row to sign in and accept; it grants nothing by itself.
        await members.ensure_user(email)
        for superseded in await self.invitations.close_open(email, self.actor.user_id):
            await self._audit("invitation.revoked", superseded, {"reason": "superseded"})
        token = secrets.token_urlsafe(TOKEN_BYTES)
        invitation_id = await self.invitations.create(
            email, role, token_digest(token), self.actor.user_id, self.ttl
        )
        await self._audit("invitation.created", invitation_id, {"email": email, "role": role.value})
        row = await self.invitations.get(invitation_id)
        tenant = await members.tenant()
        assert row is not None and tenant is not None
        return IssuedInvitation(row=row, token=token, tenant_name=tenant.name)

    async def revoke(self, invitation_id: uuid.UUID) -> AnyRow:
        row = await self.invitations.get(invitation_id, lock=True)
        if row is None:
            raise NotFoundError("no invitation with this id in your tenant", field="id")
        if row.status != InvitationStatus.PENDING.value:
            raise ConflictError(f"this invitation is {row.status}, not PENDING", field="id")
        await self.invitations.revoke(invitation_id, self.actor.user_id)
        await self._audit("invitation.revoked", invitation_id, {"email": row.email})
        revoked = await self.invitations.get(invitation_id)
        assert revoked is not None
        return revoked

    async def _audit(self, action: str, invitation_id: uuid.UUID, details: dict[str, Any]) -> None:
        entry = AuditEntry(
            action=action, target_type="invitation", target_id=str(invitation_id), details=details
        )
        await write_audit(self.session, self.actor, entry)


_ACCEPT = text(
    "SELECT outcome, tenant_id, tenant_slug, role "
    "FROM zixly_accept_invitation(:digest, :user_id, :request_id)"
)


async def accept(
    session: AsyncSession, user_id: uuid.UUID, token: str, request_id: str | None
) -> AnyRow:
    """The signed-in user accepts the invitation whose link carried ``token``; the row has
    the tenant joined (``tenant_id``, ``tenant_slug``) and the ``role`` held there."""
    params = {"digest": token_digest(token), "user_id": user_id, "request_id": request_id or ""}
    row = (await session.execute(_ACCEPT, params)).one()
    if row.outcome != "ACCEPTED":
        raise _refusal(row.outcome)
    return row
