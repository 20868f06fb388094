"""Analytics queries, checked against totals computed here in Python from known rows."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import World, gql
from zixly.dev.seed import copy_financials

UTC = dt.UTC
D = Decimal

SUMMARY = """
query($range: DateRangeInput!, $granularity: Granularity!, $clientId: ID) {
  financialSummary(range: $range, granularity: $granularity, clientId: $clientId) {
    periodStart periodEnd revenue expenses netProfit cashFlow recordCount
  }
}"""

FUNNEL = """
query($range: DateRangeInput!, $clientId: ID) {
  salesFunnel(range: $range, clientId: $clientId) {
    stages { stage count value conversionRate }
    overall { totalLeads won lost winRate }
  }
}"""

CASH = """
query($range: DateRangeInput!, $clientId: ID) {
  cashFlow(range: $range, clientId: $clientId) {
    months { month netCashFlow }
    averageMonthlyBurn cashBalance runwayMonths
  }
}"""

EFFICIENCY = """
query($range: DateRangeInput!, $clientId: ID) {
  operationalEfficiency(range: $range, clientId: $clientId) {
    tasksCompleted tasksCreated completionRate averageCycleDays
    months { month tasksCompleted tasksCreated completionRate averageCycleDays }
  }
}"""

FIGURES = ("revenue", "expenses", "net_profit", "cash_flow")


def span(first: dt.date, last: dt.date) -> Iterator[dt.date]:
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def figures(day: dt.date, salt: int) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """Deterministic, varied daily figures (cents included)."""
    n = day.toordinal() % 97 + salt
    revenue = D(f"{100 + n}.{n % 100:02d}")
    expenses = D(f"{40 + n % 13}.{(n * 7) % 100:02d}")
    net = revenue - expenses
    cash = net - D("55.50") * (n % 4)
    return revenue, expenses, net, cash


async def add_financials(
    owner: asyncpg.Connection,
    tenant_id: uuid.UUID,
    client_id: uuid.UUID,
    days: list[dt.date],
    salt: int = 0,
) -> dict[dt.date, tuple[Decimal, ...]]:
    rows = {day: figures(day, salt) for day in days}
    await copy_financials(
        owner,
        [(tenant_id, client_id, day, *values, "AUD", "manual") for day, values in rows.items()],
    )
    return rows


def period_start(day: dt.date, granularity: str) -> dt.date:
    if granularity == "DAY":
        return day
    if granularity == "WEEK":
        return day - dt.timedelta(days=day.weekday())
    if granularity == "MONTH":
        return day.replace(day=1)
    if granularity == "QUARTER":
        return dt.date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    return dt.date(day.year, 1, 1)


def next_start(start: dt.date, granularity: str) -> dt.date:
    if granularity == "DAY":
        return start + dt.timedelta(days=1)
    if granularity == "WEEK":
        return start + dt.timedelta(days=7)
    months = {"MONTH": 1, "QUARTER": 3, "YEAR": 12}[granularity]
    index = start.year * 12 + start.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def expected_summary(
    data: dict[dt.date, tuple[Decimal, ...]] | list[tuple[dt.date, tuple[Decimal, ...]]],
    first: dt.date,
    last: dt.date,
    granularity: str,
) -> list[dict[str, Any]]:
    records = list(data.items()) if isinstance(data, dict) else data
    periods = []
    start = period_start(first, granularity)
    while start <= last:
        following = next_start(start, granularity)
        lo, hi = max(start, first), min(following - dt.timedelta(days=1), last)
        inside = [values for day, values in records if lo <= day <= hi]
        totals = [sum((values[i] for values in inside), D("0.00")) for i in range(4)]
        periods.append(
            {
                "periodStart": lo.isoformat(),
                "periodEnd": hi.isoformat(),
                **{name: totals[i] for i, name in enumerate(FIGURES)},
                "recordCount": len(inside),
            }
        )
        start = following
    return periods


def as_numbers(periods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    converted = []
    for period in periods:
        row = dict(period)
        for snake in FIGURES:
            camel = {"net_profit": "netProfit", "cash_flow": "cashFlow"}.get(snake, snake)
            row[snake] = D(row.pop(camel))
        converted.append(row)
    return converted


def merged(*parts: dict[dt.date, tuple[Decimal, ...]]) -> list[tuple[dt.date, tuple[Decimal, ...]]]:
    """The records of several clients (a day may appear once per client)."""
    return [record for part in parts for record in part.items()]


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") is None, body
    [error] = body["errors"]
    return dict(error["extensions"])


@pytest.fixture
async def books(owner: asyncpg.Connection, world: World) -> dict[str, Any]:
    """A tenant with two clients' daily financials, and a noisy neighbour tenant."""
    tenant = await world.tenant("fin")
    first = await add_financials(
        owner,
        tenant.id,
        tenant.client_ids[0],
        list(span(dt.date(2024, 10, 1), dt.date(2025, 6, 30))),
    )
    second = await add_financials(
        owner,
        tenant.id,
        tenant.client_ids[1],
        list(span(dt.date(2025, 2, 1), dt.date(2025, 2, 28))),
        salt=11,
    )
    other = await world.tenant("fin-other")
    await add_financials(
        owner, other.id, other.client_ids[0], list(span(dt.date(2024, 1, 1), dt.date(2025, 12, 31)))
    )
    return {"tenant": tenant, "first": first, "second": second}


