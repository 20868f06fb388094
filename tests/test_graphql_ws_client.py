"""graphql-transport-ws as the real Node ``graphql-ws`` client sees it (tests/clients/ws-client.mjs),
against the app under uvicorn: a subscription that works, errors in ``subscribe`` as
``error`` messages, and each protocol close code, including the rate limit (1013 with
``retry after``) told apart from bad credentials (4403)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from tests.conftest import World, make_settings, other_app, served
from tests.node_clients import run_script
from tests.test_subscriptions import SUBSCRIPTION, event, wait_for_subscribers, ws_url
from zixly.container import Services
from zixly.core.events import SyncEventBus
from zixly.embedded.stack import Endpoints


async def client(base: str, scenario: str = "plain", **arguments: Any) -> list[dict[str, Any]]:
    return await run_script("ws-client.mjs", ws_url(base), scenario, json.dumps(arguments))


def closed(events: list[dict[str, Any]]) -> tuple[int, str]:
    [close] = [e for e in events if e["event"] == "closed"]
    return close["code"], close["reason"]


async def test_a_subscription_delivers_events(
    live_server: str, world: World, services: Services
) -> None:
    tenant = await world.tenant("wsc-sub", clients=0)
    running = asyncio.create_task(
        client(
            live_server,
            params=world.headers(tenant.viewer),
            operations=[{"query": SUBSCRIPTION}],
            take=1,
        )
    )
    await wait_for_subscribers(services, tenant.id, 1)
    await SyncEventBus(services.redis).publish(tenant.id, event("xero", 3))
    events = await running
    assert events[0] == {"event": "connected", "payload": {"tenant": tenant.slug}}
    [delivered] = [e for e in events if e["event"] == "next"]
    assert delivered["payload"]["data"]["syncEvents"]["provider"] == "xero"
    assert delivered["payload"]["data"]["syncEvents"]["recordsSynced"] == 3
    assert closed(events)[0] == 1000  # the client's own normal closure when it leaves


async def test_errors_in_subscribe_are_error_messages_and_the_socket_stays(
    live_server: str, world: World
) -> None:
    tenant = await world.tenant("wsc-err", clients=0)
    events = await client(
        live_server,
        params=world.headers(tenant.viewer),
        operations=[
            {"query": "subscription {"},
            {"query": "subscription { noSuchField }"},
            {"query": "query A { __typename } query B { __typename }"},
            {"query": "query A { __typename } query B { __typename }", "operationName": "B"},
        ],
        sequential=True,
    )
    errors = {e["operation"]: e["errors"] for e in events if e["event"] == "error"}
    codes = {op: [err["extensions"]["code"] for err in errs] for op, errs in errors.items()}
    assert codes == {
        0: ["GRAPHQL_PARSE_FAILED"],
        1: ["GRAPHQL_VALIDATION_FAILED"],
        2: ["BAD_REQUEST"],
    }, events
    assert "operationName" in errors[2][0]["message"]
    # The socket stayed open: one connection, and the last operation ran on it.
    assert [e["event"] for e in events].count("connected") == 1, events
    assert {"event": "next", "operation": 3, "payload": {"data": {"__typename": "Query"}}} in events
    assert {"event": "complete", "operation": 3} in events
    assert closed(events)[0] == 1000


async def test_bad_credentials_close_4403(live_server: str, world: World) -> None:
    events = await client(live_server, params={"Authorization": "Bearer not-a-jwt"})
    code, reason = closed(events)
    assert code == 4403
    assert reason.startswith("UNAUTHENTICATED: ")
    [error] = [e for e in events if e["event"] == "error"]
    assert error["code"] == 4403  # what the client hands the operation


async def test_protocol_violations_close_with_the_protocols_codes(
    live_server: str, world: World
) -> None:
    tenant = await world.tenant("wsc-proto", clients=0)
    params = world.headers(tenant.viewer)
    two = [{"query": SUBSCRIPTION}, {"query": SUBSCRIPTION}]  # the first never ends
    for scenario, operations, expected in (
        ("bad-message", None, 4400),
        ("subscribe-before-ack", None, 4401),
        ("double-init", None, 4429),
        ("duplicate-id", two, 4409),
    ):
        arguments: dict[str, Any] = {"params": params}
        if operations is not None:
            arguments["operations"] = operations
        events = await client(live_server, scenario, **arguments)
        assert closed(events)[0] == expected, (scenario, events)


async def test_no_connection_init_in_time_closes_4408(
    endpoints: Endpoints, data_dir: Path, world: World
) -> None:
    tenant = await world.tenant("wsc-slow", clients=0)
    settings = make_settings(data_dir, ws_init_timeout_seconds=0.3)
    async with other_app(endpoints, settings) as (built, _), served(built) as url:
        events = await client(url, params=world.headers(tenant.viewer), delayInit=1.5)
    assert closed(events) == (4408, "Connection initialisation timeout")


async def test_a_rate_limit_is_1013_with_retry_after_not_4403(
    endpoints: Endpoints, data_dir: Path, world: World
) -> None:
    tenant = await world.tenant("wsc-limit", clients=0)
    settings = make_settings(data_dir, rate_limit_per_minute=1)
    redis_url = f"{endpoints.redis_url}?db=12"
    async with other_app(endpoints, settings, redis_url=redis_url) as (built, _):
        await built.redis.flushdb()
        async with served(built) as url:
            first = await client(url, params=world.headers(tenant.viewer))
            assert closed(first)[0] == 1000
            second = await client(url, params=world.headers(tenant.viewer))
        await built.redis.flushdb()
    code, reason = closed(second)
    assert code == 1013, second
    match = re.fullmatch(r"RATE_LIMITED: retry after (\d+)s", reason)
    assert match is not None and 1 <= int(match[1]) <= 60, reason
