"""The listings the compiled path answers, one ``Source`` each.

A source says how the listing's arguments are checked (by the same functions its resolver
calls, in the same order, so a bad argument raises the same error), which rows it reads
(the repository's own page statement, see ``recorded``), how a cursor's keys are rendered
(as text, exactly as the resolver's key function renders them), and per node field the
SQL value that ``json_build_object`` renders exactly as Strawberry serialises the field:

- ID (uuid) and Date columns as they are: JSON renders a uuid as its canonical text
  (``str(UUID)``) and a date in ISO 8601 whatever the DateStyle (``date.isoformat()``);
- Decimal as ``::text``, which keeps the numeric's scale as ``str(Decimal)`` of asyncpg's
  value does (a bare numeric would become a JSON number);
- DateTime through ``iso_datetime`` (JSON would use the session's time zone);
- text as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import TIMESTAMP, Select, Text, case, func, literal
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from zixly.domain.clients import ClientRepository
from zixly.domain.clients import T as CLIENTS
from zixly.domain.financials import F as FINANCIALS
from zixly.domain.financials import FinancialRepository
from zixly.domain.metrics import CustomMetricRepository
from zixly.domain.metrics import M as METRICS
from zixly.graphql.api.metrics import LISTING as METRICS_LISTING
from zixly.graphql.context import Context
from zixly.graphql.inputs import DateRangeInput, optional_id
from zixly.graphql.relay import decode_after, page_size

SqlText = ColumnElement[str]
SqlValue = ColumnElement[Any]


def text_of(column: ColumnElement[Any]) -> SqlText:
    """A uuid's or a numeric's text: Python's ``str`` of asyncpg's value."""
    return sql_cast(column, Text)


def iso_date(column: ColumnElement[Any]) -> SqlText:
    """``date.isoformat()``; through ``timestamp`` so the session time zone plays no part."""
    return func.to_char(sql_cast(column, TIMESTAMP), "YYYY-MM-DD")


def iso_datetime(column: ColumnElement[Any]) -> SqlText:
    """``isoformat()`` of the UTC ``datetime`` asyncpg returns for a ``timestamptz``:
    microseconds only when not zero, and the offset ``+00:00``."""
    utc = func.timezone("UTC", column)
    micros = func.to_char(utc, "US")
    fraction = case((micros == "000000", literal("")), else_=literal(".") + micros)
    return func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS') + fraction + literal("+00:00")


@dataclass(frozen=True)
class PageQuery:
    """The statement a listing's repository would run (it selects ``first + 1`` rows)."""

    statement: Select[Any]
    first: int


Bind = Callable[[Context, Mapping[str, Any]], Awaitable[PageQuery]]


@dataclass(frozen=True)
class Source:
    field: str  # the Query field, by its GraphQL name
    listing: str  # the name the listing's cursors are bound to
    fields: Mapping[str, SqlValue]  # node field (GraphQL name) -> its JSON value
    keys: tuple[SqlText, ...]  # the cursor's keys, rendered as the resolver renders them
    bind: Bind  # checks the coerced arguments (GraphQL names); raises as the resolver would


class _NoRows:
    def all(self) -> list[Any]:
        return []


class _Recorder:
    """Stands in for the session a repository's ``page`` is given and keeps the one
    statement it would execute instead of running it. The compiled path then reads
    exactly the rows the resolver would: same filters, keyset, order and limit."""

    def __init__(self) -> None:
        self.statement: Any = None

    async def execute(self, statement: Any, *_args: Any, **_kwargs: Any) -> _NoRows:
        if self.statement is not None:
            raise RuntimeError("the page method ran more than one statement")
        self.statement = statement
        return _NoRows()


async def recorded(page: Callable[[AsyncSession], Awaitable[Any]]) -> Select[Any]:
    recorder = _Recorder()
    await page(cast(AsyncSession, recorder))
    if not isinstance(recorder.statement, Select):
        raise RuntimeError("the page method ran no SELECT")
    return recorder.statement


def _after(cursor: tuple[str, ...] | None) -> tuple[str, str] | None:
    return (cursor[0], cursor[1]) if cursor else None


