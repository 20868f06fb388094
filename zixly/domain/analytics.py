"""Business analytics over financials, lead events and task metrics, aggregated in SQL.

Time series are gap-filled: every period of the range is listed (``generate_series``), and
periods without data report zeros, so a chart's axis never skips. Periods are calendar
periods in UTC (``date_trunc``; weeks are ISO weeks, starting on Monday).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import (
    TIMESTAMP,
    ColumnElement,
    Date,
    Float,
    Integer,
    Interval,
    Numeric,
    Select,
    Subquery,
    Text,
    bindparam,
    case,
    cast,
    column,
    func,
    literal,
    select,
    values,
)
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.db.models import CustomMetric, Financial, LeadEvent
from zixly.db.rows import AnyRow
from zixly.domain.ranges import DateRange

# The sales pipeline's stages, in order (lead events name them; the funnel counts them).
PIPELINE = ("prospect", "qualified", "proposal", "negotiation", "closed-won")

F = Financial.__table__
L = LeadEvent.__table__
M = CustomMetric.__table__

TASKS_COMPLETED = "tasks_completed"
TASKS_CREATED = "tasks_created"
TASK_CYCLE_DAYS = "task_cycle_days"


class Granularity(enum.Enum):
    """A ``date_trunc`` unit and the interval that steps from one period to the next."""

    DAY = ("day", "1 day")
    WEEK = ("week", "1 week")
    MONTH = ("month", "1 month")
    QUARTER = ("quarter", "3 months")
    YEAR = ("year", "1 year")

    @property
    def unit(self) -> str:
        return self.value[0]

    @property
    def step(self) -> ColumnElement[Any]:
        return cast(literal(self.value[1]), Interval)


def _sum_or_zero(value: ColumnElement[Any], scale: int = 2) -> ColumnElement[Any]:
    """A sum that is zero at the column's scale (``0.00``, not NULL or ``0``) when empty."""
    return func.coalesce(value, cast(0, Numeric(14, scale)))


def _money(value: ColumnElement[Any]) -> ColumnElement[Any]:
    return _sum_or_zero(value, 2)


def _ratio(numerator: ColumnElement[Any], denominator: ColumnElement[Any]) -> ColumnElement[Any]:
    """``numerator / denominator`` as a float; NULL when the denominator is 0 or NULL."""
    return cast(cast(numerator, Numeric) / func.nullif(denominator, 0), Float)


def _bucket(moment: ColumnElement[Any], granularity: Granularity) -> ColumnElement[Any]:
    """The start of ``moment``'s period, as a timestamp without time zone."""
    return func.date_trunc(literal(granularity.unit), cast(moment, TIMESTAMP))


def _utc(moment: ColumnElement[Any]) -> ColumnElement[Any]:
    """A ``timestamptz`` as the UTC wall-clock timestamp (independent of the session zone)."""
    return func.timezone(literal("UTC"), moment)


class _Binds:
    """Bound parameters of the analytics statements.

    Statements are built once per shape (granularity, client filter) and cached; each request
    only binds values. Building a statement of this size with SQLAlchemy costs about as much
    CPU as running it, so rebuilding it per request would double the cost of a dashboard call.
    """

    tenant = bindparam("tenant_id", type_=PG_UUID(as_uuid=True))
    client = bindparam("client_id", type_=PG_UUID(as_uuid=True))
    start = bindparam("range_start", type_=Date)
    end = bindparam("range_end", type_=Date)
    start_at = bindparam("range_start_at", type_=TIMESTAMP(timezone=True))
    end_at = bindparam("range_end_at", type_=TIMESTAMP(timezone=True))

    @staticmethod
    def values(
        tenant_id: uuid.UUID, date_range: DateRange, client_id: uuid.UUID | None
    ) -> dict[str, Any]:
        return {
            "tenant_id": tenant_id,
            "client_id": client_id,
            "range_start": date_range.start,
            "range_end": date_range.end,
            "range_start_at": date_range.start_datetime(),
            "range_end_at": date_range.end_datetime_exclusive(),
        }


B = _Binds


def _periods(granularity: Granularity) -> Subquery:
    """One row per period overlapping the range, column ``bucket`` (the period's start)."""
    series = func.generate_series(
        _bucket(B.start, granularity),
        cast(B.end, TIMESTAMP),
        granularity.step,
    )
    return select(series.column_valued("bucket").label("bucket")).subquery("periods")


def _period_bounds(
    periods: Subquery, granularity: Granularity
) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """A period's first and last day, clipped to the range."""
    first = func.greatest(cast(periods.c.bucket, Date), B.start)
    last_day = periods.c.bucket + granularity.step - cast(literal("1 day"), Interval)
    last = func.least(cast(last_day, Date), B.end)
    return first, last


