"""Manifest templates deployed by the lifecycle into real n8n instances (process runtime).

Two tenants get the heartbeat template; its ingest URL points at a capture server in this
module, so triggering the on-demand webhook proves the rendered request n8n really sends.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn

from tests.provisioning.instance_support import LifecycleEnv
from zixly.provisioning.instances import ActualState
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.n8n.client import N8nClient

HEARTBEAT = "manifest:zixly-heartbeat"
HEARTBEAT_NAME = "Zixly: heartbeat"
CREDENTIAL = "Zixly ingest token"


@dataclass
class Capture:
    """A stand-in ingest endpoint recording what reaches it."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture(scope="module")
async def ingest() -> AsyncIterator[Capture]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    capture = Capture(url=f"http://127.0.0.1:{port}/ingest")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        capture.received.append(
            {"path": scope["path"], "auth": headers.get("authorization"), "body": json.loads(body)}
        )
        capture.arrived.set()
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", ws="none", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield capture
    server.should_exit = True
    await task


def lifecycle(env: LifecycleEnv, ingest: Capture) -> InstanceLifecycle:
    return env.lifecycle(ingest_url=ingest.url)


@dataclass
class Deployed:
    tenant_id: uuid.UUID
    slug: str
    api: N8nClient
    cookie: str


async def provisioned(env: LifecycleEnv, ingest: Capture, label: str) -> Deployed:
    tenant = await env.tenant(label)
    row = await lifecycle(env, ingest).provision(tenant, templates=[HEARTBEAT])
    assert row.actual_state is ActualState.RUNNING and row.templates == [HEARTBEAT]
    slug = await env.owner.fetchval("SELECT slug FROM tenants WHERE id = $1", tenant)
    secrets = lifecycle(env, ingest).secrets.for_bootstrap(row)
    api = await env.api(tenant)
    cookie = await api.login(secrets.owner_email, secrets.owner_password)
    return Deployed(tenant, str(slug), api, cookie)


@pytest.fixture(scope="module")
async def tenants(env: LifecycleEnv, ingest: Capture) -> tuple[Deployed, Deployed]:
    return await provisioned(env, ingest, "heartbeat-a"), await provisioned(
        env, ingest, "heartbeat-b"
    )


async def heartbeat_node(deployed: Deployed) -> tuple[dict[str, Any], dict[str, Any]]:
    [listed] = await deployed.api.all_workflows(name=HEARTBEAT_NAME)
    workflow = await deployed.api.get_workflow(str(listed["id"]))
    return workflow, next(n for n in workflow["nodes"] if n["name"] == "Post heartbeat")


async def ingest_credentials(deployed: Deployed) -> list[dict[str, Any]]:
    return [
        c for c in await deployed.api.list_credentials(deployed.cookie) if c["name"] == CREDENTIAL
    ]


async def test_the_credential_and_the_active_workflow_carry_the_tenants_values(
    env: LifecycleEnv, ingest: Capture, tenants: tuple[Deployed, Deployed]
) -> None:
    for deployed in tenants:
        [credential] = await ingest_credentials(deployed)
        assert credential["type"] == "httpHeaderAuth"
        workflow, node = await heartbeat_node(deployed)
        assert workflow["active"] is True
        params = node["parameters"]
        assert params["url"] == f"{ingest.url}/heartbeat"
        assert params["bodyParameters"]["parameters"][:2] == [
            {"name": "tenant", "value": str(deployed.tenant_id)},
            {"name": "slug", "value": deployed.slug},
        ]
        assert node["credentials"] == {
            "httpHeaderAuth": {"id": credential["id"], "name": CREDENTIAL}
        }
        assert "__ZIXLY_" not in json.dumps(workflow)
    assert tenants[0].slug != tenants[1].slug


async def test_deploying_again_duplicates_nothing(
    env: LifecycleEnv, ingest: Capture, tenants: tuple[Deployed, Deployed]
) -> None:
    first = tenants[0]
    [before] = await ingest_credentials(first)
    row = await lifecycle(env, ingest).deploy_templates(first.tenant_id, [HEARTBEAT])
    assert row.templates == [HEARTBEAT]
    assert [c["id"] for c in await ingest_credentials(first)] == [before["id"]]
    assert await env.workflows(first.tenant_id) == [(HEARTBEAT_NAME, True)]


async def test_the_on_demand_webhook_posts_the_tenants_heartbeat_with_its_token(
    env: LifecycleEnv, ingest: Capture, tenants: tuple[Deployed, Deployed]
) -> None:
    tokens = []
    for deployed in tenants:
        ingest.received.clear()
        ingest.arrived.clear()
        response = await env.http.post(f"{deployed.api.base_url}/webhook/zixly-heartbeat")
        assert response.status_code == 200
        await asyncio.wait_for(ingest.arrived.wait(), 30)
        [received] = ingest.received
        assert received["path"] == "/ingest/heartbeat"
        assert received["body"]["tenant"] == str(deployed.tenant_id)
        assert received["body"]["slug"] == deployed.slug
        assert received["body"]["template"] == "zixly-heartbeat"
        assert received["auth"].startswith("Bearer ") and len(received["auth"]) > 40
        tokens.append(received["auth"])
    assert tokens[0] != tokens[1]  # per-tenant tokens
