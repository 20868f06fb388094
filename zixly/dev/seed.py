"""Demo and fixture data, written as the owner role (set-up, not a request path).

The demo tenant gets realistic data: clients in different industries, two years of daily
financials with seasonality and noise, deals moving through pipeline stages with values,
task-completion and other custom metrics with embeddings, and two integrations.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from zixly.domain.analytics import PIPELINE
from zixly.domain.embeddings import HashingEmbedder, metric_text


@dataclass(frozen=True)
class SeededUser:
    id: uuid.UUID
    email: str
    role: str | None
    is_staff: bool


async def ensure_tenant(
    conn: asyncpg.Connection, slug: str, name: str, industry: str | None = None
) -> uuid.UUID:
    row = await conn.fetchrow(
        "INSERT INTO tenants (slug, name, industry) VALUES ($1, $2, $3) "
        "ON CONFLICT (slug) DO UPDATE SET name = excluded.name RETURNING id",
        slug,
        name,
        industry,
    )
    assert row is not None
    return uuid.UUID(str(row["id"]))


async def ensure_user(
    conn: asyncpg.Connection,
    email: str,
    *,
    tenant_id: uuid.UUID | None = None,
    role: str | None = None,
    is_staff: bool = False,
    display_name: str | None = None,
) -> SeededUser:
    user_id = await conn.fetchval("SELECT zixly_ensure_user($1)", email)
    await conn.execute(
        "UPDATE users SET is_staff = $2, display_name = coalesce($3, display_name) WHERE id = $1",
        user_id,
        is_staff,
        display_name,
    )
    if tenant_id is not None and role is not None:
        await conn.execute(
            "INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, $3) "
            "ON CONFLICT (tenant_id, user_id) DO UPDATE SET role = excluded.role",
            tenant_id,
            user_id,
            role,
        )
    return SeededUser(uuid.UUID(str(user_id)), email.lower(), role, is_staff)


async def ensure_client(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, client_id: str, name: str, industry: str
) -> uuid.UUID:
    value = await conn.fetchval(
        "INSERT INTO client_kpis (tenant_id, client_id, client_name, industry) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, client_id) "
        "DO UPDATE SET client_name = excluded.client_name RETURNING id",
        tenant_id,
        client_id,
        name,
        industry,
    )
    return uuid.UUID(str(value))


def daily_financials(
    rng: random.Random,
    tenant_id: uuid.UUID,
    client_kpi_id: uuid.UUID,
    start: dt.date,
    days: int,
    base_revenue: float,
    source: str = "xero",
) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        season = 1 + 0.25 * math.sin(2 * math.pi * (day.timetuple().tm_yday / 365.25))
        weekday = 0.55 if day.weekday() >= 5 else 1.0
        growth = 1 + 0.15 * offset / 365
        revenue = round(base_revenue * season * weekday * growth * rng.uniform(0.8, 1.2), 2)
        expenses = round(base_revenue * 0.78 * rng.uniform(0.85, 1.15), 2)
        net = round(revenue - expenses, 2)
        cash = round(net * rng.uniform(0.7, 1.1) - rng.choice((0, 0, 0, 450.0)), 2)
        rows.append(
            (
                tenant_id,
                client_kpi_id,
                day,
                Decimal(str(revenue)),
                Decimal(str(expenses)),
                Decimal(str(net)),
                Decimal(str(cash)),
                "AUD",
                source,
            )
        )
    return rows


FINANCIAL_COLUMNS = (
    "tenant_id",
    "client_kpi_id",
    "record_date",
    "revenue",
    "expenses",
    "net_profit",
    "cash_flow",
    "currency",
    "source_system",
)


async def copy_financials(conn: asyncpg.Connection, rows: list[tuple[object, ...]]) -> None:
    """Bulk-load financials. COPY refuses a table whose row-level security applies to the
    writer, as it does to the owner since migration 0006 (FORCE, owner-session policy), so
    the rows are copied into a temporary table and inserted from there."""
    columns = ", ".join(FINANCIAL_COLUMNS)
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE zixly_financials_load ON COMMIT DROP AS "  # noqa: S608 (constants)
            f"SELECT {columns} FROM public.financials WITH NO DATA"
        )
        await conn.copy_records_to_table(
            "zixly_financials_load", records=rows, columns=list(FINANCIAL_COLUMNS)
        )
        await conn.execute(
            f"INSERT INTO public.financials ({columns}) "  # noqa: S608 (constant columns)
            f"SELECT {columns} FROM pg_temp.zixly_financials_load"
        )
        await conn.execute("DROP TABLE pg_temp.zixly_financials_load")


async def seed_demo(conn: asyncpg.Connection, *, today: dt.date | None = None) -> uuid.UUID:
    """Create (once) the demo tenant with its users and data; return its id."""
    today = today or dt.date.today()
    tenant_id = await ensure_tenant(
        conn, "demo", "Harbourside Bookkeeping", "professional-services"
    )
    already = await conn.fetchval("SELECT count(*) FROM financials WHERE tenant_id = $1", tenant_id)
    await ensure_user(conn, "staff@zixly.dev", is_staff=True, display_name="Zixly Staff")
    for role in ("ADMIN", "EDITOR", "VIEWER"):
        await ensure_user(
            conn,
            f"{role.lower()}@demo.zixly.dev",
            tenant_id=tenant_id,
            role=role,
            display_name=f"Demo {role.title()}",
        )
    if already:
        return tenant_id
    rng = random.Random(20261127)  # noqa: S311 - demo data, not security
    start = today - dt.timedelta(days=730)
    clients = [
        ("XERO-ORG-1001", "Bondi Bean Roasters", "hospitality", 3200.0),
        ("XERO-ORG-1002", "Parramatta Plumbing Co", "trades", 5400.0),
        ("XERO-ORG-1003", "Fremantle Physio Clinic", "health", 4100.0),
        ("XERO-ORG-1004", "Hobart Harbour Tours", "tourism", 2600.0),
    ]
    embedder = HashingEmbedder()
    async with conn.transaction():
        for external_id, name, industry, base in clients:
            client_kpi_id = await ensure_client(conn, tenant_id, external_id, name, industry)
            await copy_financials(
                conn, daily_financials(rng, tenant_id, client_kpi_id, start, 731, base)
            )
            await conn.executemany(
                "INSERT INTO lead_events (tenant_id, client_kpi_id, event_date, lead_id, stage, "
                "value, status, source_system) VALUES ($1, $2, $3, $4, $5, $6, $7, 'hubspot')",
                _lead_events(rng, tenant_id, client_kpi_id, start),
            )
            await conn.executemany(
                "INSERT INTO custom_metrics (tenant_id, client_kpi_id, metric_name, metric_value, "
                "unit, record_date, source_system, embedding) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::vector)",
                _metrics(rng, embedder, tenant_id, client_kpi_id, start),
            )
        await conn.execute(
            "INSERT INTO integrations (tenant_id, provider, status, last_sync_at) VALUES "
            "($1, 'xero', 'ACTIVE', now() - interval '2 hours'), ($1, 'hubspot', 'PENDING', NULL) "
            "ON CONFLICT DO NOTHING",
            tenant_id,
        )
    return tenant_id


def _lead_events(
    rng: random.Random, tenant_id: uuid.UUID, client_kpi_id: uuid.UUID, start: dt.date
) -> list[tuple[object, ...]]:
    events: list[tuple[object, ...]] = []
    for n in range(30):
        lead = f"deal-{client_kpi_id.hex[:6]}-{n:03d}"
        when = dt.datetime.combine(
            start + dt.timedelta(days=rng.randint(0, 700)), dt.time(9, 30), tzinfo=dt.UTC
        )
        value = Decimal(str(round(rng.uniform(1500, 40000), 2)))
        # Each deal advances through the pipeline, dropping out with some probability.
        for stage in PIPELINE:
            final = stage == "closed-won"
            lost = not final and rng.random() < 0.28
            status = "won" if final else ("lost" if lost else "active")
            events.append((tenant_id, client_kpi_id, when, lead, stage, value, status))
            if lost:
                break
            when += dt.timedelta(days=rng.randint(2, 21))
            value = Decimal(str(round(float(value) * rng.uniform(0.9, 1.1), 2)))
    return events


METRICS = (
    ("tasks_completed", "count", "Asana tasks completed", 6.0),
    ("tasks_created", "count", "Asana tasks created", 7.0),
    ("task_cycle_days", "days", "average days from task creation to completion", 3.5),
    ("customer_satisfaction", "percent", "customer satisfaction survey score", 86.0),
    ("project_delivery_days", "days", "days to deliver a project", 18.0),
)


def _metrics(
    rng: random.Random,
    embedder: HashingEmbedder,
    tenant_id: uuid.UUID,
    client_kpi_id: uuid.UUID,
    start: dt.date,
) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for week in range(104):
        when = dt.datetime.combine(start + dt.timedelta(weeks=week), dt.time(0, 0), tzinfo=dt.UTC)
        for name, unit, description, base in METRICS:
            value = Decimal(str(round(base * rng.uniform(0.7, 1.3), 4)))
            vector = embedder.embed(metric_text(name, unit, f"{description} {value}"))
            rows.append(
                (
                    tenant_id,
                    client_kpi_id,
                    name,
                    value,
                    unit,
                    when,
                    "asana",
                    "[" + ",".join(f"{v:.6f}" for v in vector) + "]",
                )
            )
    return rows