# --- financials (zixly/graphql/api/clients.py ClientQuery.financials) -------------------


async def _bind_financials(ctx: Context, args: Mapping[str, Any]) -> PageQuery:
    tenant_id = ctx.tenant()
    date_range = DateRangeInput(**args["range"]).checked(ctx)
    first = page_size(ctx, args.get("first"))
    cursor = decode_after(ctx, "financials", args.get("after"), 2)
    client_id = optional_id(args.get("clientId"), "clientId")
    statement = await recorded(
        lambda session: FinancialRepository(session, tenant_id).page(
            date_range, client_id=client_id, first=first, after=_after(cursor)
        )
    )
    return PageQuery(statement, first)


FINANCIALS_SOURCE = Source(
    field="financials",
    listing="financials",
    fields={
        "id": FINANCIALS.c.id,
        "clientId": FINANCIALS.c.client_kpi_id,
        "recordDate": FINANCIALS.c.record_date,
        "revenue": text_of(FINANCIALS.c.revenue),
        "expenses": text_of(FINANCIALS.c.expenses),
        "netProfit": text_of(FINANCIALS.c.net_profit),
        "cashFlow": text_of(FINANCIALS.c.cash_flow),
        "currency": FINANCIALS.c.currency,
        "sourceSystem": FINANCIALS.c.source_system,
        "externalId": FINANCIALS.c.external_id,
    },
    keys=(iso_date(FINANCIALS.c.record_date), text_of(FINANCIALS.c.id)),
    bind=_bind_financials,
)


# --- clients (ClientQuery.clients) ------------------------------------------------------


async def _bind_clients(ctx: Context, args: Mapping[str, Any]) -> PageQuery:
    tenant_id = ctx.tenant()
    first = page_size(ctx, args.get("first"))
    cursor = decode_after(ctx, "clients", args.get("after"), 2)
    statement = await recorded(
        lambda session: ClientRepository(session, tenant_id).page(
            first=first, after=_after(cursor), search=args.get("search")
        )
    )
    return PageQuery(statement, first)


CLIENTS_SOURCE = Source(
    field="clients",
    listing="clients",
    fields={
        "id": CLIENTS.c.id,
        "clientId": CLIENTS.c.client_id,
        "name": CLIENTS.c.client_name,
        "industry": CLIENTS.c.industry,
        "createdAt": iso_datetime(CLIENTS.c.created_at),
        "updatedAt": iso_datetime(CLIENTS.c.updated_at),
    },
    keys=(CLIENTS.c.client_name, text_of(CLIENTS.c.id)),
    bind=_bind_clients,
)


# --- customMetrics (zixly/graphql/api/metrics.py MetricsQuery.custom_metrics) -----------


async def _bind_custom_metrics(ctx: Context, args: Mapping[str, Any]) -> PageQuery:
    tenant_id = ctx.tenant()
    date_range = DateRangeInput(**args["range"]).checked(ctx)
    client_id = optional_id(args.get("clientId"), "clientId")
    first = page_size(ctx, args.get("first"))
    cursor = decode_after(ctx, METRICS_LISTING, args.get("after"), 2)
    statement = await recorded(
        lambda session: CustomMetricRepository(session, tenant_id).page(
            date_range,
            metric_name=args.get("metricName"),
            client_id=client_id,
            first=first,
            after=_after(cursor),
        )
    )
    return PageQuery(statement, first)


CUSTOM_METRICS_SOURCE = Source(
    field="customMetrics",
    listing=METRICS_LISTING,
    fields={
        "id": METRICS.c.id,
        "clientId": METRICS.c.client_kpi_id,
        "metricName": METRICS.c.metric_name,
        "value": text_of(METRICS.c.metric_value),
        "unit": METRICS.c.unit,
        "recordDate": iso_datetime(METRICS.c.record_date),
        "sourceSystem": METRICS.c.source_system,
    },
    keys=(iso_datetime(METRICS.c.record_date), text_of(METRICS.c.id)),
    bind=_bind_custom_metrics,
)


SOURCES: Mapping[str, Source] = {
    source.field: source for source in (FINANCIALS_SOURCE, CLIENTS_SOURCE, CUSTOM_METRICS_SOURCE)
}