async def summary(
    client: httpx.AsyncClient,
    world: World,
    email: str,
    first: str,
    last: str,
    granularity: str,
    client_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    return await gql(
        client,
        SUMMARY,
        {
            "range": {"start": first, "end": last},
            "granularity": granularity,
            "clientId": str(client_id) if client_id else None,
        },
        headers=world.headers(email),
    )


@pytest.mark.parametrize(
    ("first", "last", "granularity"),
    [
        ("2025-01-15", "2025-07-10", "MONTH"),
        ("2025-02-26", "2025-03-02", "DAY"),
        ("2024-11-20", "2025-02-10", "YEAR"),
    ],
)
async def test_financial_summary_matches_python_totals(
    client: httpx.AsyncClient,
    world: World,
    books: dict[str, Any],
    first: str,
    last: str,
    granularity: str,
) -> None:
    tenant = books["tenant"]
    body = await summary(client, world, tenant.viewer, first, last, granularity)
    expected = expected_summary(
        merged(books["first"], books["second"]),
        dt.date.fromisoformat(first),
        dt.date.fromisoformat(last),
        granularity,
    )
    assert as_numbers(body["data"]["financialSummary"]) == expected
    assert len(expected) > 1


async def test_financial_summary_month_fills_gaps_and_clips(
    client: httpx.AsyncClient, world: World, books: dict[str, Any]
) -> None:
    tenant = books["tenant"]
    body = await summary(client, world, tenant.viewer, "2025-06-20", "2025-08-05", "MONTH")
    periods = body["data"]["financialSummary"]
    assert [(p["periodStart"], p["periodEnd"], p["recordCount"]) for p in periods] == [
        ("2025-06-20", "2025-06-30", 11),
        ("2025-07-01", "2025-07-31", 0),
        ("2025-08-01", "2025-08-05", 0),
    ]
    # Empty periods report zeros at money scale, not nulls.
    assert periods[1]["revenue"] == "0.00"
    assert periods[2]["cashFlow"] == "0.00"


async def test_week_periods_start_on_monday(
    client: httpx.AsyncClient, world: World, books: dict[str, Any]
) -> None:
    tenant = books["tenant"]
    # 2025-03-01 is a Saturday, 2025-03-17 a Monday.
    body = await summary(client, world, tenant.viewer, "2025-03-01", "2025-03-17", "WEEK")
    periods = body["data"]["financialSummary"]
    assert [(p["periodStart"], p["periodEnd"], p["recordCount"]) for p in periods] == [
        ("2025-03-01", "2025-03-02", 2),
        ("2025-03-03", "2025-03-09", 7),
        ("2025-03-10", "2025-03-16", 7),
        ("2025-03-17", "2025-03-17", 1),
    ]
    data = books["first"]
    monday = dt.date(2025, 3, 3)
    week = [monday + dt.timedelta(days=n) for n in range(7)]
    assert D(periods[1]["revenue"]) == sum(data[d][0] for d in week)
    assert D(periods[1]["cashFlow"]) == sum(data[d][3] for d in week)
    assert as_numbers(periods) == expected_summary(
        data, dt.date(2025, 3, 1), dt.date(2025, 3, 17), "WEEK"
    )


async def test_quarter_grouping(
    client: httpx.AsyncClient, world: World, books: dict[str, Any]
) -> None:
    tenant = books["tenant"]
    body = await summary(client, world, tenant.viewer, "2024-11-01", "2025-05-31", "QUARTER")
    periods = body["data"]["financialSummary"]
    assert [(p["periodStart"], p["periodEnd"], p["recordCount"]) for p in periods] == [
        ("2024-11-01", "2024-12-31", 61),
        ("2025-01-01", "2025-03-31", 90 + 28),
        ("2025-04-01", "2025-05-31", 61),
    ]
    both = merged(books["first"], books["second"])
    q1 = [v for d, v in both if dt.date(2025, 1, 1) <= d <= dt.date(2025, 3, 31)]
    assert D(periods[1]["netProfit"]) == sum(v[2] for v in q1)
    assert as_numbers(periods) == expected_summary(
        both, dt.date(2024, 11, 1), dt.date(2025, 5, 31), "QUARTER"
    )


async def test_client_filter(
    client: httpx.AsyncClient, world: World, books: dict[str, Any]
) -> None:
    tenant = books["tenant"]
    body = await summary(
        client, world, tenant.viewer, "2025-01-01", "2025-03-31", "MONTH", tenant.client_ids[1]
    )
    periods = body["data"]["financialSummary"]
    assert [p["recordCount"] for p in periods] == [0, 28, 0]
    assert as_numbers(periods) == expected_summary(
        books["second"], dt.date(2025, 1, 1), dt.date(2025, 3, 31), "MONTH"
    )


@pytest.mark.parametrize("query", [SUMMARY, FUNNEL, CASH, EFFICIENCY])
@pytest.mark.parametrize(
    ("first", "last"), [("2025-03-02", "2025-03-01"), ("2020-01-01", "2025-01-01")]
)
async def test_reversed_or_oversized_range_is_rejected(
    client: httpx.AsyncClient, world: World, query: str, first: str, last: str
) -> None:
    tenant = await world.tenant("range")
    body = await gql(
        client,
        query,
        {"range": {"start": first, "end": last}, "granularity": "DAY"},
        headers=world.headers(tenant.viewer),
    )
    extensions = error_of(body)
    assert extensions["code"] == "VALIDATION_ERROR"
    assert extensions["field"] == "range"


def at(day: str, hour: int = 10, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour, minute), tzinfo=UTC)


