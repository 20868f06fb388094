"""Clients and their daily financial records."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import strawberry

from zixly.core.errors import NotFoundError
from zixly.domain.clients import ClientRepository
from zixly.domain.financials import FinancialRepository
from zixly.domain.ids import optional_id, parse_id
from zixly.graphql.context import Info
from zixly.graphql.inputs import DateRangeInput
from zixly.graphql.relay import Connection, build_connection, decode_after, page_size


@strawberry.type
class FinancialRecord:
    id: strawberry.ID
    client_id: strawberry.ID
    record_date: dt.date
    revenue: Decimal
    expenses: Decimal
    net_profit: Decimal
    cash_flow: Decimal
    currency: str
    source_system: str
    external_id: str | None

    @classmethod
    def from_row(cls, row: Any) -> FinancialRecord:
        return cls(
            id=strawberry.ID(str(row.id)),
            client_id=strawberry.ID(str(row.client_kpi_id)),
            record_date=row.record_date,
            revenue=row.revenue,
            expenses=row.expenses,
            net_profit=row.net_profit,
            cash_flow=row.cash_flow,
            currency=row.currency,
            source_system=row.source_system,
            external_id=row.external_id,
        )


@strawberry.type(description="A business the tenant tracks (a client of the tenant).")
class Client:
    id: strawberry.ID
    client_id: str = strawberry.field(description="The client's id in the source system.")
    name: str
    industry: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @strawberry.field(description="The most recent daily financial record, if any.")
    async def latest_financial(self, info: Info) -> FinancialRecord | None:
        row = await info.context.loaders.latest_financial.load(parse_id(self.id, "id"))
        return FinancialRecord.from_row(row) if row is not None else None

    @classmethod
    def from_row(cls, row: Any) -> Client:
        return cls(
            id=strawberry.ID(str(row.id)),
            client_id=row.client_id,
            name=row.client_name,
            industry=row.industry,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type
class ClientQuery:
    @strawberry.field(description="The tenant's clients, by name; `search` matches name or id.")
    async def clients(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        search: str | None = None,
    ) -> Connection[Client]:
        ctx = info.context
        tenant_id = ctx.tenant()
        limit = page_size(ctx, first)
        cursor = decode_after(ctx, "clients", after, 2)
        async with ctx.session() as session:
            page = await ClientRepository(session, tenant_id).page(
                first=limit,
                after=(cursor[0], cursor[1]) if cursor else None,
                search=search,
            )
        return build_connection(
            ctx, "clients", page, Client.from_row, lambda r: [r.client_name, str(r.id)]
        )

    @strawberry.field
    async def client(self, info: Info, id: strawberry.ID) -> Client:
        ctx = info.context
        tenant_id = ctx.tenant()
        client_id = parse_id(id, "id")
        async with ctx.session() as session:
            row = await ClientRepository(session, tenant_id).get(client_id)
        if row is None:
            raise NotFoundError("no client with this id", field="id")
        return Client.from_row(row)

    @strawberry.field(description="Daily financial records in a date range, oldest first.")
    async def financials(
        self,
        info: Info,
        range: DateRangeInput,
        client_id: strawberry.ID | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[FinancialRecord]:
        ctx = info.context
        tenant_id = ctx.tenant()
        date_range = range.checked(ctx)
        limit = page_size(ctx, first)
        cursor = decode_after(ctx, "financials", after, 2)
        async with ctx.session() as session:
            page = await FinancialRepository(session, tenant_id).page(
                date_range,
                client_id=optional_id(client_id, "clientId"),
                first=limit,
                after=(cursor[0], cursor[1]) if cursor else None,
            )
        return build_connection(
            ctx,
            "financials",
            page,
            FinancialRecord.from_row,
            lambda r: [r.record_date.isoformat(), str(r.id)],
        )
