"""The four provider templates (Xero P&L, HubSpot deals, Asana task completion, Shopify
orders) running in a real n8n instance (process runtime), deployed by the lifecycle from the
manifest, against the provider sandbox over loopback, posting to the real ingest endpoint
(the Zixly app served by uvicorn) with the tenant's real ingest token; rows are checked in
PostgreSQL.

Each run pages through at least two pages (or, for Xero, many per-day reports), takes one
injected 429 and must wait it out for at least as long as the provider asked before asking
again. What each template must have written is computed here from the sandbox's seeded data,
independently of the template's own arithmetic: section totals of the day's accounts (Xero),
deals with their stage and close or change time (HubSpot), tasks completed per UTC day
(Asana), orders per UTC day in shop money (Shopify). Provider shapes and limits:
docs/au-rules-and-provider-apis.md ("Provider API shapes and limits").
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from tests.provisioning.instance_support import LifecycleEnv
from zixly.dev.sandbox import asana, hubspot, shopify, xero
from zixly.dev.sandbox.common import ApiCall, ApiFault
from zixly.dev.sandbox.oauth import ProviderSandbox
from zixly.dev.sandbox.server import RunningSandbox, serve_sandbox
from zixly.providers.tokens import integration_binding
from zixly.provisioning.instances import ActualState
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.operations import STAFF
from zixly.provisioning.templates import load_manifest, tenant_values, with_provider_urls

TEMPLATES = {s.id: s for s in load_manifest().templates if s.provider is not None}
WINDOW_DAYS = 7  # the Settings node's "days" of the Xero, Asana and Shopify templates
RETRY_AFTER = 2.0
RUN_WITHIN = 180.0


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[RunningSandbox]:
    async with serve_sandbox(ProviderSandbox()) as running:
        yield running


@dataclass
class Deployed:
    tenant_id: uuid.UUID
    api: N8nClient
    url: str
    tokens: dict[str, str]  # provider -> the access token its credential carries


async def connect(env: LifecycleEnv, tenant_id: uuid.UUID, provider: str, token: str) -> None:
    """An ACTIVE integration holding ``token`` (encrypted as the token store seals it)."""
    row_id = uuid.uuid4()
    sealed = env.keyring.encrypt(token, integration_binding(tenant_id, row_id, "access_token"))
    await env.owner.execute(
        "INSERT INTO integrations (id, tenant_id, provider, status, access_token_ciphertext,"
        " expires_at, metadata) VALUES ($1, $2, $3, 'ACTIVE', $4, $5, $6::jsonb)",
        row_id,
        tenant_id,
        provider,
        sealed,
        datetime.now(UTC) + timedelta(hours=1),
        '{"shop": "sandbox-shop"}' if provider == "shopify" else "{}",
    )


@pytest.fixture(scope="module")
async def deployed(env: LifecycleEnv, sandbox: RunningSandbox, live_server: str) -> Deployed:
    tenant_id = await env.tenant("providers")
    tokens = {}
    for spec in TEMPLATES.values():
        assert spec.provider is not None
        tokens[spec.provider] = sandbox.sandbox.issue_access_token(spec.provider, lifetime=3600)
        await connect(env, tenant_id, spec.provider, tokens[spec.provider])
    lifecycle = env.lifecycle(
        ingest_url=f"{live_server}/ingest/v1", provider_base_urls=sandbox.base_urls
    )
    refs = [spec.ref for spec in TEMPLATES.values()]
    row = await lifecycle.provision(tenant_id, templates=refs)
    assert row.actual_state is ActualState.RUNNING and row.templates == refs
    api = await env.api(tenant_id)
    return Deployed(tenant_id, api, api.base_url, tokens)


@dataclass(frozen=True)
class Run:
    workflow_id: str
    execution_id: str
    status: str
    error: dict[str, Any] | None


async def run(deployed: Deployed, http: httpx.AsyncClient, template_id: str) -> Run:
    """Trigger the template's on-demand webhook and wait for that execution to end."""
    spec = TEMPLATES[template_id]
    [workflow] = await deployed.api.all_workflows(name=spec.name)
    workflow_id = str(workflow["id"])
    before = {
        str(e["id"]) for e in (await deployed.api.list_executions(workflow_id=workflow_id)).items
    }
    response = await http.post(f"{deployed.url}/webhook/zixly-{template_id}")
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + RUN_WITHIN
    while True:
        listed = (await deployed.api.list_executions(workflow_id=workflow_id)).items
        done = [
            e
            for e in listed
            if str(e["id"]) not in before and e.get("status") in ("success", "error", "crashed")
        ]
        if done:
            break
        assert time.monotonic() < deadline, f"{template_id} did not finish in {RUN_WITHIN}s"
        await asyncio.sleep(0.5)
    execution = await deployed.api.get_execution(str(done[0]["id"]), include_data=True)
    error = (execution.get("data") or {}).get("resultData", {}).get("error")
    return Run(workflow_id, str(done[0]["id"]), str(execution.get("status")), error)


