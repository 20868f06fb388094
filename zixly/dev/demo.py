"""``zixly dev --demo``: the whole data flow for the demo tenant, on this machine.

What a newcomer sees within a minute or two of starting:

1. the provider sandbox (``zixly/dev/sandbox``) on a loopback port, standing in for Xero, HubSpot,
   Asana and Shopify with their real token endpoints and API shapes, and Zixly's settings
   pointed at it (``provider_base_urls``, an OAuth app per provider);
2. an arq worker in the same process (the jobs and crons ``zixly worker`` runs: initial
   syncs, token refresh, the sync-health monitor, alert delivery);
3. the demo tenant's own n8n instance (process runtime), provisioned or started again, with
   the provider templates from ``n8n-workflows/`` deployed;
4. each provider connected through the real OAuth flow (authorize URL with state and PKCE,
   the sandbox consents, Zixly's callback exchanges the code), which stores the tokens
   encrypted, pushes them into the instance's credentials and queues the initial sync: the
   templates run in n8n, call the sandbox and post to the ingest endpoint;
5. each template's run (read from the instance's own API) and the rows it landed, then the
   link that opens the tenant's n8n editor.

Nothing here is demo-only logic: every step is the code path production uses, driven from
one place. The sandbox listens on a predictable port (``--sandbox-port``, default the API port
+ 1); if it moves, the next start's template deploy updates the workflows in place (they are
still what Zixly deployed) with the new provider URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from arq.connections import RedisSettings
from arq.worker import Worker, create_worker
from pydantic import SecretStr
from rich.console import Console
from sqlalchemy import text

from zixly.container import Services
from zixly.core.errors import ZixlyError
from zixly.core.logging import get_logger
from zixly.core.settings import OAuthClient, Settings
from zixly.dev.sandbox.common import DataApis, DataConfig
from zixly.dev.sandbox.oauth import ProviderSandbox
from zixly.dev.sandbox.server import RunningSandbox, serve_sandbox
from zixly.embedded.stack import Endpoints
from zixly.integrations.connect import IntegrationConnector
from zixly.provisioning.instances import ActualState, InstanceRepository
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.operations import STAFF
from zixly.provisioning.runtimes.base import InstanceRuntime
from zixly.provisioning.templates import bundled_manifest
from zixly.provisioning.watch import follow
from zixly.workers.settings import WorkerSettings

log = get_logger("zixly.dev.demo")

DEMO_TENANT = "demo"
DEMO_ADMIN = "admin@demo.zixly.dev"
SANDBOX_SEED = 2026
SANDBOX_CLIENT = ("zixly-demo", "zixly-demo-client-secret")
# provider -> (template id, table its rows land in, shop for per-shop providers)
DEMO_FLOWS: dict[str, tuple[str, str, str | None]] = {
    "xero": ("xero-profit-and-loss", "financials", None),
    "hubspot": ("hubspot-deals", "lead_events", None),
    "asana": ("asana-task-completion", "custom_metrics", None),
    "shopify": ("shopify-orders", "custom_metrics", "zixly-demo"),
}
TEMPLATES = ["manifest:zixly-heartbeat", *(f"manifest:{t}" for t, _, _ in DEMO_FLOWS.values())]
RUNS_WITHIN_SECONDS = 150.0


class DemoError(ZixlyError):
    code = "DEMO_FAILED"


def demo_sandbox() -> ProviderSandbox:
    return ProviderSandbox(
        clients=dict.fromkeys(DEMO_FLOWS, SANDBOX_CLIENT),
        data=DataApis(config=DataConfig(seed=SANDBOX_SEED)),
    )


def demo_settings(settings: Settings, sandbox: RunningSandbox) -> Settings:
    """The settings pointed at the sandbox, with an OAuth app per provider (explicitly
    configured values win)."""
    client = OAuthClient(client_id=SANDBOX_CLIENT[0], client_secret=SecretStr(SANDBOX_CLIENT[1]))
    return settings.model_copy(
        update={
            "provider_base_urls": {**sandbox.base_urls, **settings.provider_base_urls},
            "oauth_clients": {**dict.fromkeys(DEMO_FLOWS, client), **settings.oauth_clients},
        }
    )


@contextlib.asynccontextmanager
async def sandbox_for_demo(port: int) -> AsyncIterator[RunningSandbox]:
    async with serve_sandbox(demo_sandbox(), port=port) as running:
        yield running


@contextlib.asynccontextmanager
async def in_process_worker(
    settings: Settings,
    endpoints: Endpoints,
    *,
    runtime: InstanceRuntime | None = None,
    crons: bool = True,
) -> AsyncIterator[Worker]:
    """The arq worker ``zixly worker`` runs, on this event loop (signals stay with the API
    server, which stops everything in order). ``runtime``: the instance runtime its jobs use
    (default: the configured one); ``crons=False``: only the jobs it is given."""
    # Fresh copies of the cron jobs: arq keeps each one's next run time on the CronJob itself,
    # so workers of one process would otherwise share (and compare) each other's.
    fresh = [dataclasses.replace(job, next_run=None) for job in WorkerSettings.cron_jobs]
    overrides: dict[str, Any] = {"cron_jobs": fresh if crons else []}
    worker = create_worker(
        WorkerSettings,  # type: ignore[arg-type]
        redis_settings=RedisSettings.from_dsn(endpoints.redis_url),
        ctx={
            "settings": settings,
            "database_url": endpoints.database_url,
            "redis_url": endpoints.redis_url,
            "runtime": runtime,
        },
        handle_signals=False,
        poll_delay=0.1,
        **overrides,
    )
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with warnings.catch_warnings():
            # arq 0.28 closes its pool with redis-py's deprecated close(): arq's, not ours.
            warnings.filterwarnings("ignore", "Call to deprecated close", DeprecationWarning)
            await worker.close()


@dataclass(frozen=True)
class DemoTenant:
    tenant_id: uuid.UUID
    admin_id: uuid.UUID


async def demo_tenant(services: Services) -> DemoTenant:
    async with services.db.transaction(STAFF) as session:
        row = (
            await session.execute(
                text(
                    "SELECT t.id AS tenant_id, u.id AS admin_id FROM tenants t"
                    " JOIN memberships m ON m.tenant_id = t.id AND m.role = 'ADMIN'"
                    " JOIN users u ON u.id = m.user_id AND lower(u.email) = :email"
                    " WHERE t.slug = :slug"
                ),
                {"slug": DEMO_TENANT, "email": DEMO_ADMIN},
            )
        ).first()
    if row is None:
        raise DemoError("the demo tenant is missing (the seed did not run)")
    return DemoTenant(row.tenant_id, row.admin_id)


async def ensure_instance(
    lifecycle: InstanceLifecycle, services: Services, tenant_id: uuid.UUID, console: Console
) -> None:
    """Provision the tenant's n8n (or start it again) with the demo templates."""
    async with services.db.transaction(STAFF) as session:
        row = await InstanceRepository(session).get(tenant_id)
    if row is None or row.actual_state is ActualState.DEPROVISIONED:
        row = await follow(
            services.redis, tenant_id, console, lifecycle.provision(tenant_id, templates=TEMPLATES)
        )
    else:
        if row.actual_state is not ActualState.RUNNING:
            await follow(services.redis, tenant_id, console, lifecycle.start(tenant_id))
        row = await follow(
            services.redis, tenant_id, console, lifecycle.deploy_templates(tenant_id, TEMPLATES)
        )
    if row.actual_state is not ActualState.RUNNING:
        raise DemoError(f"the demo instance is {row.actual_state.value}: {row.last_error}")


