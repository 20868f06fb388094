"""The audit trail of access-changing actions (append-only: insert and read, never update)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.db.models import AuditLog
from zixly.security.principal import Principal

A = cast(Table, AuditLog.__table__)


@dataclass(frozen=True)
class Actor:
    """Who did it, in which tenant, and under which request id."""

    tenant_id: uuid.UUID | None
    user_id: uuid.UUID | None
    request_id: str | None

    @classmethod
    def of(cls, principal: Principal, request_id: str | None) -> Actor:
        return cls(tenant_id=principal.tenant_id, user_id=principal.user_id, request_id=request_id)


@dataclass(frozen=True)
class AuditEntry:
    action: str
    target_type: str
    target_id: str
    # Describes the change (old/new role, slug...). Never put secrets or tokens here.
    details: dict[str, Any] = field(default_factory=dict)


async def write_audit(
    session: AsyncSession, actor: Actor, entry: AuditEntry, *, tenant_id: uuid.UUID | None = None
) -> None:
    """Append one row; ``tenant_id`` overrides the actor's tenant (a staff action on a tenant)."""
    await session.execute(
        insert(A).values(
            tenant_id=tenant_id if tenant_id is not None else actor.tenant_id,
            actor_user_id=actor.user_id,
            action=entry.action,
            target_type=entry.target_type,
            target_id=entry.target_id,
            details=entry.details,
            request_id=actor.request_id or None,
        )
    )
