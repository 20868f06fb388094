"""WebSocket sessions that follow the principal (zixly.graphql.ws), against real uvicorn
servers, PostgreSQL and Redis.

Each operation is authorised as a new request; the socket closes 4401 when its token
expires and 4403 when its user's membership or role in its tenant changes (announced over
Redis to every replica); each operation has a transaction of its own; operations count
against the HTTP rate limit.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import World, make_settings, served
from tests.test_subscriptions import SUBSCRIPTION, connected, receive
from zixly.container import Services
from zixly.core.settings import Settings
from zixly.embedded.stack import Endpoints
from zixly.security.principal_events import CHANNEL

TIMEOUT = 5.0
ME = "{ me { email role tenant { slug } } }"
SET_ROLE = "mutation($id: ID!, $role: RoleEnum!) { setUserRole(userId: $id, role: $role) { role } }"
REMOVE = "mutation($id: ID!) { removeUser(userId: $id) { email } }"
# Two writes: between them another operation gets its turn on the database.
UPSERT_TWO = (
    'mutation($id: String!, $other: String!) { one: upsertClient(input: {clientId: $id, name: "1"}) '
    '{ clientId } two: upsertClient(input: {clientId: $other, name: "2"}) { clientId } }'
)
# The first field writes, the second fails validation: the whole operation is rolled back.
UPSERT_THEN_FAIL = (
    "mutation($id: String!) { ok: upsertClient(input: {clientId: $id, name: $id}) { clientId } "
    'bad: upsertClient(input: {clientId: "", name: "x"}) { clientId } }'
)


@asynccontextmanager
async def replica(endpoints: Endpoints, settings: Settings) -> AsyncIterator[tuple[Services, str]]:
    """Another API process: its own services (pools, pub/sub listener) and uvicorn, on the
    same PostgreSQL and Redis."""
    built = Services.build(
        settings, database_url=endpoints.database_url, redis_url=endpoints.redis_url
    )
    try:
        async with served(built) as url:
            yield built, url
    finally:
        await built.close()


async def user_id(owner: asyncpg.Connection, email: str) -> str:
    return str(await owner.fetchval("SELECT id FROM users WHERE email = $1", email))


async def http(base: str, query: str, variables: dict[str, Any], headers: dict[str, str]) -> Any:
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
    return response.json()


async def send(ws: ClientConnection, op: str, query: str, variables: dict[str, Any]) -> None:
    payload = {"query": query, "variables": variables}
    await ws.send(json.dumps({"id": op, "type": "subscribe", "payload": payload}))


async def run(
    ws: ClientConnection, op: str, query: str, variables: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Subscribe ``query`` as operation ``op``; its messages up to the last one."""
    await send(ws, op, query, variables or {})
    messages = []
    while True:
        message = await receive(ws)
        if message.get("id") == op:
            messages.append(message)
            if message["type"] in ("complete", "error"):
                return messages


async def close_code(ws: ClientConnection) -> int:
    """The code the server closes ``ws`` with (within TIMEOUT), skipping other messages."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        assert closed.rcvd is not None
        return closed.rcvd.code
    raise AssertionError("unreachable")


async def still_open(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "ping"}))
    assert (await receive(ws))["type"] == "pong"


def codes(messages: list[dict[str, Any]]) -> list[str]:
    """The error codes of an operation's messages (``error`` payloads and ``next`` errors)."""
    found = []
    for message in messages:
        payload = message.get("payload")
        errors = payload if message["type"] == "error" else (payload or {}).get("errors", [])
        found += [error.get("extensions", {}).get("code", "") for error in errors or []]
    return found