async def connect_provider(
    connector: IntegrationConnector,
    http: httpx.AsyncClient,
    tenant: DemoTenant,
    provider: str,
    shop: str | None,
) -> None:
    """The browser's part of the OAuth flow: open the authorize URL; the sandbox consents and
    redirects to Zixly's callback, which connects the integration and queues its sync."""
    start = await connector.start(tenant.tenant_id, tenant.admin_id, provider, shop)
    response = await http.get(start.authorize_url, follow_redirects=True)
    if response.status_code != 200 or "/oauth/" not in str(response.url):
        raise DemoError(f"connecting {provider} failed ({response.status_code})")


async def row_counts(services: Services, tenant_id: uuid.UUID) -> dict[str, int]:
    """Rows each provider's template wrote (ingested rows carry their workflow's id)."""
    counts: dict[str, int] = {}
    async with services.db.transaction(STAFF) as session:
        for provider, (_, table, _) in DEMO_FLOWS.items():
            query = text(
                f"SELECT count(*) FROM {table}"  # noqa: S608 (a fixed table name)
                " WHERE tenant_id = :tenant AND source_workflow_id IS NOT NULL"
                " AND source_system = :provider"
            )
            result = await session.execute(query, {"tenant": tenant_id, "provider": provider})
            counts[provider] = int(result.scalar_one())
    return counts