def window() -> list[date]:
    today = datetime.now(UTC).date()
    return [today - timedelta(days=back) for back in range(WINDOW_DAYS, 0, -1)]


def assert_waited_out(calls: list[ApiCall]) -> None:
    """The injected 429 was answered once, and the same request came back no sooner than
    the provider asked (Retry-After, or HubSpot's rate-limit window)."""
    [refused] = [c for c in calls if c.fault]
    assert refused.status == 429
    again = [
        c for c in calls if c.at > refused.at and (c.path, c.query) == (refused.path, refused.query)
    ]
    assert again, "the refused request was never retried"
    assert again[0].status == 200
    assert again[0].at - refused.at >= RETRY_AFTER


async def start(sandbox: RunningSandbox, provider: str, path: str, skip: int) -> None:
    sandbox.sandbox.data.calls.clear()
    sandbox.sandbox.data.faults[:] = [
        ApiFault(provider=provider, path=path, skip=skip, retry_after=RETRY_AFTER)
    ]


def lineage_ok(rows: list[asyncpg.Record], ran: Run) -> None:
    assert {(r["source_workflow_id"], r["source_execution_id"]) for r in rows} == {
        (ran.workflow_id, ran.execution_id)
    }


async def test_xero_profit_and_loss_lands_per_organisation_and_day(
    deployed: Deployed, sandbox: RunningSandbox, env: LifecycleEnv
) -> None:
    await start(sandbox, "xero", "ProfitAndLoss", skip=3)
    ran = await run(deployed, env.http, "xero-profit-and-loss")
    assert ran.status == "success", ran.error
    calls = sandbox.sandbox.data.calls_to("xero")
    assert sandbox.sandbox.data.faults == []
    assert_waited_out(calls)
    cfg = sandbox.sandbox.data.config
    orgs = xero.organisations(cfg.seed, cfg.today)
    reports = [c for c in calls if c.path.endswith("ProfitAndLoss") and c.status == 200]
    assert len(reports) == len(orgs) * WINDOW_DAYS  # one report per organisation and day

    rows = await env.owner.fetch(
        "SELECT c.client_id, c.client_name, f.record_date, f.revenue, f.expenses,"
        " f.net_profit, f.cash_flow, f.currency, f.external_id, f.source_workflow_id,"
        " f.source_execution_id FROM financials f JOIN client_kpis c"
        " ON c.tenant_id = f.tenant_id AND c.id = f.client_kpi_id"
        " WHERE f.tenant_id = $1 AND f.source_system = 'xero'",
        deployed.tenant_id,
    )
    expected = {}
    for org in orgs:
        for day in window():
            totals = xero.totals(cfg.seed, org, day, day)
            expenses = totals.cost_of_sales + totals.operating_expenses
            expected[(f"xero:{org.tenant_id}", org.name, day)] = (
                totals.income,
                expenses,
                totals.income - expenses,
            )
    got = {
        (r["client_id"], r["client_name"], r["record_date"]): (
            r["revenue"],
            r["expenses"],
            r["net_profit"],
        )
        for r in rows
    }
    assert got == expected
    assert any(v[0] != 0 for v in expected.values()) and any(v[2] < 0 for v in expected.values())
    assert {(r["currency"], r["cash_flow"] == r["net_profit"]) for r in rows} == {("AUD", True)}
    lineage_ok(rows, ran)