async def add_events(
    owner: asyncpg.Connection,
    tenant_id: uuid.UUID,
    client_id: uuid.UUID,
    lead: str,
    events: list[tuple[dt.datetime, str, str, str]],
) -> None:
    await owner.executemany(
        "INSERT INTO lead_events (tenant_id, client_kpi_id, event_date, lead_id, stage, value, "
        "status, source_system) VALUES ($1, $2, $3, $4, $5, $6, $7, 'hubspot')",
        [
            (tenant_id, client_id, when, lead, stage, D(value), status)
            for when, stage, value, status in events
        ],
    )


async def test_sales_funnel(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("funnel")
    c0, c1 = tenant.client_ids
    leads = {
        # Goes all the way.
        "L1": [
            (at("2025-03-02"), "prospect", "1000", "active"),
            (at("2025-03-05"), "qualified", "1100", "active"),
            (at("2025-03-09"), "proposal", "1200", "active"),
            (at("2025-03-12"), "negotiation", "1250", "active"),
            (at("2025-03-20"), "closed-won", "1300", "won"),
        ],
        # Drops out at the proposal.
        "L2": [
            (at("2025-03-03"), "prospect", "500", "active"),
            (at("2025-03-06"), "qualified", "550", "active"),
            (at("2025-03-10"), "proposal", "600", "lost"),
        ],
        # Re-valued while a prospect (the latest value counts), then lost.
        "L3": [
            (at("2025-03-04"), "prospect", "200", "active"),
            (at("2025-03-08"), "prospect", "250", "active"),
            (at("2025-03-15"), "qualified", "260", "lost"),
        ],
        # Became a prospect before the range.
        "L4": [
            (at("2025-02-20"), "prospect", "900", "active"),
            (at("2025-03-02"), "qualified", "950", "active"),
        ],
        # Qualified just after the range's end (UTC).
        "L5": [
            (at("2025-03-31", 23, 30), "prospect", "100", "active"),
            (at("2025-04-01", 0, 0), "qualified", "120", "active"),
        ],
        # Stages a provider invented.
        "L6": [(at("2025-03-07"), "on-hold", "300", "active")],
        "L7": [
            (at("2025-03-08"), "demo-booked", "400", "active"),
            (at("2025-03-09"), "on-hold", "410", "active"),
        ],
    }
    for lead, events in leads.items():
        await add_events(owner, tenant.id, c0, lead, events)
    # Same lead id, other client: a different lead.
    await add_events(
        owner,
        tenant.id,
        c1,
        "L1",
        [
            (at("2025-03-05"), "prospect", "700", "active"),
            (at("2025-03-25"), "closed-won", "800", "won"),
        ],
    )
    other = await world.tenant("funnel-other")
    await add_events(
        owner, other.id, other.client_ids[0], "X", [(at("2025-03-05"), "prospect", "5", "won")]
    )

    variables = {"range": {"start": "2025-03-01", "end": "2025-03-31"}}
    body = await gql(client, FUNNEL, variables, headers=world.headers(tenant.viewer))
    funnel = body["data"]["salesFunnel"]
    assert funnel["stages"] == [
        {"stage": "prospect", "count": 5, "value": "2550.00", "conversionRate": 1.0},
        {"stage": "qualified", "count": 4, "value": "2860.00", "conversionRate": 4 / 5},
        {"stage": "proposal", "count": 2, "value": "1800.00", "conversionRate": 2 / 4},
        {"stage": "negotiation", "count": 1, "value": "1250.00", "conversionRate": 1 / 2},
        {"stage": "closed-won", "count": 2, "value": "2100.00", "conversionRate": 2 / 1},
        {"stage": "on-hold", "count": 2, "value": "710.00", "conversionRate": None},
        {"stage": "demo-booked", "count": 1, "value": "400.00", "conversionRate": None},
    ]
    # 8 leads; won: L1 and c1's L1; lost: L2, L3.
    assert funnel["overall"] == {"totalLeads": 8, "won": 2, "lost": 2, "winRate": 0.5}

    body = await gql(
        client, FUNNEL, {**variables, "clientId": str(c1)}, headers=world.headers(tenant.viewer)
    )
    funnel = body["data"]["salesFunnel"]
    assert funnel["stages"] == [
        {"stage": "prospect", "count": 1, "value": "700.00", "conversionRate": 1.0},
        {"stage": "qualified", "count": 0, "value": "0.00", "conversionRate": 0.0},
        {"stage": "proposal", "count": 0, "value": "0.00", "conversionRate": None},
        {"stage": "negotiation", "count": 0, "value": "0.00", "conversionRate": None},
        {"stage": "closed-won", "count": 1, "value": "800.00", "conversionRate": None},
    ]
    assert funnel["overall"] == {"totalLeads": 1, "won": 1, "lost": 0, "winRate": 1.0}


async def add_cash(
    owner: asyncpg.Connection,
    tenant_id: uuid.UUID,
    client_id: uuid.UUID,
    flows: dict[str, str],
) -> None:
    zero = D("0.00")
    await copy_financials(
        owner,
        [
            (
                tenant_id,
                client_id,
                dt.date.fromisoformat(day),
                zero,
                zero,
                zero,
                D(cash),
                "AUD",
                "manual",
            )
            for day, cash in flows.items()
        ],
    )


async def test_cash_flow_burn_and_runway(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("cash", clients=3)
    burning, earning, broke = tenant.client_ids
    await add_cash(
        owner,
        tenant.id,
        burning,
        {
            "2024-12-10": "5000.00",  # before the range: in the balance only
            "2025-01-05": "-1000.00",
            "2025-01-20": "-500.50",
            "2025-03-03": "300.00",
            "2025-04-01": "-2000.25",
            "2025-05-02": "-100.00",  # after the range: nowhere
        },
    )
    await add_cash(owner, tenant.id, earning, {"2025-01-10": "50.00", "2025-03-10": "25.00"})
    await add_cash(owner, tenant.id, broke, {"2025-02-10": "-100.00"})
    headers = world.headers(tenant.viewer)
    variables: dict[str, Any] = {"range": {"start": "2025-01-01", "end": "2025-04-30"}}

    body = await gql(client, CASH, {**variables, "clientId": str(burning)}, headers=headers)
    report = body["data"]["cashFlow"]
    assert report["months"] == [
        {"month": "2025-01-01", "netCashFlow": "-1500.50"},
        {"month": "2025-02-01", "netCashFlow": "0.00"},
        {"month": "2025-03-01", "netCashFlow": "300.00"},
        {"month": "2025-04-01", "netCashFlow": "-2000.25"},
    ]
    burn = ((D("1500.50") + D("2000.25")) / 2).quantize(D("0.01"))  # 1750.375 -> 1750.38
    balance = D("5000.00") - D("1500.50") + D("300.00") - D("2000.25")
    assert D(report["averageMonthlyBurn"]) == burn == D("1750.38")
    assert D(report["cashBalance"]) == balance
    assert report["runwayMonths"] == float((balance / burn).quantize(D("0.01"))) == 1.03

    body = await gql(client, CASH, {**variables, "clientId": str(earning)}, headers=headers)
    report = body["data"]["cashFlow"]
    assert [m["netCashFlow"] for m in report["months"]] == ["50.00", "0.00", "25.00", "0.00"]
    assert report["averageMonthlyBurn"] == "0.00"
    assert report["cashBalance"] == "75.00"
    assert report["runwayMonths"] is None  # not burning

    body = await gql(client, CASH, {**variables, "clientId": str(broke)}, headers=headers)
    report = body["data"]["cashFlow"]
    assert (report["averageMonthlyBurn"], report["cashBalance"], report["runwayMonths"]) == (
        "100.00",
        "-100.00",
        0.0,
    )

    body = await gql(client, CASH, variables, headers=headers)
    report = body["data"]["cashFlow"]
    assert [m["netCashFlow"] for m in report["months"]] == [
        "-1450.50",
        "-100.00",
        "325.00",
        "-2000.25",
    ]
    burn = ((D("1450.50") + D("100.00") + D("2000.25")) / 3).quantize(D("0.01"))
    balance = D("1799.25") + D("75.00") - D("100.00")
    assert D(report["averageMonthlyBurn"]) == burn
    assert D(report["cashBalance"]) == balance
    assert report["runwayMonths"] == float((balance / burn).quantize(D("0.01")))


async def add_metrics(
    owner: asyncpg.Connection,
    tenant_id: uuid.UUID,
    client_id: uuid.UUID,
    metrics: list[tuple[dt.datetime, str, str]],
) -> None:
    await owner.executemany(
        "INSERT INTO custom_metrics (tenant_id, client_kpi_id, metric_name, metric_value, "
        "record_date, source_system) VALUES ($1, $2, $3, $4, $5, 'asana')",
        [(tenant_id, client_id, name, D(value), when) for when, name, value in metrics],
    )


async def test_operational_efficiency(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("ops")
    c0, c1 = tenant.client_ids
    await add_metrics(
        owner,
        tenant.id,
        c0,
        [
            (at("2025-01-06"), "tasks_completed", "5"),
            (at("2025-01-06"), "tasks_created", "8"),
            (at("2025-01-06"), "task_cycle_days", "3.0"),
            (at("2025-01-13"), "tasks_completed", "7"),
            (at("2025-01-13"), "tasks_created", "6"),
            (at("2025-01-13"), "task_cycle_days", "4.5"),
            (at("2025-01-13"), "customer_satisfaction", "91"),
            (at("2025-03-03"), "tasks_completed", "2"),
            (at("2025-03-03"), "task_cycle_days", "2.25"),
            (at("2025-03-31", 23, 59), "tasks_completed", "1"),
            (at("2025-04-01", 0, 0), "tasks_completed", "100"),
        ],
    )
    await add_metrics(
        owner,
        tenant.id,
        c1,
        [
            (at("2025-01-06"), "tasks_completed", "10"),
            (at("2025-01-06"), "tasks_created", "10"),
            (at("2025-01-06"), "task_cycle_days", "1.0"),
        ],
    )
    headers = world.headers(tenant.viewer)
    variables: dict[str, Any] = {"range": {"start": "2025-01-01", "end": "2025-03-31"}}
    body = await gql(client, EFFICIENCY, variables, headers=headers)
    report = body["data"]["operationalEfficiency"]
    assert report["tasksCompleted"] == "25.0000"
    assert report["tasksCreated"] == "24.0000"
    assert report["completionRate"] == pytest.approx(25 / 24, rel=1e-12)
    assert report["averageCycleDays"] == pytest.approx((3.0 + 4.5 + 2.25 + 1.0) / 4, rel=1e-12)
    months = report["months"]
    assert [(m["month"], m["tasksCompleted"], m["tasksCreated"]) for m in months] == [
        ("2025-01-01", "22.0000", "24.0000"),
        ("2025-02-01", "0.0000", "0.0000"),
        ("2025-03-01", "3.0000", "0.0000"),
    ]
    assert months[0]["completionRate"] == pytest.approx(22 / 24, rel=1e-12)
    assert months[0]["averageCycleDays"] == pytest.approx((3.0 + 4.5 + 1.0) / 3, rel=1e-12)
    assert (months[1]["completionRate"], months[1]["averageCycleDays"]) == (None, None)
    assert (months[2]["completionRate"], months[2]["averageCycleDays"]) == (None, 2.25)

    body = await gql(client, EFFICIENCY, {**variables, "clientId": str(c1)}, headers=headers)
    report = body["data"]["operationalEfficiency"]
    assert (report["tasksCompleted"], report["tasksCreated"], report["completionRate"]) == (
        "10.0000",
        "10.0000",
        1.0,
    )
    assert [m["tasksCompleted"] for m in report["months"]] == ["10.0000", "0.0000", "0.0000"]


async def test_integrations_expose_no_token_material(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("integ")
    other = await world.tenant("integ-other")
    access = "v1.key-2025.QUNDRVNTLVNFQ1JFVA"
    refresh = "v1.key-2025.UkVGUkVTSC1TRUNSRVQ"
    synced = dt.datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
    expires = dt.datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    await owner.execute(
        "INSERT INTO integrations (tenant_id, provider, status, access_token_ciphertext, "
        "refresh_token_ciphertext, expires_at, last_sync_at, metadata) VALUES "
        "($1, 'xero', 'ACTIVE', $2, $3, $4, $5, '{\"org\": \"Acme\"}'), "
        "($1, 'hubspot', 'ERROR', NULL, NULL, NULL, NULL, NULL), "
        "($6, 'asana', 'ACTIVE', $2, $3, $4, $5, NULL)",
        tenant.id,
        access,
        refresh,
        expires,
        synced,
        other.id,
    )
    response = await client.post(
        "/graphql",
        json={"query": "{ integrations { provider status lastSyncAt expiresAt } }"},
        headers=world.headers(tenant.viewer),
    )
    assert response.status_code == 200
    for material in (access, refresh, "QUNDRVNT", "UkVGUkVTSC", "Acme"):
        assert material not in response.text
    rows = response.json()["data"]["integrations"]
    assert [(r["provider"], r["status"]) for r in rows] == [
        ("hubspot", "ERROR"),
        ("xero", "ACTIVE"),
    ]
    assert rows[0]["lastSyncAt"] is None and rows[0]["expiresAt"] is None
    assert dt.datetime.fromisoformat(rows[1]["lastSyncAt"]) == synced
    assert dt.datetime.fromisoformat(rows[1]["expiresAt"]) == expires

    body = await gql(
        client,
        '{ __type(name: "Integration") { fields { name } } }',
        headers=world.headers(tenant.viewer),
    )
    fields = {f["name"] for f in body["data"]["__type"]["fields"]}
    assert fields == {
        "provider",
        "status",
        "lastSyncAt",
        "expiresAt",
        # sync health (zixly.monitor); lastError is stored scrubbed of credentials
        "consecutiveFailures",
        "lastCheckedAt",
        "lastFailureAt",
        "lastError",
    }
    body = await gql(
        client,
        "{ integrations { accessTokenCiphertext } }",
        headers=world.headers(tenant.viewer),
    )
    assert "Cannot query field 'accessTokenCiphertext'" in body["errors"][0]["message"]
