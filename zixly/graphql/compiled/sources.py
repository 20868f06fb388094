"""The Query fields the compiled path answers, one ``Source`` each.

A source says how the field's arguments are checked (by the same functions its resolver
calls, in the same order, so a bad argument raises the same error), which rows it reads
(the statement its repository method would run, see ``recorded``), for a connection how
a cursor's keys are rendered (as text, exactly as the resolver's key function renders
them), and per object field the SQL value that ``json_build_object`` renders exactly as
Strawberry serialises the field:

- ID (uuid) and Date columns as they are: JSON renders a uuid as its canonical text
  (``str(UUID)``) and a date in ISO 8601 whatever the DateStyle (``date.isoformat()``);
- Decimal as ``::text``, which keeps the numeric's scale as ``str(Decimal)`` of asyncpg's
  value does (a bare numeric would become a JSON number);
- DateTime through ``iso_datetime`` (JSON would use the session's time zone);
- Int (a count) and text as they are.

Float fields are not compiled: PostgreSQL writes a float8 differently from Python's
``repr`` (``2`` for ``2.0``, ``1e+15`` for ``1000000000000000.0``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import TIMESTAMP, Select, Text, case, func, literal, select
from sqlalchemy import cast as sql_cast
from sqlalchemy import column as sql_column
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from zixly.db.rows import AnyRow
from zixly.domain import analytics
from zixly.domain.analytics import AnalyticsRepository
from zixly.domain.clients import ClientRepository
from zixly.domain.clients import T as CLIENTS
from zixly.domain.financials import F as FINANCIALS
from zixly.domain.financials import FinancialRepository
from zixly.domain.ids import optional_id
from zixly.domain.metrics import CustomMetricRepository
from zixly.domain.metrics import M as METRICS
from zixly.graphql.api.metrics import LISTING as METRICS_LISTING
from zixly.graphql.compiled.render import PageData
from zixly.graphql.context import Context
from zixly.graphql.inputs import DateRangeInput
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
class Bound:
    """The one statement a listing's repository would execute for the request, with the
    parameters it would pass; for a page, its size (the statement reads one row more)."""

    statement: Select[Any]
    params: Mapping[str, Any] | None = None
    first: int | None = None


Bind = Callable[[Context, Mapping[str, Any]], Awaitable[Bound]]


@dataclass(frozen=True)
class Source(ABC):
    """A Query field the compiled path answers from the rows of one statement, each row
    holding the JSON of every object selection (``columns``, in planning order)."""

    field: str  # the Query field, by its GraphQL name
    fields: Mapping[str, SqlValue]  # object field (GraphQL name) -> its JSON value
    bind: Bind  # checks the coerced arguments (GraphQL names); raises as the resolver would

    @abstractmethod
    def select(self, bound: Bound, columns: Sequence[SqlText]) -> Select[Any]:
        """The statement to run instead of the repository's."""

    @abstractmethod
    def page(self, ctx: Context, bound: Bound, rows: Sequence[AnyRow]) -> PageData:
        """What the response is rendered from, given the rows of ``select``."""


@dataclass(frozen=True)
class ConnectionSource(Source):
    """A Relay connection: the repository's page statement, selecting the node JSON and
    the cursor keys instead of its columns."""

    listing: str  # the name the listing's cursors are bound to
    keys: tuple[SqlText, ...]  # the cursor's keys, rendered as the resolver renders them

    def select(self, bound: Bound, columns: Sequence[SqlText]) -> Select[Any]:
        return cast("Select[Any]", bound.statement.with_only_columns(*columns, *self.keys))

    def page(self, ctx: Context, bound: Bound, rows: Sequence[AnyRow]) -> PageData:
        first = bound.first
        if first is None:
            raise TypeError("a connection's statement reads a page")
        tenant, codec = ctx.principal.tenant_id, ctx.services.cursors
        return PageData(
            rows[:first],
            has_next=len(rows) > first,
            key_offset=len(rows[0]) - len(self.keys) if rows else 0,
            encode=lambda keys: codec.encode(tenant, self.listing, keys),
        )


@dataclass(frozen=True)
class ListSource(Source):
    """A plain list of objects with scalar fields only: every row of the repository's
    statement, in its order, is one object. ``fields`` name the statement's columns with
    ``result``; the statement is wrapped as a subquery, so its rows (filters, grouping,
    parameters) are exactly the resolver's. PostgreSQL keeps a sorted subquery's order
    when the query around it only computes each row's values (no join, sort, grouping)."""

    def select(self, bound: Bound, columns: Sequence[SqlText]) -> Select[Any]:
        return _wrapped(bound.statement, tuple(columns))

    def page(self, ctx: Context, bound: Bound, rows: Sequence[AnyRow]) -> PageData:
        return PageData(rows)


_RESULT = "result"


