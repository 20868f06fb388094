"""Clients (the seed's ClientKPI): the businesses a tenant tracks."""

from __future__ import annotations

import uuid
from typing import cast

from sqlalchemy import Table, and_, func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import ValidationError
from zixly.db.models import ClientKpi
from zixly.db.rows import AnyRow
from zixly.domain.pages import Page, split_page

T = cast(Table, ClientKpi.__table__)
COLUMNS = (T.c.id, T.c.client_id, T.c.client_name, T.c.industry, T.c.created_at, T.c.updated_at)


def _like_escape(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class ClientRepository:
    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    async def page(
        self, *, first: int, after: tuple[str, str] | None, search: str | None
    ) -> Page[AnyRow]:
        query = select(*COLUMNS).where(T.c.tenant_id == self.tenant_id)
        if search:
            if len(search) > 200:
                raise ValidationError("search is longer than 200 characters", field="search")
            pattern = f"%{_like_escape(search)}%"
            query = query.where(
                or_(
                    T.c.client_name.ilike(pattern, escape="\\"),
                    T.c.client_id.ilike(pattern, escape="\\"),
                )
            )
        if after is not None:
            name, last_id = after
            query = query.where(tuple_(T.c.client_name, T.c.id) > (name, uuid.UUID(last_id)))
        query = query.order_by(T.c.client_name, T.c.id).limit(first + 1)
        rows = list((await self.session.execute(query)).all())
        return split_page(rows, first)

    async def get(self, client_id: uuid.UUID) -> AnyRow | None:
        query = select(*COLUMNS).where(and_(T.c.tenant_id == self.tenant_id, T.c.id == client_id))
        return (await self.session.execute(query)).first()

    async def get_many(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, AnyRow]:
        query = select(*COLUMNS).where(T.c.tenant_id == self.tenant_id, T.c.id.in_(ids))
        return {row.id: row for row in (await self.session.execute(query)).all()}

    async def upsert(self, *, client_id: str, client_name: str, industry: str | None) -> AnyRow:
        statement = insert(T).values(
            tenant_id=self.tenant_id,
            client_id=client_id,
            client_name=client_name,
            industry=industry,
        )
        upsert = statement.on_conflict_do_update(
            constraint="client_kpis_tenant_client_key",
            set_={
                "client_name": statement.excluded.client_name,
                "industry": statement.excluded.industry,
                "updated_at": func.now(),
            },
        ).returning(*COLUMNS)
        row = (await self.session.execute(upsert)).one()
        return row