async def watched(services: Services) -> None:
    """Until this process listens for principal changes."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            [(_, count)] = await services.redis.pubsub_numsub(CHANNEL)
            if count >= 1:
                return
            await asyncio.sleep(0.01)


# --- removal and demotion ---------------------------------------------------------------------


async def test_a_removed_members_socket_closes_4403_and_cannot_operate_again(
    live_server: str, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("ws-removed", clients=0)
    editor = world.headers(tenant.editor, tenant.slug)  # naming the tenant
    async with connected(live_server, editor) as ws:
        await send(ws, "live", SUBSCRIPTION, {})  # a subscription running when it happens
        assert codes(await run(ws, "me", ME)) == []
        removed = await http(
            live_server,
            REMOVE,
            {"id": await user_id(owner, tenant.editor)},
            world.headers(tenant.admin),
        )
        assert removed == {"data": {"removeUser": {"email": tenant.editor}}}
        assert await close_code(ws) == 4403
    # The same token opens no new socket either.
    try:
        async with connected(live_server, editor):
            raise AssertionError("a removed member connected again")
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 4403


async def test_an_operation_after_the_membership_is_gone_is_refused_even_unannounced(
    live_server: str, world: World, owner: asyncpg.Connection
) -> None:
    """The announcement is a hint: each operation reads the membership again itself (here
    with a token that names no tenant: the user's one membership was the tenant)."""
    tenant = await world.tenant("ws-gone", clients=0)
    async with connected(live_server, world.headers(tenant.viewer)) as ws:
        assert codes(await run(ws, "1", ME)) == []
        await owner.execute(  # behind the API's back: nothing is published
            "DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2",
            tenant.id,
            uuid.UUID(await user_id(owner, tenant.viewer)),
        )
        refused = await run(ws, "2", ME)
        assert refused[0]["type"] == "error" and codes(refused) == ["FORBIDDEN"]
        assert await close_code(ws) == 4403


async def test_a_demoted_admins_socket_closes_4403(
    live_server: str, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("ws-demoted", clients=0)
    await owner.execute(  # a second ADMIN, so the first may be demoted
        "UPDATE memberships SET role = 'ADMIN' WHERE tenant_id = $1 AND user_id = $2",
        tenant.id,
        uuid.UUID(await user_id(owner, tenant.editor)),
    )
    demotion = {"id": await user_id(owner, tenant.admin), "role": "VIEWER"}
    async with connected(live_server, world.headers(tenant.admin)) as ws:
        assert codes(await run(ws, "1", ME)) == []
        # A demotion in an operation that fails is rolled back, so it is never announced.
        rolled_back = await http(
            live_server,
            "mutation($id: ID!, $role: RoleEnum!) { setUserRole(userId: $id, role: $role) "
            '{ role } bad: upsertClient(input: {clientId: "", name: "x"}) { clientId } }',
            demotion,
            world.headers(tenant.editor),
        )
        assert [e["extensions"]["code"] for e in rolled_back["errors"]] == ["VALIDATION_ERROR"]
        await still_open(ws)
        assert (await run(ws, "2", ME))[0]["payload"]["data"]["me"]["role"] == "ADMIN"
        demoted = await http(live_server, SET_ROLE, demotion, world.headers(tenant.editor))
        assert demoted == {"data": {"setUserRole": {"role": "VIEWER"}}}
        assert await close_code(ws) == 4403


async def test_a_demoted_admins_next_operation_runs_with_the_new_role(
    live_server: str, world: World, owner: asyncpg.Connection
) -> None:
    """Unannounced (changed in the database directly), the role is still read again for
    each operation: the ADMIN mutation is FORBIDDEN, the socket stays open (still a member)."""
    tenant = await world.tenant("ws-demoted-quiet", clients=0)
    admin_id = await user_id(owner, tenant.admin)
    viewer_id = await user_id(owner, tenant.viewer)
    async with connected(live_server, world.headers(tenant.admin)) as ws:
        promoted = await run(ws, "1", SET_ROLE, {"id": viewer_id, "role": "EDITOR"})
        assert codes(promoted) == []
        await owner.execute(
            "UPDATE memberships SET role = 'EDITOR' WHERE tenant_id = $1 AND user_id = $2",
            tenant.id,
            uuid.UUID(admin_id),
        )
        refused = await run(ws, "2", SET_ROLE, {"id": viewer_id, "role": "VIEWER"})
        assert codes(refused) == ["FORBIDDEN"]
        me = await run(ws, "3", ME)
        assert me[0]["payload"]["data"]["me"]["role"] == "EDITOR"
        await still_open(ws)
    role = await owner.fetchval(
        "SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2",
        tenant.id,
        uuid.UUID(viewer_id),
    )
    assert role == "EDITOR"


# --- across replicas and tenants ----------------------------------------------------------------


async def test_a_change_made_on_another_replica_closes_the_socket_here(
    live_server: str,
    services: Services,
    world: World,
    owner: asyncpg.Connection,
    endpoints: Endpoints,
    settings: Settings,
) -> None:
    tenant = await world.tenant("ws-replica", clients=0)
    async with (
        replica(endpoints, settings) as (_, other_url),
        connected(live_server, world.headers(tenant.editor)) as ws,
    ):
        await watched(services)
        removed = await http(
            other_url,
            REMOVE,
            {"id": await user_id(owner, tenant.editor)},
            world.headers(tenant.admin),
        )
        assert "errors" not in removed, removed
        assert await close_code(ws) == 4403


async def test_changes_close_only_that_users_sockets_in_that_tenant(
    live_server: str, services: Services, world: World, owner: asyncpg.Connection
) -> None:
    a = await world.tenant("ws-iso-a", clients=0)
    b = await world.tenant("ws-iso-b", clients=0)
    shared = a.editor  # a member of both tenants
    await owner.execute(
        "INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, 'EDITOR')",
        b.id,
        uuid.UUID(await user_id(owner, shared)),
    )
    async with (
        connected(live_server, world.headers(shared, a.slug)) as in_a,
        connected(live_server, world.headers(shared, b.slug)) as in_b,
        connected(live_server, world.headers(a.viewer)) as a_viewer,
    ):
        for ws in (in_a, in_b, a_viewer):
            await send(ws, "live", SUBSCRIPTION, {})
        # b's own viewer removed, then the shared user removed from b (not from a).
        for email in (b.viewer, shared):
            removed = await http(
                live_server, REMOVE, {"id": await user_id(owner, email)}, world.headers(b.admin)
            )
            assert "errors" not in removed, removed
        assert await close_code(in_b) == 4403
        for ws in (in_a, a_viewer):
            await still_open(ws)
            assert codes(await run(ws, "me", ME)) == []
    await unwatched(services)


async def unwatched(services: Services) -> None:
    """Until every socket of the process stopped being watched, and the listener with them."""
    watch = services.principal_watch
    async with asyncio.timeout(TIMEOUT):
        while watch.watching or watch.listening:
            await asyncio.sleep(0.01)


# --- token expiry -------------------------------------------------------------------------------


async def test_the_socket_closes_4401_when_its_token_expires(
    world: World, endpoints: Endpoints, data_dir: Path
) -> None:
    settings = make_settings(data_dir, jwt_leeway_seconds=0)
    tenant = await world.tenant("ws-expiry", clients=0)
    token = world.token(tenant.viewer, ttl_seconds=2)
    async with (
        replica(endpoints, settings) as (_, url),
        connected(url, {"Authorization": f"Bearer {token}"}) as ws,
    ):
        opened = time.monotonic()
        await send(ws, "live", SUBSCRIPTION, {})
        assert await close_code(ws) == 4401
        assert time.monotonic() - opened < 3.5  # at the expiry, not at some later check


# --- one transaction per operation --------------------------------------------------------------


async def test_a_failing_operation_does_not_roll_back_anothers_writes(
    live_server: str, world: World
) -> None:
    tenant = await world.tenant("ws-uow", clients=0)
    pairs = 9  # 18 operations in flight: under the 20 a connection may have
    async with connected(live_server, world.headers(tenant.editor)) as ws:
        for n in range(pairs):  # all in flight together on the one socket
            await send(ws, f"ok-{n}", UPSERT_TWO, {"id": f"kept-{n}", "other": f"also-{n}"})
            await send(ws, f"bad-{n}", UPSERT_THEN_FAIL, {"id": f"dropped-{n}"})
        results: dict[str, list[dict[str, Any]]] = {}
        done = 0
        while done < 2 * pairs:
            message = await receive(ws)
            results.setdefault(message["id"], []).append(message)
            done += message["type"] in ("complete", "error")
    for n in range(pairs):
        assert codes(results[f"ok-{n}"]) == [], results[f"ok-{n}"]
        assert codes(results[f"bad-{n}"]) == ["VALIDATION_ERROR"], results[f"bad-{n}"]
    listing = await http(
        live_server,
        "{ clients(first: 100) { nodes { clientId } } }",
        {},
        world.headers(tenant.viewer),
    )
    stored = {node["clientId"] for node in listing["data"]["clients"]["nodes"]}
    assert stored == {f"{name}-{n}" for n in range(pairs) for name in ("kept", "also")}


# --- rate limits --------------------------------------------------------------------------------


async def test_operations_count_against_the_rate_limit_without_closing_the_socket(
    world: World, endpoints: Endpoints, data_dir: Path
) -> None:
    settings = make_settings(data_dir, rate_limit_per_minute=3)
    tenant = await world.tenant("ws-limit", clients=0)
    async with (
        replica(endpoints, settings) as (_, url),
        connected(url, world.headers(tenant.viewer)) as ws,  # the connection: 1 of 3
    ):
        assert codes(await run(ws, "1", ME)) == []
        assert codes(await run(ws, "2", ME)) == []
        limited = await run(ws, "3", ME)
        assert limited[0]["type"] == "error" and codes(limited) == ["RATE_LIMITED"]
        assert limited[0]["payload"][0]["extensions"]["retry_after"] >= 1
        await still_open(ws)
