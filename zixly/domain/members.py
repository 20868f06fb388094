"""Users and their memberships (roles) in a tenant, and the rules for changing them.

Users are global; memberships are tenant-scoped (RLS). A user outside the caller's tenant
is invisible to the application role, so invitations create the user row through the
SECURITY DEFINER function ``zixly_ensure_user``; a membership is created only when the
invitee accepts (zixly.domain.invitations).
"""

from __future__ import annotations

import re
import uuid
from typing import Any, cast

from sqlalchemy import Table, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import ConflictError, NotFoundError
from zixly.db.models import Membership, Tenant, User
from zixly.db.rows import AnyRow
from zixly.domain.audit import Actor, AuditEntry, write_audit
from zixly.domain.pages import Page, split_page
from zixly.security.principal import Role
from zixly.security.principal_events import ChangeKind, PrincipalChange

M = cast(Table, Membership.__table__)
U = cast(Table, User.__table__)
TN = cast(Table, Tenant.__table__)
# The same rule as the users_email_format CHECK constraint.
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+$")
MEMBER_COLUMNS = (M.c.user_id.label("id"), U.c.email, U.c.display_name, M.c.role)


class MemberRepository:
    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID | None) -> None:
        self.session = session
        self.tenant_id = tenant_id

    async def tenant(self) -> AnyRow | None:
        if self.tenant_id is None:
            return None
        query = select(TN.c.id, TN.c.slug, TN.c.name, TN.c.industry, TN.c.plan).where(
            TN.c.id == self.tenant_id
        )
        return (await self.session.execute(query)).first()

    async def display_name(self, user_id: uuid.UUID) -> str | None:
        """The user's display name (the application role sees its own user row)."""
        query = select(U.c.display_name).where(U.c.id == user_id)
        return cast(str | None, await self.session.scalar(query))

    def _members(self) -> Any:
        return (
            select(*MEMBER_COLUMNS)
            .select_from(M.join(U, U.c.id == M.c.user_id))
            .where(M.c.tenant_id == self.tenant_id)
        )

    async def page(self, *, first: int, after: tuple[str, str] | None) -> Page[AnyRow]:
        query = self._members()
        if after is not None:
            email, last_id = after
            query = query.where(tuple_(U.c.email, M.c.user_id) > (email, uuid.UUID(last_id)))
        query = query.order_by(U.c.email, M.c.user_id).limit(first + 1)
        return split_page(list((await self.session.execute(query)).all()), first)

    async def get(self, user_id: uuid.UUID, *, lock: bool = False) -> AnyRow | None:
        query = self._members().where(M.c.user_id == user_id)
        if lock:
            query = query.with_for_update(of=M)
        return (await self.session.execute(query)).first()

    async def lock_admins(self) -> list[uuid.UUID]:
        """Lock the tenant's ADMIN memberships (in id order, so concurrent callers cannot
        deadlock) and return their user ids."""
        query = (
            select(M.c.user_id)
            .where(M.c.tenant_id == self.tenant_id, M.c.role == Role.ADMIN.value)
            .order_by(M.c.user_id)
            .with_for_update()
        )
        return list((await self.session.execute(query)).scalars())

    async def ensure_user(self, email: str) -> uuid.UUID:
        found = await self.session.scalar(select(func.zixly_ensure_user(email)))
        return uuid.UUID(str(found))

    async def set_role(self, user_id: uuid.UUID, role: Role) -> None:
        await self.session.execute(
            update(M)
            .where(M.c.tenant_id == self.tenant_id, M.c.user_id == user_id)
            .values(role=role.value, updated_at=func.now())
        )

    async def remove(self, user_id: uuid.UUID) -> None:
        await self.session.execute(
            delete(M).where(M.c.tenant_id == self.tenant_id, M.c.user_id == user_id)
        )


class MemberAdmin:
    """Role changes and removals in the actor's tenant, each audited.

    The tenant's ADMIN memberships are locked before any change, so two admins demoting
    each other at the same time cannot leave the tenant without an ADMIN. ``changes``
    records who lost or changed their role, for the caller to announce once the
    transaction commits (``zixly.security.principal_events``).
    """

    LAST_ADMIN = "tenant must keep at least one ADMIN"

    def __init__(self, session: AsyncSession, actor: Actor) -> None:
        assert actor.tenant_id is not None, "member administration needs a tenant"
        self.session = session
        self.actor = actor
        self.members = MemberRepository(session, actor.tenant_id)
        self.changes: list[PrincipalChange] = []

    async def set_role(self, user_id: uuid.UUID, role: Role) -> AnyRow:
        target = await self._locked_target(user_id, stays_admin=role is Role.ADMIN)
        if target.role == role.value:
            return target  # nothing changes, nothing to audit
        await self.members.set_role(user_id, role)
        self._changed(user_id, ChangeKind.ROLE_CHANGED)
        await self._audit(
            "member.role_changed", user_id, {"old_role": target.role, "new_role": role.value}
        )
        return await self._reload(user_id)

    async def remove(self, user_id: uuid.UUID) -> AnyRow:
        target = await self._locked_target(user_id, stays_admin=False)
        await self.members.remove(user_id)
        self._changed(user_id, ChangeKind.REMOVED)
        await self._audit("member.removed", user_id, {"old_role": target.role})
        return target

    def _changed(self, user_id: uuid.UUID, kind: ChangeKind) -> None:
        assert self.actor.tenant_id is not None
        self.changes.append(
            PrincipalChange(tenant_id=self.actor.tenant_id, user_id=user_id, kind=kind)
        )

    async def _locked_target(self, user_id: uuid.UUID, *, stays_admin: bool) -> AnyRow:
        """The member, locked; refuses a change that would leave the tenant with no ADMIN."""
        admins = await self.members.lock_admins()  # before the target: one lock order for all
        target = await self.members.get(user_id, lock=True)
        if target is None:
            raise NotFoundError("no member with this id in your tenant", field="userId")
        if not stays_admin and target.role == Role.ADMIN.value and admins == [target.id]:
            raise ConflictError(self.LAST_ADMIN, field="userId")
        return target

    async def _reload(self, user_id: uuid.UUID) -> AnyRow:
        row = await self.members.get(user_id)
        assert row is not None
        return row

    async def _audit(self, action: str, user_id: uuid.UUID, details: dict[str, Any]) -> None:
        entry = AuditEntry(
            action=action, target_type="user", target_id=str(user_id), details=details
        )
        await write_audit(self.session, self.actor, entry)