@dataclass(frozen=True)
class Run:
    """The first finished run of a template since the demo started."""

    execution_id: str
    status: str  # n8n's: success, error, crashed, canceled


async def wait_for_runs(
    settings: Settings,
    services: Services,
    tenant_id: uuid.UUID,
    since: datetime,
    console: Console,
    within: float,
) -> dict[str, Run | None]:
    """Until each provider's template finished a run started after ``since`` (read from the
    instance's own API), or ``within`` seconds passed; the runs (None: none finished)."""
    n8n = services.tenant_n8n
    api, _ = await n8n.client(tenant_id)
    manifest = bundled_manifest()
    named = {str(w["name"]): str(w["id"]) for w in await api.all_workflows()}
    workflow_ids = {
        provider: named[manifest.get(template).name]
        for provider, (template, _, _) in DEMO_FLOWS.items()
    }
    runs: dict[str, Run | None] = dict.fromkeys(DEMO_FLOWS)
    deadline = time.monotonic() + within
    with console.status("the workflows are running in n8n") as status:
        while True:
            for provider, workflow_id in workflow_ids.items():
                if runs[provider] is None:
                    page = await api.list_executions(workflow_id=workflow_id, limit=10)
                    runs[provider] = _finished_since(page.items, since)
            waiting = [p for p, run in runs.items() if run is None]
            if not waiting or time.monotonic() > deadline:
                return runs
            status.update("the workflows are running in n8n: waiting for " + ", ".join(waiting))
            await asyncio.sleep(1.0)


def _finished_since(executions: list[dict[str, Any]], since: datetime) -> Run | None:
    finished = [
        e
        for e in executions
        if e.get("stoppedAt")
        and e.get("startedAt")
        and datetime.fromisoformat(str(e["startedAt"]).replace("Z", "+00:00")) >= since
    ]
    if not finished:
        return None
    first = min(finished, key=lambda e: int(e["id"]))
    return Run(str(first["id"]), str(first.get("status") or "unknown"))


async def run_demo(
    settings: Settings, services: Services, console: Console, tenant: DemoTenant
) -> dict[str, int]:
    """Steps 3-5 of the module docstring, once the API, sandbox and worker are up; the rows
    per provider."""
    lifecycle = services.lifecycle
    console.print("[bold]Demo:[/] the demo tenant's own n8n instance")
    await ensure_instance(lifecycle, services, tenant.tenant_id, console)
    since = datetime.now(UTC) - timedelta(seconds=1)
    connector = services.connector  # the one the API's callback uses
    async with httpx.AsyncClient(timeout=30.0) as browser:
        for provider, (_, _, shop) in DEMO_FLOWS.items():
            with console.status(f"connecting {provider} (OAuth with the sandbox)"):
                await connect_provider(connector, browser, tenant, provider, shop)
            console.print(f"✓ {provider} connected; its initial sync is queued")
    runs = await wait_for_runs(
        settings, services, tenant.tenant_id, since, console, RUNS_WITHIN_SECONDS
    )
    counts = await row_counts(services, tenant.tenant_id)
    for provider, run in runs.items():
        table = DEMO_FLOWS[provider][1]
        ran = f"run {run.execution_id}: {run.status}" if run else "no run finished in time"
        ok = run is not None and run.status == "success" and counts[provider] > 0
        mark = "✓" if ok else "✗"
        console.print(f"{mark} {provider}: {counts[provider]} rows in {table} ({ran})")
    return counts


async def stop_instance(settings: Settings, services: Services, tenant_id: uuid.UUID) -> None:
    """Ctrl-C: stop the demo tenant's n8n (its data and workflows stay for the next start)."""
    lifecycle = services.lifecycle
    try:
        await lifecycle.stop(tenant_id)
    except ZixlyError as exc:
        log.warning("demo.stop_failed", code=exc.code)