@dataclass(frozen=True)
class SalesFunnel:
    stages: list[AnyRow]
    """stage, count, value, conversion_rate; pipeline stages first, in order."""
    overall: AnyRow
    """total_leads, won, lost, win_rate."""


@dataclass(frozen=True)
class CashFlowReport:
    months: list[AnyRow]
    """month, net_cash_flow."""
    average_monthly_burn: Decimal
    cash_balance: Decimal
    runway_months: float | None


@dataclass(frozen=True)
class OperationalEfficiency:
    totals: AnyRow
    """tasks_completed, tasks_created, completion_rate, average_cycle_days."""
    months: list[AnyRow]
    """month and the same figures as ``totals``."""


def _financials(*columns: ColumnElement[Any], client: bool) -> Select[Any]:
    """Financial rows of the tenant up to the range's end (optionally one client's)."""
    query = select(*columns).where(F.c.tenant_id == B.tenant, F.c.record_date <= B.end)
    if client:
        query = query.where(F.c.client_kpi_id == B.client)
    return query


def _financials_by_period(granularity: Granularity, client: bool) -> Subquery:
    in_range = _financials(
        _bucket(F.c.record_date, granularity).label("bucket"),
        F.c.id,
        F.c.revenue,
        F.c.expenses,
        F.c.net_profit,
        F.c.cash_flow,
        client=client,
    )
    rows = in_range.where(F.c.record_date >= B.start).subquery("rows")
    return (
        select(
            rows.c.bucket,
            func.sum(rows.c.revenue).label("revenue"),
            func.sum(rows.c.expenses).label("expenses"),
            func.sum(rows.c.net_profit).label("net_profit"),
            func.sum(rows.c.cash_flow).label("cash_flow"),
            func.count(rows.c.id).label("record_count"),
        )
        .group_by(rows.c.bucket)
        .subquery("sums")
    )


@cache
def _financial_summary(granularity: Granularity, client: bool) -> Select[Any]:
    periods = _periods(granularity)
    sums = _financials_by_period(granularity, client)
    first, last = _period_bounds(periods, granularity)
    return (
        select(
            first.label("period_start"),
            last.label("period_end"),
            _money(sums.c.revenue).label("revenue"),
            _money(sums.c.expenses).label("expenses"),
            _money(sums.c.net_profit).label("net_profit"),
            _money(sums.c.cash_flow).label("cash_flow"),
            func.coalesce(sums.c.record_count, 0).label("record_count"),
        )
        .select_from(periods.outerjoin(sums, sums.c.bucket == periods.c.bucket))
        .order_by(periods.c.bucket)
    )


@cache
def _cash_flow(client: bool) -> Select[Any]:
    periods = _periods(Granularity.MONTH)
    sums = _financials_by_period(Granularity.MONTH, client)
    months = (
        select(
            cast(periods.c.bucket, Date).label("month"),
            _money(sums.c.cash_flow).label("net_cash_flow"),
        )
        .select_from(periods.outerjoin(sums, sums.c.bucket == periods.c.bucket))
        .cte("months")
    )
    burn = func.round(
        func.coalesce(func.avg(-months.c.net_cash_flow).filter(months.c.net_cash_flow < 0), 0),
        2,
    )
    # The balance is cumulative: every cash flow up to the range's end, not only in it.
    balance = _financials(_money(func.sum(F.c.cash_flow)), client=client).scalar_subquery()
    summary = select(burn.label("burn"), balance.label("balance")).cte("summary")
    runway = case(
        (summary.c.burn == 0, None),
        (summary.c.balance <= 0, 0.0),
        else_=cast(func.round(summary.c.balance / summary.c.burn, 2), Float),
    )
    return (
        select(
            months.c.month,
            months.c.net_cash_flow,
            summary.c.burn,
            summary.c.balance,
            runway.label("runway"),
        )
        .select_from(months.join(summary, literal(True)))
        .order_by(months.c.month)
    )


def _latest_lead_events(client: bool, *, per_stage: bool) -> Subquery:
    """Each lead's latest event in the range (per stage, or overall)."""
    lead = [L.c.client_kpi_id, L.c.source_system, L.c.lead_id]
    key = [*lead, L.c.stage] if per_stage else lead
    query = select(L.c.stage, L.c.value, L.c.status).where(
        L.c.tenant_id == B.tenant,
        L.c.event_date >= B.start_at,
        L.c.event_date < B.end_at,
    )
    if client:
        query = query.where(L.c.client_kpi_id == B.client)
    return (
        query.ext(distinct_on(*key))
        .order_by(*key, L.c.event_date.desc(), L.c.created_at.desc(), L.c.id.desc())
        .subquery("latest_per_stage" if per_stage else "latest")
    )


