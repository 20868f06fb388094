"""The sync-health monitor against real n8n processes, PostgreSQL, Redis, SMTP and a webhook.

Two tenants, each with a provisioned instance running "Zixly test: xero sync on demand"
(tests/provisioning/fixtures/sync-on-demand.json: a Webhook trigger, an IF on the body, a Stop
And Error node that fails the run on demand). A test manifest names that workflow as a
template feeding the ``xero`` integration. The tests share the instances and run in file
order: failures to ERROR and back, STALE and back, what GraphQL shows, an unreachable
instance, the worker's cron job.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import TenantFixture, World, gql, make_settings
from tests.provisioning.conftest import load_workflow
from tests.provisioning.instance_support import WEBHOOK, LifecycleEnv, lifecycle_env
from tests.test_alerts import (  # noqa: F401 - module-scoped fixtures: the real receivers
    Hooks,
    _Inbox,
    configure,
    hook_url,
    smtp_server,
    webhook_server,
)
from tests.test_subscriptions import connected, receive, subscribe, wait_for_subscribers
from zixly.alerts.channels import SmtpChannel, WebhookChannel
from zixly.alerts.destinations import WebhookTargets
from zixly.alerts.service import AlertService
from zixly.container import Services, build_alert_service
from zixly.core.settings import Settings
from zixly.monitor.jobs import MONITOR_JOB, MONITOR_TIMEOUT_SECONDS, monitor_sync_health
from zixly.monitor.monitor import PASS_LOCK, SyncHealthMonitor
from zixly.provisioning.control import TenantN8n
from zixly.provisioning.instances import ActualState
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.operations import handle_of
from zixly.provisioning.runtimes.base import RuntimeState
from zixly.provisioning.runtimes.process import ProcessRuntime
from zixly.provisioning.templates import Manifest, TemplateSpec
from zixly.security.crypto import Keyring
from zixly.workers.settings import WorkerSettings

SYNC = load_workflow("sync-on-demand.json")
HOOK_PATH = "zixly-test-sync"
INTERVAL_MINUTES = 30
MANIFEST = Manifest(
    templates=[
        TemplateSpec(
            id="test-xero-sync",
            file="sync-on-demand.json",
            name=SYNC["name"],
            provider="xero",
            integration="xero",
            schedule="on demand",
            interval_minutes=INTERVAL_MINUTES,
            placeholders=[],
        )
    ]
)
# What the failing runs report: credential-shaped text that must never be stored.
LEAKED = "sk_live_" + "Zx9" * 12
REASON = f"401 Unauthorized (sent Authorization: Bearer {LEAKED})"


@dataclass
class Tenant:
    fixture: TenantFixture
    api: N8nClient
    url: str

    @property
    def id(self) -> uuid.UUID:
        return self.fixture.id


@dataclass
class Setup:
    env: LifecycleEnv
    a: Tenant
    b: Tenant


@pytest.fixture(scope="module")
async def setup(
    services: Services,
    process_runtime: ProcessRuntime,
    n8n_http: httpx.AsyncClient,
    owner: asyncpg.Connection,
    settings: Settings,
) -> AsyncIterator[Setup]:
    async with lifecycle_env(services, process_runtime, n8n_http, owner, settings) as env:
        world = World(owner, settings)
        fixtures = [await world.tenant("sync-a", clients=0), await world.tenant("sync-b", 0)]
        env.tenants += [f.id for f in fixtures]
        lifecycle = env.lifecycle()
        # A also runs a workflow that feeds no integration (its runs must be skipped).
        rows = await asyncio.gather(
            lifecycle.provision(fixtures[0].id, templates=[SYNC, WEBHOOK]),
            lifecycle.provision(fixtures[1].id, templates=[SYNC]),
        )
        assert [r.actual_state for r in rows] == [ActualState.RUNNING] * 2
        tenants = []
        for fixture, row in zip(fixtures, rows, strict=True):
            await owner.execute(
                "INSERT INTO integrations (tenant_id, provider, status) VALUES ($1, 'xero', "
                "'ACTIVE')",
                fixture.id,
            )
            assert row.url is not None
            tenants.append(Tenant(fixture, await env.api(fixture.id), row.url))
        yield Setup(env, tenants[0], tenants[1])


@pytest.fixture(scope="module")
def alerts(
    setup: Setup,
    n8n_http: httpx.AsyncClient,
    smtp_server: tuple[int, _Inbox],  # noqa: F811 - the imported fixture
) -> AlertService:
    """Its keyring is the instances' (as in a worker, where one keyring seals everything)."""
    smtp = SmtpChannel(
        host="127.0.0.1", port=smtp_server[0], sender="alerts@zixly.test", starttls=False
    )
    env = setup.env
    webhook = WebhookChannel(n8n_http, timeout=5, targets=WebhookTargets(allow_loopback=True))
    return AlertService(env.db, env.keyring, smtp, webhook)


