"""Tenant n8n instances over GraphQL, with real n8n processes, a real arq worker, PostgreSQL
and Redis.

Staff provision ``alpha`` and ``bravo`` through mutations; an in-process burst worker runs the
enqueued jobs. The tests run in file order: bravo is stopped and started, then alpha is
exported, deprovisioned, and its workflows imported into a third tenant, ``charlie``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import TenantFixture, World, gql
from tests.provisioning.conftest import READY_WITHIN, load_workflow
from tests.provisioning.instance_support import (
    N8N_VERSION,
    SCHEDULE_NAME,
    WEBHOOK_NAME,
    LifecycleEnv,
    run_queued_jobs,
)
from tests.test_subscriptions import connected, receive
from zixly.container import Services
from zixly.core.settings import Settings
from zixly.embedded.stack import Endpoints
from zixly.provisioning.instance_events import channel
from zixly.provisioning.operations import handle_of
from zixly.provisioning.runtimes.process import ProcessRuntime
from zixly.security.crypto import Keyring

INSTANCE = "status desiredState step version targetVersion url editorUrl lastError updatedAt"
OPERATE = "mutation($t: ID!) {{ {name}(tenantId: $t) {{ " + INSTANCE + " }} }}"
PROVISION = (
    "mutation($t: ID!, $templates: [JSON!]) { provisionInstance(tenantId: $t, "
    "templates: $templates) { " + INSTANCE + " } }"
)
STAFF_INSTANCE = "query($t: ID!) { instance(tenantId: $t) { " + INSTANCE + " } }"
N8N_INSTANCE = "{ n8nInstance { status version editorUrl health lastHealthAt } }"
WORKFLOWS = "{ workflows { id name active updatedAt } }"
EXPORT = "query($ids: [ID!]) { exportWorkflows(ids: $ids) }"
IMPORT = (
    "mutation($b: JSON!) { importWorkflows(bundle: $b) { ok "
    "imported { index name id sourceId active dropped activationError } "
    "problems { index name path message } } }"
)


def code(body: dict[str, Any]) -> str:
    assert body.get("errors"), body
    return str(body["errors"][0]["extensions"]["code"])


@dataclass
class Stack:
    env: LifecycleEnv
    world: World
    client: httpx.AsyncClient
    endpoints: Endpoints
    settings: Settings
    staff: dict[str, str]
    alpha: TenantFixture
    bravo: TenantFixture
    first_answers: list[dict[str, Any]]
    ran: tuple[int, int]

    async def staff_op(self, name: str, tenant: TenantFixture | uuid.UUID) -> dict[str, Any]:
        tenant_id = tenant if isinstance(tenant, uuid.UUID) else tenant.id
        query = OPERATE.format(name=name)
        return await gql(self.client, query, {"t": str(tenant_id)}, self.staff)

    async def admin(
        self, tenant: TenantFixture, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await gql(self.client, query, variables, self.world.headers(tenant.admin))

    async def status(self, tenant: TenantFixture) -> dict[str, Any]:
        body = await gql(self.client, STAFF_INSTANCE, {"t": str(tenant.id)}, self.staff)
        instance: dict[str, Any] = body["data"]["instance"]
        return instance

    async def run_jobs(self) -> tuple[int, int]:
        """Run every queued job in an in-process arq worker; (complete, failed). The API's
        settings: their keyring reads the sealed API key."""
        return await run_queued_jobs(self.settings, self.endpoints, self.env.runtime)


@pytest.fixture(scope="module")
async def stack(
    services: Services,
    process_runtime: ProcessRuntime,
    n8n_http: httpx.AsyncClient,
    owner: asyncpg.Connection,
    settings: Settings,
    client: httpx.AsyncClient,
    endpoints: Endpoints,
) -> AsyncIterator[Stack]:
    env = LifecycleEnv(
        db=services.db,
        redis=services.redis,
        runtime=process_runtime,
        http=n8n_http,
        keyring=Keyring.from_settings(settings),
        owner=owner,
        settings=settings,
        keys="",
    )
    world = World(owner, settings)
    staff = world.headers(await world.staff())
    alpha = await world.tenant("inst-alpha", clients=0)
    bravo = await world.tenant("inst-bravo", clients=0)
    env.tenants += [alpha.id, bravo.id]
    built = Stack(env, world, client, endpoints, settings, staff, alpha, bravo, [], (0, 0))
    try:
        schedule = load_workflow("schedule-noop.json")
        webhook = load_workflow("webhook-noop.json")
        for tenant, template in ((alpha, schedule), (alpha, schedule), (bravo, webhook)):
            body = await gql(
                client, PROVISION, {"t": str(tenant.id), "templates": [template]}, staff
            )
            built.first_answers.append(body)
        built.ran = await built.run_jobs()
        yield built
    finally:
        await env.cleanup()


# --- staff ------------------------------------------------------------------------------------


async def test_staff_provision_records_the_intent_and_the_job_runs_once(stack: Stack) -> None:
    first = stack.first_answers[0]["data"]["provisionInstance"]
    assert (first["status"], first["desiredState"], first["step"]) == ("PENDING", "RUNNING", None)
    assert (first["version"], first["url"], first["lastError"]) == (N8N_VERSION, None, None)
    # Asked twice for alpha, once for bravo: the deterministic job id runs alpha's once.
    assert stack.ran == (2, 0)
    for tenant in (stack.alpha, stack.bravo):
        row = await stack.env.row(tenant.id)
        instance = await stack.status(tenant)
        assert instance == {
            "status": "RUNNING",
            "desiredState": "RUNNING",
            "step": "DONE",
            "version": N8N_VERSION,
            "targetVersion": None,
            "url": row.url,
            "editorUrl": f"{row.url}/",
            "lastError": None,
            "updatedAt": row.updated_at.isoformat(),
        }


async def test_non_staff_get_forbidden_on_every_staff_operation(stack: Stack) -> None:
    tenant = str(stack.alpha.id)
    for email in (stack.alpha.admin, stack.alpha.viewer):
        headers = stack.world.headers(email)
        for name in ("stopInstance", "startInstance", "deprovisionInstance"):
            body = await gql(stack.client, OPERATE.format(name=name), {"t": tenant}, headers)
            assert code(body) == "FORBIDDEN", (email, name)
        body = await gql(stack.client, PROVISION, {"t": tenant}, headers)
        assert code(body) == "FORBIDDEN"
        body = await gql(
            stack.client,
            'mutation($t: ID!) { upgradeInstance(tenantId: $t, version: "1.2.3") { status } }',
            {"t": tenant},
            headers,
        )
        assert code(body) == "FORBIDDEN"
        body = await gql(stack.client, STAFF_INSTANCE, {"t": tenant}, headers)
        assert code(body) == "FORBIDDEN"
    # Nothing changed: alpha is still wanted running.
    assert (await stack.status(stack.alpha))["desiredState"] == "RUNNING"


async def test_unknown_tenants_and_bad_input(stack: Stack) -> None:
    unknown = uuid.uuid4()
    assert code(await stack.staff_op("provisionInstance", unknown)) == "NOT_FOUND"
    assert code(await stack.staff_op("stopInstance", unknown)) == "NOT_FOUND"
    body = await gql(stack.client, STAFF_INSTANCE, {"t": str(unknown)}, stack.staff)
    assert code(body) == "NOT_FOUND"
    body = await gql(stack.client, STAFF_INSTANCE, {"t": "not-a-uuid"}, stack.staff)
    assert code(body) == "VALIDATION_ERROR"
    for bad in ("/etc/passwd", "manifest:no-such-template", "manifest:../../etc/passwd"):
        body = await gql(
            stack.client, PROVISION, {"t": str(stack.alpha.id), "templates": [bad]}, stack.staff
        )
        assert code(body) == "VALIDATION_ERROR"
    body = await gql(
        stack.client,
        'mutation($t: ID!) { upgradeInstance(tenantId: $t, version: "latest") { status } }',
        {"t": str(stack.alpha.id)},
        stack.staff,
    )
    assert code(body) == "VALIDATION_ERROR"
    assert body["errors"][0]["extensions"]["field"] == "version"


# --- the tenant's own n8n ---------------------------------------------------------------------


async def test_admin_sees_its_own_instance_and_workflows_only(stack: Stack) -> None:
    for tenant, expected in ((stack.alpha, SCHEDULE_NAME), (stack.bravo, WEBHOOK_NAME)):
        row = await stack.env.row(tenant.id)
        body = await stack.admin(tenant, N8N_INSTANCE)
        assert body["data"]["n8nInstance"] == {
            "status": "RUNNING",
            "version": N8N_VERSION,
            # The proxy, never the instance's own address.
            "editorUrl": f"http://127.0.0.1:8000/editor/{tenant.slug}/",
            "health": row.last_health,
            "lastHealthAt": row.last_health_at.isoformat() if row.last_health_at else None,
        }
        listed = await (await stack.env.api(tenant.id)).all_workflows()
        assert [w["name"] for w in listed] == [expected]
        body = await stack.admin(tenant, WORKFLOWS)
        assert body["data"]["workflows"] == [
            {
                "id": listed[0]["id"],
                "name": expected,
                "active": True,
                "updatedAt": datetime.fromisoformat(listed[0]["updatedAt"]).isoformat(),
            }
        ]
        assert "apiKey" not in json.dumps(body) and "X-N8N" not in json.dumps(body)


async def test_viewers_and_editors_are_forbidden(stack: Stack) -> None:
    for email in (stack.alpha.viewer, stack.alpha.editor):
        headers = stack.world.headers(email)
        for query, variables in (
            (N8N_INSTANCE, None),
            (WORKFLOWS, None),
            (EXPORT, {"ids": None}),
            (IMPORT, {"b": []}),
        ):
            body = await gql(stack.client, query, variables, headers)
            assert code(body) == "FORBIDDEN", (email, query)


async def test_another_tenant_cannot_reach_this_instance(stack: Stack) -> None:
    alpha_ids = [w["id"] for w in await (await stack.env.api(stack.alpha.id)).all_workflows()]
    # bravo's admin naming alpha's tenant is not a member there: rejected before any resolver.
    headers = stack.world.headers(stack.bravo.admin, stack.alpha.slug)
    response = await stack.client.post("/graphql", json={"query": WORKFLOWS}, headers=headers)
    assert response.status_code == 403
    assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # alpha's workflow ids mean nothing in bravo's n8n.
    body = await stack.admin(stack.bravo, EXPORT, {"ids": alpha_ids})
    assert code(body) == "NOT_FOUND"
    assert body["errors"][0]["extensions"]["ids"] == alpha_ids
    # bravo's whole export holds bravo's workflow only.
    body = await stack.admin(stack.bravo, EXPORT)
    assert [w["name"] for w in body["data"]["exportWorkflows"]["workflows"]] == [WEBHOOK_NAME]


async def test_stop_and_start_stream_progress_to_staff(stack: Stack, live_server: str) -> None:
    subscription = "subscription($t: ID!) { instanceEvents(tenantId: $t) { kind step message at } }"
    async with connected(live_server, stack.staff) as ws:
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": subscription, "variables": {"t": str(stack.bravo.id)}},
                }
            )
        )
        await _wait_subscribed(stack, stack.bravo.id)
        body = await stack.staff_op("stopInstance", stack.bravo)
        assert body["data"]["stopInstance"]["desiredState"] == "STOPPED"
        event = (await receive(ws))["payload"]["data"]["instanceEvents"]
        assert (event["kind"], event["step"], event["message"]) == (
            "REQUESTED",
            None,
            "stop requested",
        )
        assert await stack.run_jobs() == (1, 0)
        event = (await receive(ws))["payload"]["data"]["instanceEvents"]
        assert (event["kind"], event["message"]) == ("TRANSITION", "stopped")
    assert (await stack.status(stack.bravo))["status"] == "STOPPED"
    body = await stack.admin(stack.bravo, WORKFLOWS)
    assert code(body) == "UNAVAILABLE"
    assert "stopped" in body["errors"][0]["message"]

    await stack.staff_op("startInstance", stack.bravo)
    assert await stack.run_jobs() == (1, 0)
    assert (await stack.status(stack.bravo))["status"] == "RUNNING"
    body = await stack.admin(stack.bravo, WORKFLOWS)
    assert [w["name"] for w in body["data"]["workflows"]] == [WEBHOOK_NAME]


async def test_staff_subscription_is_forbidden_to_tenants(stack: Stack, live_server: str) -> None:
    subscription = "subscription($t: ID!) { instanceEvents(tenantId: $t) { kind } }"
    async with connected(live_server, stack.world.headers(stack.alpha.admin)) as ws:
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": subscription, "variables": {"t": str(stack.alpha.id)}},
                }
            )
        )
        message = await receive(ws)
    assert message["type"] == "next"
    assert message["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_an_n8n_that_is_down_is_unavailable_not_internal(stack: Stack) -> None:
    row = await stack.env.row(stack.bravo.id)
    handle = handle_of(row)
    assert handle is not None and row.url is not None
    await stack.env.runtime.stop(handle)  # behind the lifecycle's back: the row says RUNNING
    body = await stack.admin(stack.bravo, WORKFLOWS)
    assert code(body) == "UNAVAILABLE"
    assert row.url not in json.dumps(body)  # n8n's internal address stays inside
    body = await stack.admin(stack.bravo, EXPORT)
    assert code(body) == "UNAVAILABLE"
    await stack.staff_op("startInstance", stack.bravo)  # desired RUNNING already: repairs
    assert await stack.run_jobs() == (1, 0)
    body = await stack.admin(stack.bravo, WORKFLOWS)
    assert [w["name"] for w in body["data"]["workflows"]] == [WEBHOOK_NAME]


# --- export, deprovision, import into a new tenant --------------------------------------------


async def test_export_deprovision_then_import_into_a_new_tenant(stack: Stack) -> None:
    source = await stack.env.api(stack.alpha.id)
    [listed] = await source.all_workflows()
    original = await source.get_workflow(str(listed["id"]))
    body = await stack.admin(stack.alpha, EXPORT, {"ids": [listed["id"]]})
    bundle = body["data"]["exportWorkflows"]
    assert [w["name"] for w in bundle["workflows"]] == [SCHEDULE_NAME]

    body = await stack.staff_op("deprovisionInstance", stack.alpha)
    assert body["data"]["deprovisionInstance"]["desiredState"] == "ABSENT"
    assert await stack.run_jobs() == (1, 0)
    assert (await stack.status(stack.alpha))["status"] == "DEPROVISIONED"
    body = await stack.admin(stack.alpha, N8N_INSTANCE)
    assert body["data"]["n8nInstance"]["status"] == "DEPROVISIONED"
    assert code(await stack.admin(stack.alpha, WORKFLOWS)) == "NOT_FOUND"

    charlie = await stack.world.tenant("inst-charlie", clients=0)
    stack.env.tenants.append(charlie.id)
    # An empty list: none of the plan's default templates (the bundle is imported instead).
    await gql(stack.client, PROVISION, {"t": str(charlie.id), "templates": []}, stack.staff)
    assert await stack.run_jobs() == (1, 0)
    assert (await stack.status(charlie))["status"] == "RUNNING"

    body = await stack.admin(charlie, IMPORT, {"b": bundle})
    report = body["data"]["importWorkflows"]
    assert report["ok"] is True and report["problems"] == []
    [imported] = report["imported"]
    assert (imported["name"], imported["sourceId"], imported["active"]) == (
        SCHEDULE_NAME,
        listed["id"],
        False,
    )
    copy = await (await stack.env.api(charlie.id)).get_workflow(imported["id"])
    for key in ("nodes", "connections", "settings"):
        assert copy[key] == original[key], key
    body = await stack.admin(charlie, WORKFLOWS)
    assert [(w["id"], w["name"]) for w in body["data"]["workflows"]] == [
        (imported["id"], SCHEDULE_NAME)
    ]


async def test_import_reports_invalid_workflows_without_importing_them(stack: Stack) -> None:
    broken = [{"name": "Broken", "nodes": "not a list", "connections": {}}]
    body = await stack.admin(stack.bravo, IMPORT, {"b": broken})
    report = body["data"]["importWorkflows"]
    assert report["ok"] is False and report["imported"] == []
    assert [(p["index"], p["name"], p["path"]) for p in report["problems"]] == [
        (0, "Broken", "nodes")
    ]
    assert report["problems"][0]["message"] == "must be an array"
    body = await stack.admin(stack.bravo, WORKFLOWS)
    assert [w["name"] for w in body["data"]["workflows"]] == [WEBHOOK_NAME]


async def _wait_subscribed(stack: Stack, tenant_id: uuid.UUID) -> None:
    async with asyncio.timeout(READY_WITHIN):
        while True:
            [(_, count)] = await stack.env.redis.pubsub_numsub(channel(tenant_id))
            if int(count):
                return
            await asyncio.sleep(0.01)