@cache
def _funnel_stages(client: bool) -> Select[Any]:
    latest = _latest_lead_events(client, per_stage=True)
    reached = (
        select(
            latest.c.stage,
            func.count().label("count"),
            func.sum(latest.c.value).label("value"),
        )
        .group_by(latest.c.stage)
        .subquery("reached")
    )
    pipeline = values(column("stage", Text), column("position", Integer), name="pipeline").data(
        [(stage, position) for position, stage in enumerate(PIPELINE, start=1)]
    )
    stage = func.coalesce(pipeline.c.stage, reached.c.stage)
    count = func.coalesce(reached.c.count, 0)
    order = (pipeline.c.position.asc().nulls_last(), count.desc(), stage)
    conversion = case(
        (pipeline.c.position == 1, 1.0),
        (pipeline.c.position.is_(None), None),
        else_=_ratio(count, func.lag(count).over(order_by=order)),
    )
    return (
        select(
            stage.label("stage"),
            count.label("count"),
            _money(reached.c.value).label("value"),
            conversion.label("conversion_rate"),
        )
        .select_from(pipeline.outerjoin(reached, reached.c.stage == pipeline.c.stage, full=True))
        .order_by(*order)
    )


@cache
def _funnel_overall(client: bool) -> Select[Any]:
    final = _latest_lead_events(client, per_stage=False)
    status = func.lower(final.c.status)
    won = func.count().filter(status == "won")
    lost = func.count().filter(status == "lost")
    return select(
        func.count().label("total_leads"),
        won.label("won"),
        lost.label("lost"),
        _ratio(won, won + lost).label("win_rate"),
    )


@cache
def _operational_efficiency(client: bool) -> Select[Any]:
    rows = select(
        _bucket(_utc(M.c.record_date), Granularity.MONTH).label("bucket"),
        M.c.metric_name,
        M.c.metric_value,
    ).where(
        M.c.tenant_id == B.tenant,
        M.c.metric_name.in_((TASKS_COMPLETED, TASKS_CREATED, TASK_CYCLE_DAYS)),
        M.c.record_date >= B.start_at,
        M.c.record_date < B.end_at,
    )
    if client:
        rows = rows.where(M.c.client_kpi_id == B.client)
    metrics = rows.subquery("task_metrics")
    periods = _periods(Granularity.MONTH)

    def total(name: str) -> ColumnElement[Any]:
        summed = func.sum(metrics.c.metric_value).filter(metrics.c.metric_name == name)
        return _sum_or_zero(summed, scale=4)

    completed, created = total(TASKS_COMPLETED), total(TASKS_CREATED)
    cycle = func.avg(metrics.c.metric_value).filter(metrics.c.metric_name == TASK_CYCLE_DAYS)
    # ROLLUP adds the grand total as one more row, whose month is NULL: it sorts last.
    return (
        select(
            cast(periods.c.bucket, Date).label("month"),
            completed.label("tasks_completed"),
            created.label("tasks_created"),
            _ratio(completed, created).label("completion_rate"),
            cast(cycle, Float).label("average_cycle_days"),
        )
        .select_from(periods.outerjoin(metrics, metrics.c.bucket == periods.c.bucket))
        .group_by(func.rollup(periods.c.bucket))
        .order_by(periods.c.bucket.asc().nulls_last())
    )


class AnalyticsRepository:
    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    async def _rows(
        self, statement: Select[Any], date_range: DateRange, client_id: uuid.UUID | None
    ) -> list[AnyRow]:
        params = B.values(self.tenant_id, date_range, client_id)
        return list((await self.session.execute(statement, params)).all())

    async def financial_summary(
        self, date_range: DateRange, granularity: Granularity, *, client_id: uuid.UUID | None
    ) -> list[AnyRow]:
        """period_start, period_end, revenue, expenses, net_profit, cash_flow, record_count."""
        statement = _financial_summary(granularity, client_id is not None)
        return await self._rows(statement, date_range, client_id)

    async def cash_flow(
        self, date_range: DateRange, *, client_id: uuid.UUID | None
    ) -> CashFlowReport:
        rows = await self._rows(_cash_flow(client_id is not None), date_range, client_id)
        # The range covers at least one day, so there is at least one month.
        head = rows[0]
        return CashFlowReport(
            months=rows,
            average_monthly_burn=head.burn,
            cash_balance=head.balance,
            runway_months=head.runway,
        )

    async def sales_funnel(
        self, date_range: DateRange, *, client_id: uuid.UUID | None
    ) -> SalesFunnel:
        client = client_id is not None
        stages = await self._rows(_funnel_stages(client), date_range, client_id)
        (overall,) = await self._rows(_funnel_overall(client), date_range, client_id)
        return SalesFunnel(stages=stages, overall=overall)

    async def operational_efficiency(
        self, date_range: DateRange, *, client_id: uuid.UUID | None
    ) -> OperationalEfficiency:
        rows = await self._rows(
            _operational_efficiency(client_id is not None), date_range, client_id
        )
        return OperationalEfficiency(totals=rows[-1], months=rows[:-1])