@pytest.fixture
def shift() -> list[timedelta]:
    """The monitor's clock runs this far ahead of the real one."""
    return [timedelta(0)]


@pytest.fixture
def monitor(setup: Setup, alerts: AlertService, shift: list[timedelta]) -> SyncHealthMonitor:
    env = setup.env
    return SyncHealthMonitor(
        env.db,
        env.redis,
        TenantN8n(env.db, env.keyring, env.http),
        alerts,
        manifest=MANIFEST,
        timeout=15.0,
        clock=lambda: datetime.now(UTC) + shift[0],
    )


async def finished_runs(api: N8nClient) -> list[dict[str, Any]]:
    page = await api.list_executions(limit=250)
    return [e for e in page.items if e["status"] not in ("new", "running", "waiting")]


async def trigger(tenant: Tenant, http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """Run the workflow once through its webhook; returns the finished execution."""
    before = {e["id"] for e in await finished_runs(tenant.api)}
    path = HOOK_PATH if "path" not in body else body.pop("path")
    response = await http.post(f"{tenant.url}/webhook/{path}", json=body)
    assert response.status_code == 200, response.text
    async with asyncio.timeout(30):
        while True:
            new = [e for e in await finished_runs(tenant.api) if e["id"] not in before]
            if new:
                assert len(new) == 1
                return new[0]
            await asyncio.sleep(0.1)


async def integration(owner: asyncpg.Connection, tenant: Tenant) -> dict[str, Any]:
    row = await owner.fetchrow(
        "SELECT status, consecutive_failures, last_sync_at, last_failure_at, last_error, "
        "last_checked_at, last_execution_id FROM integrations "
        "WHERE tenant_id = $1 AND provider = 'xero'",
        tenant.id,
    )
    assert row is not None
    return dict(row)


async def instance(owner: asyncpg.Connection, tenant: Tenant) -> dict[str, Any]:
    row = await owner.fetchrow(
        "SELECT monitor_cursor, monitor_checked_at, monitor_error, lock_version "
        "FROM n8n_instances WHERE tenant_id = $1",
        tenant.id,
    )
    assert row is not None
    return dict(row)


async def alert_rows(owner: asyncpg.Connection, tenant: Tenant) -> list[dict[str, Any]]:
    rows = await owner.fetch(
        "SELECT key, severity, status, occurrences, details FROM alerts WHERE tenant_id = $1 "
        "ORDER BY first_seen, key",
        tenant.id,
    )
    return [{**r, "details": json.loads(r["details"])} for r in rows]


def stopped_at(execution: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(execution["stoppedAt"])


async def next_event(ws: ClientConnection) -> dict[str, Any]:
    message = await receive(ws)
    assert message["type"] == "next", message
    event: dict[str, Any] = message["payload"]["data"]["syncEvents"]
    return event


# --- failures, recovery, the cursor ------------------------------------------------------------


async def test_failures_turn_error_alert_once_then_recover(
    setup: Setup,
    monitor: SyncHealthMonitor,
    alerts: AlertService,
    owner: asyncpg.Connection,
    n8n_http: httpx.AsyncClient,
    smtp_server: tuple[int, _Inbox],  # noqa: F811 - the imported fixture
    webhook_server: tuple[int, Hooks],  # noqa: F811
    live_server: str,
    services: Services,
) -> None:
    a = setup.a
    (_, inbox), (hook_port, hooks) = smtp_server, webhook_server
    token = uuid.uuid4().hex
    await configure(alerts, a.id, [f"ops@{a.fixture.slug}.test"], hook_url(hook_port, token))
    mails, posts = len(inbox.mails), len(hooks.posts)
    world = World(owner, services.settings)

    async with connected(live_server, world.headers(a.fixture.viewer)) as ws:
        await subscribe(ws)
        await wait_for_subscribers(services, a.id, 1)

        failed = [await trigger(a, n8n_http, {"fail": True, "reason": REASON}) for _ in range(3)]
        foreign = await trigger(a, n8n_http, {"path": "zixly-test-hook"})  # feeds nothing
        assert [e["status"] for e in failed] == ["error"] * 3

        report = await monitor.run(only=[a.id])

        assert report.as_dict() == {
            "instances": 1,
            "checked": 1,
            "unreachable": 0,
            "failed": 0,
            "executions": 4,
            "status_changes": 1,
            "skipped": 0,
        }
        row = await integration(owner, a)
        assert (row["status"], row["consecutive_failures"]) == ("ERROR", 3)
        assert row["last_execution_id"] == failed[-1]["id"]
        assert row["last_failure_at"] == stopped_at(failed[-1])
        assert row["last_error"].startswith("Fetch Xero report: Xero answered: 401 Unauthorized")
        assert LEAKED not in row["last_error"] and "[redacted]" in row["last_error"]
        assert row["last_checked_at"] is not None and row["last_sync_at"] is None
        cursor = await instance(owner, a)
        assert cursor["monitor_cursor"] == int(foreign["id"]) and cursor["monitor_error"] is None

        event = await next_event(ws)
        assert (event["provider"], event["status"]) == ("xero", "ERROR")
        assert event["message"].startswith("3 consecutive failed runs: Fetch Xero report")
        assert LEAKED not in event["message"]

        assert [
            (r["key"], r["severity"], r["status"], r["occurrences"])
            for r in await alert_rows(owner, a)
        ] == [("integration:xero:sync", "WARNING", "OPEN", 1)]
        assert [m.subject for m in inbox.mails[mails:]] == ["[Zixly WARNING] Xero sync is failing"]
        assert LEAKED not in inbox.mails[-1].body
        assert [p["zixly"]["kind"] for _, p in hooks.posts[posts:]] == ["NOTICE"]

        succeeded = await trigger(a, n8n_http, {})
        report = await monitor.run(only=[a.id])

        assert report.as_dict()["status_changes"] == 1
        row = await integration(owner, a)
        assert (row["status"], row["consecutive_failures"]) == ("ACTIVE", 0)
        assert row["last_sync_at"] == stopped_at(succeeded)
        assert row["last_execution_id"] == succeeded["id"]
        event = await next_event(ws)
        assert (event["provider"], event["status"]) == ("xero", "ACTIVE")
        assert [(r["key"], r["status"]) for r in await alert_rows(owner, a)] == [
            ("integration:xero:sync", "RESOLVED")
        ]
        assert [m.subject for m in inbox.mails[mails:]] == [
            "[Zixly WARNING] Xero sync is failing",
            "[Zixly RESOLVED] Xero sync is failing",
        ]
        assert [p["zixly"]["kind"] for _, p in hooks.posts[posts:]] == ["NOTICE", "RECOVERY"]

        # Nothing new: nothing changes (the cursor keeps the old runs from counting again).
        before, cursor = await integration(owner, a), await instance(owner, a)
        report = await monitor.run(only=[a.id])
        after = await integration(owner, a)
        assert (report.as_dict()["executions"], report.as_dict()["status_changes"]) == (0, 0)
        assert after["last_checked_at"] > before["last_checked_at"]
        assert {**after, "last_checked_at": None} == {**before, "last_checked_at": None}
        assert (await instance(owner, a))["monitor_cursor"] == int(succeeded["id"])
        assert (await instance(owner, a))["lock_version"] == cursor["lock_version"]
        assert len(inbox.mails) - mails == 2 and len(hooks.posts) - posts == 2
        with pytest.raises(TimeoutError):  # no event for a pass that changed nothing
            async with asyncio.timeout(0.5):
                await ws.recv()


async def test_stale_without_a_recent_success_then_active_again(
    setup: Setup,
    monitor: SyncHealthMonitor,
    shift: list[timedelta],
    owner: asyncpg.Connection,
    n8n_http: httpx.AsyncClient,
    live_server: str,
    services: Services,
) -> None:
    a = setup.a
    world = World(owner, services.settings)
    async with connected(live_server, world.headers(a.fixture.viewer)) as ws:
        await subscribe(ws)
        await wait_for_subscribers(services, a.id, 1)

        shift[0] = timedelta(minutes=2 * INTERVAL_MINUTES - 1)  # not quite twice the interval
        await monitor.run(only=[a.id])
        assert (await integration(owner, a))["status"] == "ACTIVE"

        shift[0] = timedelta(minutes=2 * INTERVAL_MINUTES + 1)
        report = await monitor.run(only=[a.id])

        assert report.outcomes[0].changes == [("xero", "ACTIVE", "STALE")]
        assert (await integration(owner, a))["status"] == "STALE"
        event = await next_event(ws)
        assert (event["status"], event["message"].startswith("no successful run")) == (
            "STALE",
            True,
        )
        stale = [r for r in await alert_rows(owner, a) if r["key"] == "integration:xero:stale"]
        assert [(r["status"], r["severity"]) for r in stale] == [("OPEN", "WARNING")]

        shift[0] = timedelta(0)
        succeeded = await trigger(a, n8n_http, {})
        await monitor.run(only=[a.id])

        row = await integration(owner, a)
        assert (row["status"], row["last_sync_at"]) == ("ACTIVE", stopped_at(succeeded))
        assert (await next_event(ws))["status"] == "ACTIVE"
        stale = [r for r in await alert_rows(owner, a) if r["key"] == "integration:xero:stale"]
        assert [r["status"] for r in stale] == ["RESOLVED"]


# --- what tenants see ---------------------------------------------------------------------------

HEALTH = """{ integrations { provider status lastSyncAt consecutiveFailures lastCheckedAt
  lastFailureAt lastError } }"""


async def test_graphql_shows_each_tenant_its_own_health(
    setup: Setup,
    monitor: SyncHealthMonitor,
    owner: asyncpg.Connection,
    n8n_http: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
) -> None:
    a, b = setup.a, setup.b
    await trigger(b, n8n_http, {"fail": True, "reason": "rate limited"})
    await monitor.run(only=[a.id, b.id])
    world = World(owner, services.settings)

    body_a = await gql(client, HEALTH, headers=world.headers(a.fixture.viewer))
    body_b = await gql(client, HEALTH, headers=world.headers(b.fixture.viewer))

    [seen_a] = body_a["data"]["integrations"]
    [seen_b] = body_b["data"]["integrations"]
    row_a, row_b = await integration(owner, a), await integration(owner, b)
    assert (seen_a["status"], seen_a["consecutiveFailures"]) == ("ACTIVE", 0)
    assert seen_a["lastError"] == row_a["last_error"]  # the last failure, kept as history
    assert LEAKED not in str(body_a)
    assert seen_a["lastSyncAt"] == row_a["last_sync_at"].isoformat()
    assert (seen_b["status"], seen_b["consecutiveFailures"]) == ("ACTIVE", 1)
    assert seen_b["lastError"] == "Fetch Xero report: Xero answered: rate limited"
    assert seen_b["lastFailureAt"] == row_b["last_failure_at"].isoformat()
    assert seen_b["lastCheckedAt"] == row_b["last_checked_at"].isoformat()
    assert seen_b["lastSyncAt"] is None


# --- an instance that does not answer -----------------------------------------------------------


async def test_an_unreachable_instance_is_reported_and_the_others_still_checked(
    setup: Setup,
    monitor: SyncHealthMonitor,
    owner: asyncpg.Connection,
    n8n_http: httpx.AsyncClient,
) -> None:
    a, b, env = setup.a, setup.b, setup.env
    handle = handle_of(await env.row(b.id))
    assert handle is not None
    await env.runtime.stop(handle)  # n8n gone; the row still says RUNNING
    failures = (await integration(owner, a))["consecutive_failures"]
    await trigger(a, n8n_http, {"fail": True, "reason": "timeout"})

    report = await monitor.run(only=[a.id, b.id])

    counts = report.as_dict()
    assert (counts["checked"], counts["unreachable"], counts["failed"]) == (1, 1, 0)
    assert (await integration(owner, a))["consecutive_failures"] == failures + 1
    down = await instance(owner, b)
    assert down["monitor_error"] is not None and "unreachable" in down["monitor_error"]
    assert [(r["key"], r["status"], r["details"]) for r in await alert_rows(owner, b)] == [
        ("instance:unreachable", "OPEN", {"reason": "UNAVAILABLE"})
    ]
    row_b = await integration(owner, b)

    status = await env.runtime.start(handle)
    assert status.state is RuntimeState.RUNNING and status.url == b.url
    await N8nClient(b.url, n8n_http).wait_ready(60)
    report = await monitor.run(only=[a.id, b.id])

    assert report.as_dict()["unreachable"] == 0
    assert (await instance(owner, b))["monitor_error"] is None
    assert [(r["key"], r["status"]) for r in await alert_rows(owner, b)] == [
        ("instance:unreachable", "RESOLVED")
    ]
    assert (await integration(owner, b))["consecutive_failures"] == row_b["consecutive_failures"]


async def test_a_hanging_instance_times_out_without_holding_up_the_others(
    setup: Setup,
    monitor: SyncHealthMonitor,
    owner: asyncpg.Connection,
    n8n_http: httpx.AsyncClient,
) -> None:
    a, b, env = setup.a, setup.b, setup.env
    handle = handle_of(await env.row(b.id))
    assert handle is not None
    status = await env.runtime.inspect(handle)
    assert status.pid is not None
    hung = psutil.Process(status.pid)
    ran = await trigger(a, n8n_http, {})
    monitor.timeout = 2.0
    hung.suspend()  # accepts connections (the kernel does), never answers
    try:
        started = time.monotonic()
        report = await monitor.run(only=[a.id, b.id])
        elapsed = time.monotonic() - started
    finally:
        hung.resume()

    assert elapsed < 10, elapsed
    counts = report.as_dict()
    assert (counts["checked"], counts["unreachable"]) == (1, 1)
    assert (await integration(owner, a))["last_execution_id"] == ran["id"]
    assert (await instance(owner, b))["monitor_error"] == "no answer within 2s"
    [reopened] = [r for r in await alert_rows(owner, b) if r["status"] == "OPEN"]
    assert (reopened["key"], reopened["details"]) == ("instance:unreachable", {"reason": "TIMEOUT"})

    monitor.timeout = 15.0
    await monitor.run(only=[b.id])
    assert (await instance(owner, b))["monitor_error"] is None
    assert all(r["status"] == "RESOLVED" for r in await alert_rows(owner, b))


# --- the worker -------------------------------------------------------------------------------


async def test_the_worker_runs_the_monitor_every_minute(
    setup: Setup, owner: asyncpg.Connection, n8n_http: httpx.AsyncClient
) -> None:
    [job] = [c for c in WorkerSettings.cron_jobs if c.name == MONITOR_JOB]
    assert (job.unique, job.timeout_s, job.max_tries) == (True, MONITOR_TIMEOUT_SECONDS, 1)
    assert job.second == 30 and job.minute is None  # every minute

    env = setup.env
    worker_settings = make_settings(env.runtime.root.parent, encryption_keys=env.keys)
    keyring = Keyring.from_settings(worker_settings)
    ctx: dict[str, Any] = {
        "settings": worker_settings,
        "db": env.db,
        "redis": env.redis,
        "alerts": build_alert_service(worker_settings, env.db, n8n_http, keyring),
        "tenant_n8n": TenantN8n(env.db, keyring, n8n_http),
    }
    checked = {t.id: (await instance(owner, t))["monitor_checked_at"] for t in (setup.a, setup.b)}
    ran = await trigger(setup.b, n8n_http, {"fail": True, "reason": "again"})

    result = await monitor_sync_health(ctx)

    assert result["checked"] >= 2 and result["executions"] >= 1
    assert set(result) == {
        "instances",
        "checked",
        "unreachable",
        "failed",
        "executions",
        "status_changes",
        "skipped",
    }
    for tenant in (setup.a, setup.b):
        row = await instance(owner, tenant)
        assert row["monitor_checked_at"] > checked[tenant.id] and row["monitor_error"] is None
    # The bundled manifest does not know the test workflow: its run moves the cursor only.
    assert (await instance(owner, setup.b))["monitor_cursor"] == int(ran["id"])
    assert isinstance(ctx["sync_monitor"], SyncHealthMonitor)
    assert isinstance(ctx["alerts"], AlertService)


async def test_a_pass_is_skipped_while_another_runs(
    setup: Setup, monitor: SyncHealthMonitor, owner: asyncpg.Connection
) -> None:
    before = await instance(owner, setup.a)
    lock = setup.env.redis.lock(PASS_LOCK, timeout=30)
    assert await lock.acquire(blocking=False)
    try:
        report = await monitor.run(only=[setup.a.id])
    finally:
        await lock.release()
    assert report.as_dict()["skipped"] == 1 and report.outcomes == []
    assert (await instance(owner, setup.a))["monitor_checked_at"] == before["monitor_checked_at"]
