"""Analytics: financial summaries, the sales funnel, cash flow and runway, task efficiency."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Annotated, Any

import strawberry

from zixly.domain import analytics
from zixly.domain.analytics import AnalyticsRepository
from zixly.domain.ids import optional_id
from zixly.domain.ranges import DateRange
from zixly.graphql.context import Info
from zixly.graphql.inputs import DateRangeInput

# The heavy reports: each runs with report_statement_timeout_ms instead of the request's
# short statement timeout (Context.report_session), as /export/financials.csv does.
REPORT_FIELDS = frozenset({"financialSummary", "salesFunnel", "cashFlow", "operationalEfficiency"})

ClientFilter = Annotated[
    strawberry.ID | None,
    strawberry.argument(description="Only this client's data (all clients when omitted)."),
]


@strawberry.enum(description="Calendar periods (UTC). Weeks are ISO weeks, starting on Monday.")
class Granularity(enum.Enum):
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    QUARTER = "QUARTER"
    YEAR = "YEAR"


@strawberry.type(
    description="Financial totals of one period. Every period overlapping the range is "
    "listed; periods without records have zero totals and recordCount 0."
)
class FinancialPeriod:
    period_start: dt.date = strawberry.field(
        description="The period's first day, or the range's start if that is later."
    )
    period_end: dt.date = strawberry.field(
        description="The period's last day, or the range's end if that is earlier."
    )
    revenue: Decimal
    expenses: Decimal
    net_profit: Decimal
    cash_flow: Decimal
    record_count: int = strawberry.field(description="Daily records summed into the period.")


@strawberry.type(description="One stage of the sales funnel.")
class FunnelStage:
    stage: str
    count: int = strawberry.field(
        description="Distinct leads with an event at this stage in the range."
    )
    value: Decimal = strawberry.field(
        description="Sum over those leads of each lead's latest value at this stage."
    )
    conversion_rate: float | None = strawberry.field(
        description="count / the previous pipeline stage's count; 1.0 for the first stage; "
        "null when the previous stage's count is 0, and for stages outside the pipeline."
    )


@strawberry.type(description="Leads with an event in the range, by their latest status there.")
class FunnelOverall:
    total_leads: int
    won: int = strawberry.field(description="Leads whose latest status is 'won'.")
    lost: int = strawberry.field(description="Leads whose latest status is 'lost'.")
    win_rate: float | None = strawberry.field(
        description="won / (won + lost): the share of closed leads that were won; "
        "null when none closed."
    )


@strawberry.type
class SalesFunnel:
    stages: list[FunnelStage] = strawberry.field(
        description="The pipeline's stages in order (prospect, qualified, proposal, "
        "negotiation, closed-won), then any other stage reported by a provider, "
        "most leads first."
    )
    overall: FunnelOverall


@strawberry.type
class CashFlowMonth:
    month: dt.date = strawberry.field(description="The first day of the calendar month.")
    net_cash_flow: Decimal = strawberry.field(
        description="Sum of the month's daily cash flow inside the range."
    )


@strawberry.type(description="Monthly net cash flow, burn rate and runway.")
class CashFlow:
    months: list[CashFlowMonth] = strawberry.field(
        description="Every calendar month overlapping the range, oldest first."
    )
    average_monthly_burn: Decimal = strawberry.field(
        description="The average of -netCashFlow over the months whose net is negative "
        "(rounded to cents); 0 when no month is negative."
    )
    cash_balance: Decimal = strawberry.field(
        description="Cumulative cash flow: the sum of all cash flow up to the range's end, "
        "including days before its start."
    )
    runway_months: float | None = strawberry.field(
        description="cashBalance / averageMonthlyBurn (2 decimals): months until the "
        "balance runs out at the average burn. Null when averageMonthlyBurn is 0 (not "
        "burning); 0 when cashBalance <= 0."
    )


@strawberry.interface(description="Task completion figures of a period.")
class TaskFigures:
    tasks_completed: Decimal = strawberry.field(description="Sum of tasks_completed.")
    tasks_created: Decimal = strawberry.field(description="Sum of tasks_created.")
    completion_rate: float | None = strawberry.field(
        description="tasksCompleted / tasksCreated; null when no task was created."
    )
    average_cycle_days: float | None = strawberry.field(
        description="Average of the task_cycle_days values; null when there are none."
    )


@strawberry.type
class TaskMonth(TaskFigures):
    month: dt.date = strawberry.field(description="The first day of the calendar month.")


@strawberry.type(
    description="Task completion, from the custom metrics tasks_completed, tasks_created "
    "and task_cycle_days. Totals cover the whole range."
)
class OperationalEfficiency(TaskFigures):
    months: list[TaskMonth] = strawberry.field(
        description="Every calendar month overlapping the range, oldest first."
    )


def _inputs(
    info: Info, range: DateRangeInput, client_id: strawberry.ID | None
) -> tuple[uuid.UUID, DateRange, uuid.UUID | None]:
    """The caller's tenant (any role), the validated range and the optional client filter."""
    ctx = info.context
    return ctx.tenant(), range.checked(ctx), optional_id(client_id, "clientId")


