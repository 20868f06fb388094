"""Tenants, as Zixly staff see them: across every tenant, through the staff policy.

Unlike the tenant-scoped repositories there is no tenant filter here by design; these
queries only return rows in a transaction that has ``SET LOCAL ROLE`` to the staff role
(the application role's own policy shows it only its current tenant).
"""

from __future__ import annotations

import re
import uuid
from typing import cast

from sqlalchemy import Table, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import ConflictError
from zixly.db.models import Tenant
from zixly.db.rows import AnyRow
from zixly.domain.audit import Actor, AuditEntry, write_audit
from zixly.domain.pages import Page, split_page

T = cast(Table, Tenant.__table__)
COLUMNS = (T.c.id, T.c.slug, T.c.name, T.c.industry, T.c.plan)
# The same rule as the tenants_slug_format CHECK constraint.
SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


class TenantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(self, *, first: int, after: tuple[str, str] | None) -> Page[AnyRow]:
        query = select(*COLUMNS)
        if after is not None:
            slug, last_id = after
            query = query.where(tuple_(T.c.slug, T.c.id) > (slug, uuid.UUID(last_id)))
        query = query.order_by(T.c.slug, T.c.id).limit(first + 1)
        return split_page(list((await self.session.execute(query)).all()), first)

    async def create(self, *, slug: str, name: str, industry: str | None) -> AnyRow | None:
        """The new tenant, or None when the slug is taken."""
        statement = (
            insert(T)
            .values(slug=slug, name=name, industry=industry)
            .on_conflict_do_nothing(index_elements=[T.c.slug])
            .returning(*COLUMNS)
        )
        return (await self.session.execute(statement)).first()


async def create_tenant(
    session: AsyncSession, actor: Actor, *, slug: str, name: str, industry: str | None
) -> AnyRow:
    """Create a tenant and audit it (the audit row belongs to the new tenant)."""
    row = await TenantRepository(session).create(slug=slug, name=name, industry=industry)
    if row is None:
        raise ConflictError("a tenant with this slug already exists", field="slug")
    entry = AuditEntry(
        action="tenant.created",
        target_type="tenant",
        target_id=str(row.id),
        details={"slug": slug, "name": name, "industry": industry},
    )
    await write_audit(session, actor, entry, tenant_id=row.id)
    return row
