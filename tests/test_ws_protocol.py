"""graphql-transport-ws protocol errors from Python (a raw ``websockets`` client, so that each
violation is sent exactly): close codes and reasons, and ``error`` messages for documents
that cannot run. The Node ``graphql-ws`` client's view: tests/test_graphql_ws_client.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.conftest import World, make_settings, other_app, served
from tests.test_subscriptions import (
    connected,
    receive,
    subscribe,
    wait_for_subscribers,
    ws_url,
)
from zixly.container import Services
from zixly.core.errors import ForbiddenError, RateLimitedError, UnavailableError
from zixly.embedded.stack import Endpoints
from zixly.graphql.ws import MAX_OPERATIONS, rejection
from zixly.security.authenticator import MissingCredentials


async def close_of(ws: ClientConnection) -> tuple[int, str]:
    """The code and reason the server closes ``ws`` with, skipping other messages."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await receive(ws)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def raw(base: str) -> Any:
    return connect(ws_url(base), subprotocols=[Subprotocol("graphql-transport-ws")])


def init(payload: dict[str, Any]) -> str:
    return json.dumps({"type": "connection_init", "payload": payload})


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ("subscription {", "GRAPHQL_PARSE_FAILED"),
        ("subscription { noSuchField }", "GRAPHQL_VALIDATION_FAILED"),
        ("query A { __typename } query B { __typename }", "BAD_REQUEST"),
    ],
)
async def test_a_document_that_cannot_run_gets_an_error_message(
    live_server: str, world: World, document: str, code: str
) -> None:
    tenant = await world.tenant("wsp-doc", clients=0)
    async with connected(live_server, world.headers(tenant.viewer)) as ws:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": document}}))
        message = await receive(ws)
        assert message["type"] == "error" and message["id"] == "1", message
        assert [e["extensions"]["code"] for e in message["payload"]] == [code]
        # The socket is still open and serves the next operation.
        await ws.send(
            json.dumps({"id": "2", "type": "subscribe", "payload": {"query": "{ __typename }"}})
        )
        assert await receive(ws) == {
            "id": "2",
            "type": "next",
            "payload": {"data": {"__typename": "Query"}},
        }


async def test_protocol_violations_close_with_their_codes(live_server: str, world: World) -> None:
    tenant = await world.tenant("wsp-codes", clients=0)
    token = world.headers(tenant.viewer)
    early = json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }"}})
    async with raw(live_server) as ws:  # subscribe before the acknowledgement
        await ws.send(early)
        assert await close_of(ws) == (4401, "Unauthorized")
    async with raw(live_server) as ws:  # not a protocol message
        await ws.send(init(token))
        await ws.send(json.dumps({"type": "nonsense"}))
        assert (await close_of(ws))[0] == 4400
    async with raw(live_server) as ws:  # a second connection_init
        await ws.send(init(token))
        await ws.send(init(token))
        assert await close_of(ws) == (4429, "Too many initialisation requests")
    async with connected(live_server, token) as ws:  # an id in use
        await subscribe(ws, "dup")
        await subscribe(ws, "dup")
        assert await close_of(ws) == (4409, "Subscriber for dup already exists")


async def test_bad_credentials_close_4403_naming_the_code(live_server: str) -> None:
    async with raw(live_server) as ws:
        await ws.send(init({"Authorization": "Bearer not-a-jwt"}))
        code, reason = await close_of(ws)
    assert code == 4403 and reason.startswith("UNAUTHENTICATED: "), reason


async def test_no_connection_init_in_time_closes_4408(endpoints: Endpoints, data_dir: Path) -> None:
    settings = make_settings(data_dir, ws_init_timeout_seconds=0.2)
    async with other_app(endpoints, settings) as (built, _), served(built) as url, raw(url) as ws:
        assert await close_of(ws) == (4408, "Connection initialisation timeout")


async def test_a_rate_limited_connection_init_says_when_to_retry(
    endpoints: Endpoints, data_dir: Path, world: World
) -> None:
    tenant = await world.tenant("wsp-limit", clients=0)
    settings = make_settings(data_dir, rate_limit_per_minute=1)
    async with other_app(endpoints, settings, redis_url=f"{endpoints.redis_url}?db=13") as (
        built,
        _,
    ):
        await built.redis.flushdb()
        async with served(built) as url:
            async with connected(url, world.headers(tenant.viewer)):
                pass
            async with raw(url) as ws:
                await ws.send(init(world.headers(tenant.viewer)))
                code, reason = await close_of(ws)
        await built.redis.flushdb()
    assert code == 1013
    assert re.fullmatch(r"RATE_LIMITED: retry after \d+s", reason), reason


def test_rejections_keep_4403_for_credentials() -> None:
    assert rejection(MissingCredentials("no token"))[0] == 4403
    assert rejection(ForbiddenError("not a member")) == (4403, "FORBIDDEN: not a member")
    assert rejection(RateLimitedError("slow down", retry_after=7)) == (
        1013,
        "RATE_LIMITED: retry after 7s",
    )
    assert rejection(UnavailableError("db down")) == (1013, "UNAVAILABLE: retry after 5s")
    code, reason = rejection(ForbiddenError("x" * 500))
    assert code == 4403 and len(reason.encode()) <= 123


async def test_the_operation_limit_per_socket_is_an_error_with_a_code(
    live_server: str, world: World, services: Services
) -> None:
    tenant = await world.tenant("wsp-many", clients=0)
    async with connected(live_server, world.headers(tenant.viewer)) as ws:
        for n in range(MAX_OPERATIONS):  # one at a time: within the user's database cap
            await subscribe(ws, f"s{n}")
            await wait_for_subscribers(services, tenant.id, n + 1)
        await subscribe(ws, "one-too-many")
        message = await receive(ws)
    assert message["type"] == "error" and message["id"] == "one-too-many", message
    [error] = message["payload"]
    assert error["message"] == "Subscription limit reached"
    assert error["extensions"]["code"] == "BAD_REQUEST"
