"""Daily financial records and the aggregations over them (computed in SQL)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Select, and_, select, tuple_
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncResult, AsyncSession

from zixly.db.models import ClientKpi, Financial
from zixly.db.rows import AnyRow
from zixly.domain.pages import Page, split_page
from zixly.domain.ranges import DateRange

F = Financial.__table__
COLUMNS = (
    F.c.id,
    F.c.client_kpi_id,
    F.c.record_date,
    F.c.revenue,
    F.c.expenses,
    F.c.net_profit,
    F.c.cash_flow,
    F.c.currency,
    F.c.source_system,
    F.c.external_id,
)


class FinancialRepository:
    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    def _scoped(
        self, date_range: DateRange, client_id: uuid.UUID | None
    ) -> Select[*tuple[Any, ...]]:
        query = select(*COLUMNS).where(
            F.c.tenant_id == self.tenant_id,
            F.c.record_date >= date_range.start,
            F.c.record_date <= date_range.end,
        )
        if client_id is not None:
            query = query.where(F.c.client_kpi_id == client_id)
        return query

    async def page(
        self,
        date_range: DateRange,
        *,
        client_id: uuid.UUID | None,
        first: int,
        after: tuple[str, str] | None,
    ) -> Page[AnyRow]:
        query = self._scoped(date_range, client_id)
        if after is not None:
            last_date, last_id = after
            query = query.where(
                tuple_(F.c.record_date, F.c.id)
                > (dt.date.fromisoformat(last_date), uuid.UUID(last_id))
            )
        query = query.order_by(F.c.record_date, F.c.id).limit(first + 1)
        return split_page(list((await self.session.execute(query)).all()), first)

    async def latest_for_clients(self, client_ids: list[uuid.UUID]) -> dict[uuid.UUID, AnyRow]:
        """The most recent record of each client, in one statement."""
        query = (
            select(*COLUMNS)
            .where(F.c.tenant_id == self.tenant_id, F.c.client_kpi_id.in_(client_ids))
            .ext(distinct_on(F.c.client_kpi_id))
            .order_by(F.c.client_kpi_id, F.c.record_date.desc(), F.c.source_system)
        )
        return {row.client_kpi_id: row for row in (await self.session.execute(query)).all()}

    async def stream_for_export(
        self, date_range: DateRange, client_id: uuid.UUID | None, *, batch_size: int
    ) -> AsyncResult[*tuple[Any, ...]]:
        """Export rows (with the client's external id and name) through a server-side cursor.

        The caller must keep the session's transaction open while it reads the result.
        """
        clients = ClientKpi.__table__
        query = (
            self._scoped(date_range, client_id)
            .with_only_columns(
                F.c.record_date,
                clients.c.client_id,
                clients.c.client_name,
                F.c.revenue,
                F.c.expenses,
                F.c.net_profit,
                F.c.cash_flow,
                F.c.currency,
                F.c.source_system,
            )
            .select_from(
                F.join(
                    clients,
                    and_(clients.c.tenant_id == F.c.tenant_id, clients.c.id == F.c.client_kpi_id),
                )
            )
            .where(clients.c.tenant_id == self.tenant_id)
            .order_by(F.c.record_date, clients.c.client_id, F.c.source_system)
            .execution_options(yield_per=batch_size)
        )
        return await self.session.stream(query)
