"""Users and their memberships (roles) in a tenant."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.db.models import Membership, Tenant, User

M = Membership.__table__
U = User.__table__
TN = Tenant.__table__


class MemberRepository:
    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID | None) -> None:
        self.session = session
        self.tenant_id = tenant_id

    async def tenant(self) -> Row[Any] | None:
        if self.tenant_id is None:
            return None
        query = select(TN.c.id, TN.c.slug, TN.c.name, TN.c.industry, TN.c.plan).where(
            TN.c.id == self.tenant_id
        )
        return (await self.session.execute(query)).first()
