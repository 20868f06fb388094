"""The baseline: plain Starlette + asyncpg endpoints serving the same rows as JSON.

What it shares with the real API, so the comparison is fair: the application role (RLS
applies), one transaction per request that first sets the tenant with the same
``set_config`` statement as ``zixly.db.session``, the same SQL (tenant-filtered, same
columns, ordering and page size; the same GROUP BY for the summary), the same pool size,
and Decimal values as strings. What it leaves out, and the ratio therefore includes:
authentication (JWT check and principal look-up), the Redis rate limit, the GraphQL
layer and signed cursors. The tenant comes from the ``X-Tenant-Id`` header.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SCOPE_SQL = (
    "SELECT set_config('app.tenant_id', $1, true), "
    "set_config('app.user_id', $2, true), "
    "set_config('statement_timeout', $3, true)"
)
# The columns FinancialRepository selects, in its order and with its keyset ordering.
PAGE_SQL = """
SELECT id, client_kpi_id, record_date, revenue, expenses, net_profit, cash_flow, currency,
       source_system, external_id
FROM financials
WHERE tenant_id = $1 AND record_date >= $2 AND record_date <= $3
ORDER BY record_date, id
LIMIT $4
"""
# AnalyticsRepository.financial_summary's query for MONTH: gap-filled calendar months
# (generate_series LEFT JOIN the GROUP BY), bounds clipped to the range, zeros when empty.
SUMMARY_SQL = """
SELECT greatest(p.bucket::date, $2::date) AS period_start,
       least((p.bucket + interval '1 month' - interval '1 day')::date, $3::date) AS period_end,
       coalesce(s.revenue, 0::numeric(14, 2)) AS revenue,
       coalesce(s.expenses, 0::numeric(14, 2)) AS expenses,
       coalesce(s.net_profit, 0::numeric(14, 2)) AS net_profit,
       coalesce(s.cash_flow, 0::numeric(14, 2)) AS cash_flow,
       coalesce(s.record_count, 0) AS record_count
FROM generate_series(
         date_trunc('month', $2::date::timestamp), $3::date::timestamp, interval '1 month'
     ) AS p(bucket)
LEFT JOIN (
    SELECT date_trunc('month', record_date::timestamp) AS bucket,
           sum(revenue) AS revenue, sum(expenses) AS expenses,
           sum(net_profit) AS net_profit, sum(cash_flow) AS cash_flow,
           count(id) AS record_count
    FROM financials
    WHERE tenant_id = $1 AND record_date <= $3 AND record_date >= $2
    GROUP BY 1
) AS s ON s.bucket = p.bucket
ORDER BY p.bucket
"""


def _financial(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "clientId": str(row["client_kpi_id"]),
        "recordDate": row["record_date"].isoformat(),
        "revenue": str(row["revenue"]),
        "expenses": str(row["expenses"]),
        "netProfit": str(row["net_profit"]),
        "cashFlow": str(row["cash_flow"]),
        "currency": row["currency"],
    }


def _period(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "periodStart": row["period_start"].isoformat(),
        "periodEnd": row["period_end"].isoformat(),
        "revenue": str(row["revenue"]),
        "expenses": str(row["expenses"]),
        "netProfit": str(row["net_profit"]),
        "cashFlow": str(row["cash_flow"]),
        "recordCount": row["record_count"],
    }


class _Handlers:
    def __init__(self, dsn: str, pool_size: int, statement_timeout_ms: int) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.timeout = str(statement_timeout_ms)
        self.pool: asyncpg.Pool | None = None

    async def _fetch(self, tenant: uuid.UUID, sql: str, *args: Any) -> Sequence[asyncpg.Record]:
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.fetchval(SCOPE_SQL, str(tenant), "", self.timeout)
            rows: Sequence[asyncpg.Record] = await conn.fetch(sql, tenant, *args)
            return rows

    async def financials(self, request: Request) -> Response:
        tenant, start, end = _arguments(request)
        first = int(request.query_params.get("first", "500"))
        rows = await self._fetch(tenant, PAGE_SQL, start, end, first + 1)
        page = rows[:first]
        last = page[-1] if page else None
        return JSONResponse(
            {
                "rows": [_financial(row) for row in page],
                "hasNextPage": len(rows) > first,
                "endCursor": f"{last['record_date']}|{last['id']}" if last else None,
            }
        )

    async def summary(self, request: Request) -> Response:
        tenant, start, end = _arguments(request)
        rows = await self._fetch(tenant, SUMMARY_SQL, start, end)
        return JSONResponse({"periods": [_period(row) for row in rows]})


def _arguments(request: Request) -> tuple[uuid.UUID, dt.date, dt.date]:
    params = request.query_params
    return (
        uuid.UUID(request.headers["x-tenant-id"]),
        dt.date.fromisoformat(params["start"]),
        dt.date.fromisoformat(params["end"]),
    )


async def _healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(dsn: str, *, pool_size: int, statement_timeout_ms: int) -> Starlette:
    """``dsn`` is a plain ``postgresql://`` URL of the application role."""
    handlers = _Handlers(dsn, pool_size, statement_timeout_ms)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        handlers.pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=pool_size,
            server_settings={"application_name": "zixly-bench-baseline"},
        )
        try:
            yield
        finally:
            await handlers.pool.close()

    routes = [
        Route("/financials", handlers.financials),
        Route("/financial-summary", handlers.summary),
        Route("/healthz", _healthz),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
