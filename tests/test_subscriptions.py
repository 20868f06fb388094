"""syncEvents over graphql-transport-ws against a real uvicorn server and real Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.conftest import World, make_settings, other_app, served
from zixly.container import Services
from zixly.core.events import SyncEventBus, channel
from zixly.embedded.stack import Endpoints
from zixly.security.guard import AUTH_FAILURES_PER_WINDOW

SUBSCRIPTION = "subscription { syncEvents { provider status occurredAt message recordsSynced } }"
TIMEOUT = 5.0


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1) + "/graphql"


async def receive(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


@asynccontextmanager
async def connected(base: str, payload: dict[str, Any]) -> AsyncIterator[ClientConnection]:
    """An acknowledged graphql-transport-ws connection."""
    async with connect(ws_url(base), subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        assert (await receive(ws))["type"] == "connection_ack"
        yield ws


async def subscribe(ws: ClientConnection, operation_id: str = "1") -> None:
    await ws.send(
        json.dumps({"id": operation_id, "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
    )


async def subscribers(services: Services, tenant_id: uuid.UUID) -> int:
    [(_, count)] = await services.redis.pubsub_numsub(channel(tenant_id))
    return int(count)


async def wait_for_subscribers(services: Services, tenant_id: uuid.UUID, count: int) -> None:
    async with asyncio.timeout(TIMEOUT):
        while await subscribers(services, tenant_id) != count:
            await asyncio.sleep(0.01)


def event(provider: str, records: int | None = None) -> dict[str, Any]:
    return {
        "provider": provider,
        "status": "SUCCEEDED",
        "occurred_at": dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.UTC),
        "message": f"{provider} synced",
        "records_synced": records,
    }


def delivered(operation_id: str, provider: str, records: int | None = None) -> dict[str, Any]:
    return {
        "id": operation_id,
        "type": "next",
        "payload": {
            "data": {
                "syncEvents": {
                    "provider": provider,
                    "status": "SUCCEEDED",
                    "occurredAt": "2026-11-27T09:30:00+00:00",
                    "message": f"{provider} synced",
                    "recordsSynced": records,
                }
            }
        },
    }


async def test_each_tenant_receives_only_its_own_events(
    live_server: str, world: World, services: Services
) -> None:
    a = await world.tenant("subs-a", clients=0)
    b = await world.tenant("subs-b", clients=0)
    bus = SyncEventBus(services.redis)
    async with (
        connected(live_server, world.headers(a.viewer)) as ws_a,
        connected(live_server, world.headers(b.viewer)) as ws_b,
    ):
        await subscribe(ws_a)
        await subscribe(ws_b)
        await wait_for_subscribers(services, a.id, 1)
        await wait_for_subscribers(services, b.id, 1)
        assert await bus.publish(b.id, event("b-first", 1)) == 1
        assert await bus.publish(a.id, event("a-first", 2)) == 1
        assert await bus.publish(b.id, event("b-second")) == 1
        assert await bus.publish(a.id, event("a-second", 0)) == 1
        assert [await receive(ws_a), await receive(ws_a)] == [
            delivered("1", "a-first", 2),
            delivered("1", "a-second", 0),
        ]
        assert [await receive(ws_b), await receive(ws_b)] == [
            delivered("1", "b-first", 1),
            delivered("1", "b-second"),
        ]


async def test_malformed_messages_are_skipped(
    live_server: str, world: World, services: Services
) -> None:
    tenant = await world.tenant("subs-bad", clients=0)
    async with connected(live_server, world.headers(tenant.viewer)) as ws:
        await subscribe(ws)
        await wait_for_subscribers(services, tenant.id, 1)
        good = json.dumps({**event("xero", 5), "occurred_at": "2026-11-27T09:30:00Z"})
        for raw in (
            b"not json",
            b"\xff\xfe",
            json.dumps(["a", "list"]),
            json.dumps({"provider": "xero"}),  # missing fields
            json.dumps({**event("xero"), "occurred_at": "2026-11-27T09:30:00"}),  # naive
            json.dumps(
                {**event("xero"), "occurred_at": "2026-11-27T09:30:00Z", "records_synced": -1}
            ),
            json.dumps({**event(""), "occurred_at": "2026-11-27T09:30:00Z"}),
            "x" * 70_000,
            good,
        ):
            await services.redis.publish(channel(tenant.id), raw)
        assert await receive(ws) == delivered("1", "xero", 5)


async def test_complete_and_disconnect_release_the_pubsub(
    live_server: str, world: World, services: Services
) -> None:
    tenant = await world.tenant("subs-close", clients=0)
    async with connected(live_server, world.headers(tenant.viewer)) as ws:
        await subscribe(ws, "1")
        await subscribe(ws, "2")
        await wait_for_subscribers(services, tenant.id, 2)
        await ws.send(json.dumps({"id": "1", "type": "complete"}))
        await wait_for_subscribers(services, tenant.id, 1)
        # The other operation still works.
        await SyncEventBus(services.redis).publish(tenant.id, event("after-complete"))
        assert await receive(ws) == delivered("2", "after-complete")
    await wait_for_subscribers(services, tenant.id, 0)


async def test_a_subscription_needs_a_tenant(
    live_server: str, world: World, services: Services
) -> None:
    staff = await world.staff()
    async with connected(live_server, world.headers(staff)) as ws:
        await subscribe(ws)
        message = await receive(ws)
    assert message["type"] == "next", message
    [error] = message["payload"]["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": 42},
    ],
)
async def test_connection_init_without_a_valid_token_is_closed(
    live_server: str, payload: dict[str, Any]
) -> None:
    async with connect(
        ws_url(live_server), subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def test_connection_init_for_a_foreign_tenant_is_closed(
    live_server: str, world: World
) -> None:
    a = await world.tenant("subs-own", clients=0)
    b = await world.tenant("subs-foreign", clients=0)
    async with connect(
        ws_url(live_server), subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        payload = {**world.headers(a.admin), "X-Zixly-Tenant": b.slug}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


def _redis_db(endpoints: Endpoints, db: int) -> str:
    """A Redis database of its own, so this test's limit counters are nobody else's."""
    return f"{endpoints.redis_url}?db={db}"


async def test_websocket_auth_failures_count_against_the_address(
    endpoints: Endpoints, data_dir: Path, world: World
) -> None:
    tenant = await world.tenant("subs-guess", clients=0)
    settings = make_settings(data_dir)
    async with other_app(endpoints, settings, redis_url=_redis_db(endpoints, 5)) as (built, _):
        await built.guard.redis.flushdb()
        async with served(built) as url:
            # Expired tokens of one account: charged to that account from this address.
            expired = world.token(tenant.editor, now=int(time.time()) - 7200, ttl_seconds=3600)
            for _ in range(AUTH_FAILURES_PER_WINDOW):
                async with connected_raw(url, {"Authorization": f"Bearer {expired}"}) as code:
                    assert code == 4403
            # Now that account is refused from this address until the window passes, even
            # with a valid token: a rate limit (1013 Try Again Later), not bad credentials;
            # another account from the same address is not refused.
            async with connected_raw(url, world.headers(tenant.editor)) as code:
                assert code == 1013
            async with connected_raw(url, world.headers(tenant.viewer)) as code:
                assert code is None


async def test_websocket_connections_count_against_the_tenant_rate_limit(
    endpoints: Endpoints, data_dir: Path, world: World
) -> None:
    tenant = await world.tenant("subs-limit", clients=0)
    settings = make_settings(data_dir, rate_limit_per_minute=2)
    async with other_app(endpoints, settings, redis_url=_redis_db(endpoints, 6)) as (built, _):
        await built.guard.redis.flushdb()
        async with served(built) as url:
            for _ in range(2):
                async with connected_raw(url, world.headers(tenant.viewer)) as code:
                    assert code is None  # acknowledged
            async with connected_raw(url, world.headers(tenant.viewer)) as code:
                assert code == 1013  # Try Again Later: the token is fine


@asynccontextmanager
async def connected_raw(base: str, payload: dict[str, Any]) -> AsyncIterator[int | None]:
    """Send connection_init; yield None when acknowledged, else the close code."""
    async with connect(ws_url(base), subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        try:
            message = await receive(ws)
        except ConnectionClosed as closed:
            yield closed.rcvd.code if closed.rcvd else -1
            return
        assert message["type"] == "connection_ack", message
        yield None
