"""One tenant cannot starve another: short statement timeouts (longer for the heavy reports),
per-tenant and per-user caps on concurrent database work, and a typed 503 with Retry-After
when no pooled connection is free.

A slow statement is made real, not simulated: the table owner holds an ACCESS EXCLUSIVE lock
on a table, so every statement reading it waits in PostgreSQL until its statement timeout
cancels it (SQLSTATE 57014, as for any statement running too long), through the production
resolvers and the compiled path.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
from sqlalchemy import text

from tests.conftest import World, make_settings, other_app, plain_dsn, serve_app
from zixly.app import create_app
from zixly.container import Services
from zixly.core.errors import RateLimitedError
from zixly.db.admission import Admission
from zixly.embedded.stack import Endpoints
from zixly.ingest.instance_tokens import issue_instance_token

RANGE = {"start": "2024-01-01", "end": "2024-12-31"}
SUMMARY = (
    "query Summary($range: DateRangeInput!) "
    "{ financialSummary(range: $range) { periodStart revenue } }"
)
LISTING = "query Listing($range: DateRangeInput!) { financials(range: $range, first: 5) { nodes { id } } }"
FUNNEL = "query Funnel($range: DateRangeInput!) { salesFunnel(range: $range) { overall { won } } }"
ME = "query Me { me { email } }"
CLIENTS = "query Clients { clients(first: 10) { nodes { name } } }"


@contextlib.asynccontextmanager
async def locked(endpoints: Endpoints, table: str) -> AsyncIterator[None]:
    """Every statement reading ``table`` waits, as a slow one would, until released."""
    conn = await asyncpg.connect(plain_dsn(endpoints.migrations_database_url))
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await transaction.rollback()
    finally:
        await conn.close()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def assert_typed_retry(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["errors"][0]
    assert error["extensions"]["code"] == code
    assert int(response.headers["retry-after"]) >= 1
    return error


async def test_a_flooding_tenant_leaves_another_tenant_answered_promptly(
    data_dir: Any, endpoints: Endpoints, world: World
) -> None:
    """Thirty clients of one tenant (ten for each of its three users) send its heaviest report
    again and again while every such statement runs until its timeout; another tenant's
    ``me`` and client list stay fast, and every flood answer is typed (429 over the caps,
    503 QUERY_TIMEOUT at the timeout), never a 500."""
    settings = make_settings(data_dir, report_statement_timeout_ms=2000)
    flooder = await world.tenant("flood")
    calm = await world.tenant("calm")
    services = Services.build(
        settings, database_url=endpoints.database_url, redis_url=endpoints.redis_url
    )
    admission = services.db.admission
    assert (admission.tenant_limit, admission.user_limit) == (5, 3)  # of a pool of 20
    flood_answers: list[tuple[int, str | None, str | None]] = []
    stop = asyncio.Event()

    async def flood(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        body = {"query": SUMMARY, "variables": {"range": RANGE}}
        while not stop.is_set():
            response = await client.post("/graphql", json=body, headers=headers)
            errors = response.json().get("errors") or [{}]
            code = errors[0].get("extensions", {}).get("code")
            flood_answers.append((response.status_code, code, response.headers.get("retry-after")))

    calm_latencies: list[float] = []
    calm_statuses: Counter[int] = Counter()
    peak_flood_connections = 0
    try:
        async with (
            serve_app(create_app(services)) as url,
            httpx.AsyncClient(
                base_url=url, timeout=30, limits=httpx.Limits(max_connections=64)
            ) as c,
            locked(endpoints, "financials"),
        ):
            users = (flooder.admin, flooder.editor, flooder.viewer)
            tasks = [asyncio.create_task(flood(c, world.headers(users[n % 3]))) for n in range(30)]
            await asyncio.sleep(0.5)  # the flood is in place: caps full, the rest waiting
            deadline = time.monotonic() + 5.0
            n = 0
            while time.monotonic() < deadline:
                query = ME if n % 2 == 0 else CLIENTS
                started = time.perf_counter()
                response = await c.post(
                    "/graphql", json={"query": query}, headers=world.headers(calm.viewer)
                )
                calm_latencies.append(time.perf_counter() - started)
                calm_statuses[response.status_code] += 1
                assert "errors" not in response.json(), response.text
                peak_flood_connections = max(
                    peak_flood_connections, admission.in_use(f"tenant:{flooder.id}")
                )
                n += 1
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        await services.close()

    p50, p95 = percentile(calm_latencies, 50), percentile(calm_latencies, 95)
    outcomes = Counter((status, code) for status, code, _ in flood_answers)
    print(
        f"\nother tenant while one tenant floods: {len(calm_latencies)} requests, "
        f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max "
        f"{max(calm_latencies) * 1000:.0f} ms (mean {statistics.mean(calm_latencies) * 1000:.0f}"
        f" ms); flood answers {dict(outcomes)}; flooding tenant's peak transactions "
        f"{peak_flood_connections} of a pool of {settings.db_pool_size}"
    )
    assert calm_statuses == Counter({200: len(calm_latencies)})
    assert len(calm_latencies) >= 20
    assert p95 < 1.5, f"p95 {p95:.3f}s"
    # Every flood answer is typed and says when to come back; both limits were reached.
    assert set(outcomes) <= {(429, "RATE_LIMITED"), (503, "QUERY_TIMEOUT")}, outcomes
    assert outcomes[(429, "RATE_LIMITED")] and outcomes[(503, "QUERY_TIMEOUT")]
    assert all(retry is not None and int(retry) >= 1 for _, _, retry in flood_answers)
    assert 1 <= peak_flood_connections <= admission.tenant_limit


async def test_pool_exhaustion_is_a_typed_503_with_retry_after(
    data_dir: Any, endpoints: Endpoints, world: World
) -> None:
    settings = make_settings(data_dir, db_pool_size=2, db_pool_timeout_seconds=0.3)
    tenant = await world.tenant("pool")
    async with other_app(endpoints, settings) as (services, client):
        async with services.db.engine.connect() as first, services.db.engine.connect() as second:
            await first.execute(text("SELECT 1"))
            await second.execute(text("SELECT 1"))
            started = time.monotonic()
            response = await client.post(
                "/graphql", json={"query": ME}, headers=world.headers(tenant.viewer)
            )
            elapsed = time.monotonic() - started
        after = await client.post(
            "/graphql", json={"query": ME}, headers=world.headers(tenant.viewer)
        )
    error = assert_typed_retry(response, 503, "UNAVAILABLE")
    assert response.headers["retry-after"] == "1"
    assert "no database connection was free" in error["message"]
    assert elapsed < 2.0
    assert after.json() == {"data": {"me": {"email": tenant.viewer}}}


async def test_slow_statements_are_cancelled_and_typed_reports_get_longer(
    data_dir: Any, endpoints: Endpoints, world: World
) -> None:
    """A listing runs under the short statement timeout, the heavy reports (the analytics
    queries, compiled or not, and the CSV export) under the longer one; past either the
    answer is 503 QUERY_TIMEOUT with Retry-After, not an INTERNAL 500."""
    settings = make_settings(data_dir, statement_timeout_ms=200, report_statement_timeout_ms=1200)
    tenant = await world.tenant("slow")
    headers = world.headers(tenant.viewer)

    async def timed(request: Any) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = await request
        return response, time.monotonic() - started

    async with other_app(endpoints, settings) as (_, client):
        async with locked(endpoints, "financials"):
            listing, listing_s = await timed(
                client.post(
                    "/graphql",
                    json={"query": LISTING, "variables": {"range": RANGE}},
                    headers=headers,
                )
            )
            summary, summary_s = await timed(
                client.post(
                    "/graphql",
                    json={"query": SUMMARY, "variables": {"range": RANGE}},
                    headers=headers,
                )
            )
            export, export_s = await timed(
                client.get(
                    "/export/financials.csv",
                    params={"start": RANGE["start"], "end": RANGE["end"]},
                    headers=headers,
                )
            )
        async with locked(endpoints, "lead_events"):  # salesFunnel: Strawberry's own path
            funnel, funnel_s = await timed(
                client.post(
                    "/graphql",
                    json={"query": FUNNEL, "variables": {"range": RANGE}},
                    headers=headers,
                )
            )
        healthy = await client.post("/graphql", json={"query": ME}, headers=headers)
    for response in (listing, summary, export, funnel):
        error = assert_typed_retry(response, 503, "QUERY_TIMEOUT")
        assert error["message"].startswith("the query took too long")
    assert funnel.json()["data"] is None
    assert listing_s < 1.0  # the request's own short timeout
    assert min(summary_s, export_s, funnel_s) >= 1.1  # the reports' longer one
    assert healthy.status_code == 200


async def test_admission_caps_per_user_and_per_tenant() -> None:
    admission = Admission(tenant_limit=3, user_limit=2, wait_seconds=0.05)
    tenant, alice, bob = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    a1, a2 = admission.try_enter(tenant, alice), admission.try_enter(tenant, alice)
    assert a1 is not None and a2 is not None
    assert admission.try_enter(tenant, alice) is None  # alice's own cap
    b1 = admission.try_enter(tenant, bob)
    assert b1 is not None
    assert admission.try_enter(tenant, bob) is None  # the tenant's cap (3)
    try:
        await admission.enter(tenant, bob)
        raise AssertionError("admitted over the tenant's cap")
    except RateLimitedError as error:
        assert error.extensions["limit"] == "tenant_concurrency"
        assert error.headers() == {"Retry-After": "1"}
    elsewhere = admission.try_enter(uuid.uuid4(), uuid.uuid4())  # other tenants unaffected
    assert elsewhere is not None
    waiting = asyncio.create_task(admission.enter(tenant, bob))
    await asyncio.sleep(0)
    a1.release()
    a1.release()  # idempotent
    ticket = await waiting
    assert admission.in_use(f"tenant:{tenant}") == 3
    for held in (a2, b1, ticket, elsewhere):
        held.release()
    assert admission._gates == {}  # nothing kept for idle tenants and users


async def test_a_tenants_ingest_batches_are_capped_apart_from_its_requests(
    data_dir: Any, endpoints: Endpoints, world: World
) -> None:
    """Twelve concurrent ingest batches of one tenant, each stuck until the ingest statement
    timeout, hold at most the tenant's share of the pool; the rest get 429 with
    Retry-After, and another tenant's ingest and that tenant's own API requests still work."""
    settings = make_settings(data_dir, ingest_statement_timeout_ms=1500)
    loader, other = await world.tenant("bulk"), await world.tenant("bulk-other")
    record = {
        "client_id": "C-0",
        "record_date": "2024-01-01",
        "revenue": "10.00",
        "expenses": 1,
        "net_profit": "9.00",
        "currency": "AUD",
        "external_id": "x-1",
    }
    body = {"workflow_id": "wf", "execution_id": "1", "source_system": "xero", "records": [record]}
    async with other_app(endpoints, settings) as (services, client):
        tokens = {
            t.id: (await issue_instance_token(services.db, t.id)).reveal() for t in (loader, other)
        }
        peak = 0

        async def batch() -> httpx.Response:
            headers = {"Authorization": f"Bearer {tokens[loader.id]}"}
            return await client.post("/ingest/v1/financials", json=body, headers=headers)

        async with locked(endpoints, "financials"):
            flood = [asyncio.create_task(batch()) for _ in range(12)]
            await asyncio.sleep(0.3)
            peak = services.db.admission.in_use(f"ingest:tenant:{loader.id}")
            started = time.monotonic()
            heartbeat = await client.post(
                "/ingest/v1/heartbeat", headers={"Authorization": f"Bearer {tokens[other.id]}"}
            )
            me = await client.post(
                "/graphql", json={"query": ME}, headers=world.headers(loader.viewer)
            )
            other_s = time.monotonic() - started
            answers = await asyncio.gather(*flood)
    assert heartbeat.status_code == 200 and me.status_code == 200
    assert other_s < 1.5
    assert peak == services.db.admission.tenant_limit
    outcomes = Counter((r.status_code, r.json()["code"]) for r in answers)
    assert outcomes == {(503, "UNAVAILABLE"): peak, (429, "RATE_LIMITED"): 12 - peak}, outcomes
    assert all(int(r.headers["retry-after"]) >= 1 for r in answers)
