"""The whole data flow, end to end, with nothing stood in for but the provider:

provision a tenant's n8n (process runtime) with the Xero template → its ADMIN connects Xero
through the OAuth flow (GraphQL ``startIntegrationConnect`` → the sandbox's authorize page →
Zixly's callback) → a real arq worker runs the queued initial sync, which pushes the access
token into the instance's credential and triggers the template through n8n's webhook → the
workflow calls the sandbox's Xero API and posts to the ingest endpoint with the tenant's
ingest token → the rows are in that tenant's ``financials`` and ``financialSummary`` and in no
other tenant's → the sync-health monitor reads the execution and marks the integration ACTIVE
with ``lastSyncAt`` set.

Everything is real: PostgreSQL with RLS, Redis, uvicorn serving the API, n8n 1.123, arq. The
provider is the local sandbox (``zixly/dev/sandbox``), which speaks Xero's token endpoint and
Reports API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import World, make_settings, served
from tests.provisioning.instance_support import LifecycleEnv, lifecycle_env, run_queued_jobs
from tests.test_integration_connect import free_port
from zixly.container import Services, build_lifecycle
from zixly.core.settings import Settings
from zixly.dev.sandbox.oauth import ProviderSandbox
from zixly.dev.sandbox.server import RunningSandbox, serve_sandbox
from zixly.embedded.stack import Endpoints
from zixly.monitor.monitor import SyncHealthMonitor
from zixly.provisioning.instances import ActualState
from zixly.provisioning.runtimes.process import ProcessRuntime

CLIENT = ("zixly-e2e", "zixly-e2e-secret")
TEMPLATES = ["manifest:zixly-heartbeat", "manifest:xero-profit-and-loss"]
ROWS_WITHIN = 180.0
RANGE = {
    "start": (date.today() - timedelta(days=60)).isoformat(),
    "end": (date.today() + timedelta(days=1)).isoformat(),
}

FINANCIALS = """
query($range: DateRangeInput!) { financials(range: $range, first: 500) { edges { node {
    recordDate revenue expenses netProfit currency sourceSystem
} } } }
"""
SUMMARY = """
query($range: DateRangeInput!) {
  financialSummary(range: $range, granularity: DAY) { periodStart revenue expenses netProfit }
}
"""
INTEGRATIONS = """
query { integrations { provider status lastSyncAt consecutiveFailures lastError } }
"""
CONNECT = """
mutation { startIntegrationConnect(provider: "xero") { authorizeUrl } }
"""


@dataclass
class Stack:
    settings: Settings
    services: Services
    url: str
    env: LifecycleEnv
    sandbox: RunningSandbox
    endpoints: Endpoints


@pytest.fixture(scope="module")
async def stack(
    services: Services,
    endpoints: Endpoints,
    process_runtime: ProcessRuntime,
    n8n_http: httpx.AsyncClient,
    owner: asyncpg.Connection,
    settings: Settings,
) -> AsyncIterator[Stack]:
    sandbox = ProviderSandbox(clients={"xero": CLIENT})
    port = free_port()
    async with (
        serve_sandbox(sandbox) as running,
        lifecycle_env(services, process_runtime, n8n_http, owner, settings) as env,
    ):
        e2e = make_settings(
            settings.data_dir,
            port=port,
            public_url=f"http://127.0.0.1:{port}",
            encryption_keys=env.keys,  # one keyring: API, worker and lifecycle
            provider_base_urls=running.base_urls,
            oauth_clients={"xero": {"client_id": CLIENT[0], "client_secret": CLIENT[1]}},
        )
        api = Services.build(
            e2e, database_url=endpoints.database_url, redis_url=endpoints.redis_url
        )
        try:
            async with served(api, port=port) as url:
                yield Stack(e2e, api, url, env, running, endpoints)
        finally:
            await api.close()


async def _gql(
    http: httpx.AsyncClient, url: str, token: str, query: str, **variables: Any
) -> dict[str, Any]:
    response = await http.post(
        f"{url}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return dict(body["data"])


async def _wait_for_rows(http: httpx.AsyncClient, stack: Stack, token: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + ROWS_WITHIN
    while True:
        edges = (await _gql(http, stack.url, token, FINANCIALS, range=RANGE))["financials"]["edges"]
        if edges:
            return [edge["node"] for edge in edges]
        assert time.monotonic() < deadline, "no financial rows arrived from the Xero template"
        await asyncio.sleep(1.0)


async def _monitor_pass(stack: Stack) -> None:
    settings = stack.settings
    services = stack.services
    monitor = SyncHealthMonitor.from_settings(
        settings,
        services.db,
        services.redis,
        services.tenant_n8n,
        services.alerts,
    )
    await monitor.run()


async def test_a_connected_xero_lands_rows_for_its_tenant_only(
    stack: Stack, owner: asyncpg.Connection
) -> None:
    world = World(owner, stack.settings)
    tenant = await world.tenant("e2e", clients=0)
    other = await world.tenant("e2e-other", clients=1)
    stack.env.tenants.append(tenant.id)  # removed with the module's instances
    admin = world.token(tenant.admin, tenant.slug)
    other_admin = world.token(other.admin, other.slug)

    lifecycle = build_lifecycle(
        stack.settings,
        stack.services.db,
        stack.services.redis,
        stack.env.http,
        stack.env.runtime,
        stack.services.keyring,
    )
    row = await lifecycle.provision(tenant.id, templates=TEMPLATES)
    assert row.actual_state is ActualState.RUNNING, row.last_error

    async with httpx.AsyncClient(timeout=30.0) as http:
        # The ADMIN connects Xero: the browser opens the authorize URL, the sandbox consents
        # and redirects to Zixly's callback.
        authorize = (await _gql(http, stack.url, admin, CONNECT))["startIntegrationConnect"]
        page = await http.get(authorize["authorizeUrl"], follow_redirects=True)
        assert page.status_code == 200, page.text
        assert str(page.url).startswith(f"{stack.url}/oauth/xero/callback")
        [xero] = (await _gql(http, stack.url, admin, INTEGRATIONS))["integrations"]
        assert xero["provider"] == "xero" and xero["status"] == "ACTIVE"
        assert xero["lastSyncAt"] is None

        # The initial sync: pushes the token into n8n and runs the template.
        complete, failed = await run_queued_jobs(stack.settings, stack.endpoints, stack.env.runtime)
        assert (complete, failed) == (1, 0)
        rows = await _wait_for_rows(http, stack, admin)

        assert all(r["currency"] == "AUD" and r["sourceSystem"] == "xero" for r in rows)
        for r in rows:
            assert Decimal(r["netProfit"]) == Decimal(r["revenue"]) - Decimal(r["expenses"])
        assert any(Decimal(r["revenue"]) > 0 for r in rows)
        lineage = await owner.fetch(
            "SELECT DISTINCT source_system, source_workflow_id, source_execution_id"
            " FROM financials WHERE tenant_id = $1",
            tenant.id,
        )
        assert len(lineage) == 1 and lineage[0]["source_system"] == "xero"
        assert lineage[0]["source_workflow_id"] and lineage[0]["source_execution_id"]

        # financialSummary over the same days adds up to the same totals.
        summary = (await _gql(http, stack.url, admin, SUMMARY, range=RANGE))["financialSummary"]
        assert sum(Decimal(s["revenue"]) for s in summary) == sum(
            Decimal(r["revenue"]) for r in rows
        )
        assert sum(Decimal(s["netProfit"]) for s in summary) == sum(
            Decimal(r["netProfit"]) for r in rows
        )

        # Another tenant sees none of it, through the API or its own integrations.
        theirs = await _gql(http, stack.url, other_admin, FINANCIALS, range=RANGE)
        assert theirs["financials"]["edges"] == []
        other_summary = (await _gql(http, stack.url, other_admin, SUMMARY, range=RANGE))[
            "financialSummary"
        ]
        assert all(Decimal(s["revenue"]) == 0 for s in other_summary)
        assert (await _gql(http, stack.url, other_admin, INTEGRATIONS))["integrations"] == []

        # The monitor reads the (finished) execution and marks the integration healthy.
        deadline = time.monotonic() + 60
        while True:
            await _monitor_pass(stack)
            [xero] = (await _gql(http, stack.url, admin, INTEGRATIONS))["integrations"]
            if xero["lastSyncAt"] is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        assert xero["status"] == "ACTIVE"
        assert xero["lastSyncAt"] is not None
        assert xero["consecutiveFailures"] == 0 and xero["lastError"] is None

    assert (
        await owner.fetchval("SELECT count(*) FROM financials WHERE tenant_id = $1", other.id) == 0
    )