def _task_figures(row: Any) -> dict[str, Any]:
    return {
        "tasks_completed": row.tasks_completed,
        "tasks_created": row.tasks_created,
        "completion_rate": row.completion_rate,
        "average_cycle_days": row.average_cycle_days,
    }


@strawberry.type
class AnalyticsQuery:
    @strawberry.field(description="Financial totals per period of the range, oldest first.")
    async def financial_summary(
        self,
        info: Info,
        range: DateRangeInput,
        granularity: Granularity = Granularity.MONTH,
        client_id: ClientFilter = None,
    ) -> list[FinancialPeriod]:
        tenant_id, date_range, client = _inputs(info, range, client_id)
        async with info.context.report_session() as session:
            rows = await AnalyticsRepository(session, tenant_id).financial_summary(
                date_range, analytics.Granularity[granularity.name], client_id=client
            )
        return [FinancialPeriod(**row._asdict()) for row in rows]

    @strawberry.field(description="Leads through the pipeline's stages in the range.")
    async def sales_funnel(
        self,
        info: Info,
        range: DateRangeInput,
        client_id: ClientFilter = None,
    ) -> SalesFunnel:
        tenant_id, date_range, client = _inputs(info, range, client_id)
        async with info.context.report_session() as session:
            funnel = await AnalyticsRepository(session, tenant_id).sales_funnel(
                date_range, client_id=client
            )
        return SalesFunnel(
            stages=[FunnelStage(**row._asdict()) for row in funnel.stages],
            overall=FunnelOverall(**funnel.overall._asdict()),
        )

    @strawberry.field(description="Monthly net cash flow, burn and runway over the range.")
    async def cash_flow(
        self,
        info: Info,
        range: DateRangeInput,
        client_id: ClientFilter = None,
    ) -> CashFlow:
        tenant_id, date_range, client = _inputs(info, range, client_id)
        async with info.context.report_session() as session:
            report = await AnalyticsRepository(session, tenant_id).cash_flow(
                date_range, client_id=client
            )
        return CashFlow(
            months=[
                CashFlowMonth(month=row.month, net_cash_flow=row.net_cash_flow)
                for row in report.months
            ],
            average_monthly_burn=report.average_monthly_burn,
            cash_balance=report.cash_balance,
            runway_months=report.runway_months,
        )

    @strawberry.field(description="Task completion totals and a monthly series over the range.")
    async def operational_efficiency(
        self,
        info: Info,
        range: DateRangeInput,
        client_id: ClientFilter = None,
    ) -> OperationalEfficiency:
        tenant_id, date_range, client = _inputs(info, range, client_id)
        async with info.context.report_session() as session:
            report = await AnalyticsRepository(session, tenant_id).operational_efficiency(
                date_range, client_id=client
            )
        return OperationalEfficiency(
            months=[TaskMonth(month=row.month, **_task_figures(row)) for row in report.months],
            **_task_figures(report.totals),
        )