async def test_hubspot_deals_land_as_lead_events(
    deployed: Deployed, sandbox: RunningSandbox, env: LifecycleEnv
) -> None:
    await start(sandbox, "hubspot", "/crm/v3/objects/deals", skip=1)  # page 2 answers 429
    ran = await run(deployed, env.http, "hubspot-deals")
    assert ran.status == "success", ran.error
    calls = sandbox.sandbox.data.calls_to("hubspot")
    assert_waited_out(calls)
    pages = {c.query.get("after") for c in calls if c.path.endswith("/deals") and c.status == 200}
    cfg = sandbox.sandbox.data.config
    deals = hubspot.deals(cfg.seed, cfg.today, cfg.history_days)
    assert len(pages) == -(-len(deals) // 100) >= 3  # every page of 100, once each

    rows = await env.owner.fetch(
        "SELECT c.client_id, c.client_name, e.lead_id, e.stage, e.status, e.event_date,"
        " e.value, e.source_workflow_id, e.source_execution_id FROM lead_events e"
        " JOIN client_kpis c ON c.tenant_id = e.tenant_id AND c.id = e.client_kpi_id"
        " WHERE e.tenant_id = $1 AND e.source_system = 'hubspot'",
        deployed.tenant_id,
    )
    portal = hubspot.portal_id(cfg.seed)
    assert {(r["client_id"], r["client_name"]) for r in rows} == {
        (f"hubspot:{portal}", f"HubSpot portal {portal}")
    }
    expected = {
        (
            d.id,
            d.stage,
            d.status,
            d.modified if d.status == "open" else d.closed,
            d.amount,
        )
        for d in deals
    }
    got = {(r["lead_id"], r["stage"], r["status"], r["event_date"], r["value"]) for r in rows}
    assert got == expected
    assert {"won", "lost", "open"} <= {r["status"] for r in rows}
    lineage_ok(rows, ran)

    # Run again: the same events, nothing new (the ingest endpoint reports them unchanged).
    sandbox.sandbox.data.calls.clear()
    again = await run(deployed, env.http, "hubspot-deals")
    assert again.status == "success", again.error
    count = await env.owner.fetchval(
        "SELECT count(*) FROM lead_events WHERE tenant_id = $1 AND source_system = 'hubspot'",
        deployed.tenant_id,
    )
    assert count == len(deals)


async def test_asana_completed_tasks_land_per_utc_day(
    deployed: Deployed, sandbox: RunningSandbox, env: LifecycleEnv
) -> None:
    await start(sandbox, "asana", "/tasks", skip=1)
    ran = await run(deployed, env.http, "asana-task-completion")
    assert ran.status == "success", ran.error
    calls = sandbox.sandbox.data.calls_to("asana")
    assert_waited_out(calls)
    assert any("offset" in c.query and c.status == 200 for c in calls)  # a second page

    cfg = sandbox.sandbox.data.config
    space = asana.workspace(cfg.seed)
    days = window()
    per_day = dict.fromkeys(days, 0)
    for task in asana.tasks(cfg.seed, cfg.today, cfg.history_days):
        if task.completed_at is not None and task.completed_at.astimezone(UTC).date() in per_day:
            per_day[task.completed_at.astimezone(UTC).date()] += 1
    rows = await env.owner.fetch(
        "SELECT c.client_id, c.client_name, m.metric_name, m.metric_value, m.unit,"
        " m.record_date, m.source_workflow_id, m.source_execution_id FROM custom_metrics m"
        " JOIN client_kpis c ON c.tenant_id = m.tenant_id AND c.id = m.client_kpi_id"
        " WHERE m.tenant_id = $1 AND m.source_system = 'asana'",
        deployed.tenant_id,
    )
    assert {(r["client_id"], r["client_name"], r["metric_name"], r["unit"]) for r in rows} == {
        (f"asana:{space.gid}", space.name, "asana_tasks_completed", "tasks")
    }
    got = {r["record_date"]: r["metric_value"] for r in rows}
    assert got == {
        datetime(d.year, d.month, d.day, tzinfo=UTC): Decimal(n) for d, n in per_day.items()
    }
    assert sum(per_day.values()) > 0
    lineage_ok(rows, ran)


async def test_shopify_orders_land_per_utc_day_in_aud(
    deployed: Deployed, sandbox: RunningSandbox, env: LifecycleEnv
) -> None:
    await start(sandbox, "shopify", "/orders.json", skip=1)  # page 2 answers 429
    ran = await run(deployed, env.http, "shopify-orders")
    assert ran.status == "success", ran.error
    calls = sandbox.sandbox.data.calls_to("shopify")
    assert_waited_out(calls)
    assert len([c for c in calls if "page_info" in c.query and c.status == 200]) >= 1

    cfg = sandbox.sandbox.data.config
    days = window()
    since = datetime(days[0].year, days[0].month, days[0].day, tzinfo=UTC)
    counts = dict.fromkeys(days, 0)
    sales = dict.fromkeys(days, Decimal(0))
    shown = dict.fromkeys(days, Decimal(0))  # what the customers were shown, for contrast
    for order in shopify.orders(cfg.seed, cfg.today, cfg.history_days):
        day = order.created_at.astimezone(UTC).date()
        if order.created_at < since or day not in counts:
            continue
        if order.financial_status in ("voided", "refunded"):
            continue
        counts[day] += 1
        sales[day] += order.total
        shown[day] += order.presentment_total
    rows = await env.owner.fetch(
        "SELECT c.client_id, c.client_name, m.metric_name, m.metric_value, m.unit,"
        " m.record_date, m.source_workflow_id, m.source_execution_id FROM custom_metrics m"
        " JOIN client_kpis c ON c.tenant_id = m.tenant_id AND c.id = m.client_kpi_id"
        " WHERE m.tenant_id = $1 AND m.source_system = 'shopify'",
        deployed.tenant_id,
    )
    name = shopify.shop_name(cfg.seed)
    assert {(r["client_name"], r["client_id"].startswith("shopify:")) for r in rows} == {
        (name, True)
    }
    midnight = {datetime(d.year, d.month, d.day, tzinfo=UTC): d for d in days}
    got_counts = {
        midnight[r["record_date"]]: r["metric_value"]
        for r in rows
        if r["metric_name"] == "shopify_orders"
    }
    got_sales = {
        midnight[r["record_date"]]: r["metric_value"]
        for r in rows
        if r["metric_name"] == "shopify_sales_aud"
    }
    assert got_counts == {d: Decimal(n) for d, n in counts.items()}
    assert got_sales == sales
    assert sales != shown  # some orders were presented in NZD or USD: shop money is what counts
    assert {r["unit"] for r in rows} == {"orders", "AUD"}
    lineage_ok(rows, ran)


async def test_provider_urls_come_from_the_overrides_and_the_integrations_shop(
    deployed: Deployed, sandbox: RunningSandbox, env: LifecycleEnv
) -> None:
    async with env.db.transaction(STAFF) as session:
        tenant = await tenant_values(session, deployed.tenant_id)
        overridden = await with_provider_urls(session, tenant, sandbox.base_urls)
        plain = await with_provider_urls(session, tenant, {})
    assert overridden.provider_params == {"shopify": {"shop": "sandbox-shop"}}
    assert overridden.source("provider:shopify", {}) == f"{sandbox.url}/shopify"
    assert overridden.source("provider:xero", {}) == f"{sandbox.url}/xero"
    assert plain.source("provider:shopify", {}) == "https://sandbox-shop.myshopify.com"
    assert plain.source("provider:xero", {}) == "https://api.xero.com"


async def test_an_expired_provider_token_fails_the_run_with_the_providers_401(
    deployed: Deployed, sandbox: RunningSandbox, env: LifecycleEnv
) -> None:
    """What the sync monitor sees when a token lapses: a failed execution naming the 401."""
    token = deployed.tokens["asana"]
    provider, expires = sandbox.sandbox.access_tokens[token]
    sandbox.sandbox.access_tokens[token] = (provider, time.time() - 1)
    try:
        sandbox.sandbox.data.calls.clear()
        ran = await run(deployed, env.http, "asana-task-completion")
    finally:
        sandbox.sandbox.access_tokens[token] = (provider, expires)
    assert ran.status == "error"
    assert ran.error is not None
    assert "Asana answered 401 to workspaces (Not Authorized)" in str(ran.error.get("message"))
    assert [c.status for c in sandbox.sandbox.data.calls_to("asana")] == [401]
