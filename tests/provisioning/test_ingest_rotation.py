"""Ingest tokens end to end: a real n8n instance posts heartbeats to the real ingest endpoint
with the token issued at deploy; staff rotate it (pushed into the instance's credential);
a rotation whose push fails leaves the current token working.

The Zixly app is served by uvicorn behind a tap that only records each request's
Authorization header and response status, so the test can see which token n8n really sent
(Zixly itself keeps nothing but digests).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from tests.conftest import World, _InProcessServer, gql, make_settings
from tests.provisioning.instance_support import LifecycleEnv
from zixly.app import create_app
from zixly.container import Services
from zixly.embedded.stack import Endpoints
from zixly.ingest.instance_tokens import INSTANCE_TOKEN_NAME
from zixly.provisioning.instances import ActualState
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.operations import handle_of

HEARTBEAT = "manifest:zixly-heartbeat"
ROTATE = "mutation($t: ID!) { rotateIngestToken(tenantId: $t) { id name prefix revokedAt } }"
LIST = "{ ingestTokens(includeRevoked: true) { id name prefix revokedAt } }"


@dataclass
class Tap:
    """Requests the served app received: (path, Authorization, response status)."""

    seen: list[tuple[str, str | None, int]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def wrap(self, app: Any) -> Any:
        async def tapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            status = 0

            async def record(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await app(scope, receive, record)
            self.seen.append((scope["path"], headers.get("authorization"), status))
            self.arrived.set()

        return tapped

    async def next_heartbeat(self, trigger: Any) -> tuple[str, int]:
        self.seen.clear()
        self.arrived.clear()
        await trigger()
        await asyncio.wait_for(self.arrived.wait(), 30)
        [(path, auth, status)] = self.seen
        assert path == "/ingest/v1/heartbeat" and auth is not None
        return auth.removeprefix("Bearer "), status


@dataclass
class Zixly:
    services: Services
    url: str
    client: httpx.AsyncClient
    tap: Tap


@pytest.fixture(scope="module")
async def zixly(env: LifecycleEnv, data_dir: Path, endpoints: Endpoints) -> AsyncIterator[Zixly]:
    """The app with the lifecycle's keyring (rotation decrypts the instance's owner login),
    served on loopback behind the tap, plus an in-process client for GraphQL."""
    settings = make_settings(data_dir, encryption_keys=env.keys)
    built = Services.build(
        settings, database_url=endpoints.database_url, redis_url=endpoints.redis_url
    )
    tap = Tap()
    app = create_app(built)
    config = uvicorn.Config(
        tap.wrap(app), host="127.0.0.1", port=0, lifespan="off", ws="none", log_level="warning"
    )
    server = _InProcessServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Zixly(built, f"http://127.0.0.1:{port}", client, tap)
    server.should_exit = True
    await task
    await built.close()


def lifecycle(env: LifecycleEnv, zixly: Zixly) -> InstanceLifecycle:
    return env.lifecycle(ingest_url=f"{zixly.url}/ingest/v1")


async def direct_heartbeat(zixly: Zixly, token: str) -> int:
    response = await zixly.client.post(
        "/ingest/v1/heartbeat", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    return response.status_code


async def test_rotation_reaches_the_instance_and_a_failed_push_changes_nothing(
    env: LifecycleEnv, zixly: Zixly, owner: asyncpg.Connection
) -> None:
    tenant_id = await env.tenant("ingest-rotate")
    row = await lifecycle(env, zixly).provision(tenant_id, templates=[HEARTBEAT])
    assert row.actual_state is ActualState.RUNNING and row.url is not None
    instance_url = row.url

    async def trigger() -> None:
        response = await env.http.post(f"{instance_url}/webhook/zixly-heartbeat")
        assert response.status_code == 200

    # The token issued at deploy works: n8n's heartbeat is accepted by the real endpoint.
    first, status = await zixly.tap.next_heartbeat(trigger)
    assert status == 200 and first.startswith("zik_")
    stored = await owner.fetchrow(
        "SELECT id, prefix, last_used_at FROM ingest_tokens "
        "WHERE tenant_id = $1 AND revoked_at IS NULL",
        tenant_id,
    )
    assert stored["prefix"] == first[:12] and stored["last_used_at"] is not None

    world = World(owner, env.settings)
    staff = world.headers(await world.staff())
    body = await gql(zixly.client, ROTATE, {"t": str(tenant_id)}, headers=staff)
    rotated = body["data"]["rotateIngestToken"]
    assert rotated["name"] == INSTANCE_TOKEN_NAME and rotated["prefix"] != first[:12]
    # The old token stopped working; n8n now sends the new one (pushed into its credential).
    assert await direct_heartbeat(zixly, first) == 401
    second, status = await zixly.tap.next_heartbeat(trigger)
    assert status == 200 and second[:12] == rotated["prefix"]
    audit = await owner.fetchval(
        "SELECT details->>'credentials_updated' FROM audit_log "
        "WHERE tenant_id = $1 AND action = 'ingest_token.rotated'",
        tenant_id,
    )
    assert audit == "1"

    # n8n goes away behind Zixly's back (the row still says RUNNING): the push fails, the
    # new token is revoked at once and the current one keeps working.
    handle = handle_of(await env.row(tenant_id))
    assert handle is not None
    await env.runtime.stop(handle)
    failed = await zixly.client.post(
        "/graphql", json={"query": ROTATE, "variables": {"t": str(tenant_id)}}, headers=staff
    )
    [error] = failed.json()["errors"]
    assert error["extensions"]["code"] == "UNAVAILABLE"
    assert await direct_heartbeat(zixly, second) == 200
    tokens = await owner.fetch(
        "SELECT name, prefix, revoked_at FROM ingest_tokens WHERE tenant_id = $1 "
        "ORDER BY created_at",
        tenant_id,
    )
    assert [(t["prefix"], t["revoked_at"] is None) for t in tokens] == [
        (first[:12], False),
        (second[:12], True),
        (tokens[2]["prefix"], False),
    ]
    assert tokens[1]["name"] == INSTANCE_TOKEN_NAME
    assert (
        await owner.fetchval(
            "SELECT count(*) FROM audit_log WHERE tenant_id = $1 "
            "AND action = 'ingest_token.rotation_failed'",
            tenant_id,
        )
        == 1
    )