@lru_cache(maxsize=256)
def _wrapped(statement: Select[Any], columns: tuple[SqlText, ...]) -> Select[Any]:
    """Once per repository statement and plan: the repositories build such statements once
    per shape, and a statement used again keeps its SQLAlchemy cache key, which otherwise
    costs a walk through the whole statement on every execution."""
    return cast("Select[Any]", select(*columns).select_from(statement.subquery(_RESULT)))


def result(name: str) -> SqlValue:
    """The column ``name`` of the statement a ``ListSource`` wraps."""
    return sql_column(name)


class _NoRows:
    def all(self) -> list[Any]:
        return []


class _Recorder:
    """Stands in for the session a repository method is given and keeps the one
    statement (and parameters) it would execute instead of running it. The compiled path
    then reads exactly the rows the resolver would: same filters, keyset, order and limit."""

    def __init__(self) -> None:
        self.statement: Any = None
        self.params: Mapping[str, Any] | None = None

    async def execute(
        self, statement: Any, params: Mapping[str, Any] | None = None, **_kwargs: Any
    ) -> _NoRows:
        if self.statement is not None:
            raise RuntimeError("the repository method ran more than one statement")
        self.statement, self.params = statement, params
        return _NoRows()


async def recorded(
    call: Callable[[AsyncSession], Awaitable[Any]], *, first: int | None = None
) -> Bound:
    recorder = _Recorder()
    await call(cast(AsyncSession, recorder))
    if not isinstance(recorder.statement, Select):
        raise RuntimeError("the repository method ran no SELECT")
    return Bound(recorder.statement, recorder.params, first)


def _after(cursor: tuple[str, ...] | None) -> tuple[str, str] | None:
    return (cursor[0], cursor[1]) if cursor else None


# --- financials (zixly/graphql/api/clients.py ClientQuery.financials) -------------------


async def _bind_financials(ctx: Context, args: Mapping[str, Any]) -> Bound:
    tenant_id = ctx.tenant()
    date_range = DateRangeInput(**args["range"]).checked(ctx)
    first = page_size(ctx, args.get("first"))
    cursor = decode_after(ctx, "financials", args.get("after"), 2)
    client_id = optional_id(args.get("clientId"), "clientId")
    return await recorded(
        lambda session: FinancialRepository(session, tenant_id).page(
            date_range, client_id=client_id, first=first, after=_after(cursor)
        ),
        first=first,
    )


FINANCIALS_SOURCE = ConnectionSource(
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


async def _bind_clients(ctx: Context, args: Mapping[str, Any]) -> Bound:
    tenant_id = ctx.tenant()
    first = page_size(ctx, args.get("first"))
    cursor = decode_after(ctx, "clients", args.get("after"), 2)
    return await recorded(
        lambda session: ClientRepository(session, tenant_id).page(
            first=first, after=_after(cursor), search=args.get("search")
        ),
        first=first,
    )


CLIENTS_SOURCE = ConnectionSource(
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


async def _bind_custom_metrics(ctx: Context, args: Mapping[str, Any]) -> Bound:
    tenant_id = ctx.tenant()
    date_range = DateRangeInput(**args["range"]).checked(ctx)
    client_id = optional_id(args.get("clientId"), "clientId")
    first = page_size(ctx, args.get("first"))
    cursor = decode_after(ctx, METRICS_LISTING, args.get("after"), 2)
    return await recorded(
        lambda session: CustomMetricRepository(session, tenant_id).page(
            date_range,
            metric_name=args.get("metricName"),
            client_id=client_id,
            first=first,
            after=_after(cursor),
        ),
        first=first,
    )


CUSTOM_METRICS_SOURCE = ConnectionSource(
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


# --- financialSummary (zixly/graphql/api/analytics.py AnalyticsQuery.financial_summary) --


async def _bind_financial_summary(ctx: Context, args: Mapping[str, Any]) -> Bound:
    tenant_id = ctx.tenant()
    date_range = DateRangeInput(**args["range"]).checked(ctx)
    client_id = optional_id(args.get("clientId"), "clientId")
    granularity = analytics.Granularity[args["granularity"].name]
    return await recorded(
        lambda session: AnalyticsRepository(session, tenant_id).financial_summary(
            date_range, granularity, client_id=client_id
        )
    )


FINANCIAL_SUMMARY_SOURCE = ListSource(
    field="financialSummary",
    fields={
        "periodStart": result("period_start"),
        "periodEnd": result("period_end"),
        "revenue": text_of(result("revenue")),
        "expenses": text_of(result("expenses")),
        "netProfit": text_of(result("net_profit")),
        "cashFlow": text_of(result("cash_flow")),
        "recordCount": result("record_count"),
    },
    bind=_bind_financial_summary,
)


SOURCES: Mapping[str, Source] = {
    source.field: source
    for source in (
        FINANCIALS_SOURCE,
        CLIENTS_SOURCE,
        CUSTOM_METRICS_SOURCE,
        FINANCIAL_SUMMARY_SOURCE,
    )
}
