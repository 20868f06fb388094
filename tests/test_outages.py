"""Every route answers a typed 503 with Retry-After, within seconds, when PostgreSQL or Redis
cannot be reached; the worker's crons log one line when an outage starts and one when it ends.

The dependencies are real and really unreachable: a database URL whose socket directory
does not exist, a Redis port nobody listens on (refused), and a "stalled" Redis: a socket
that accepts connections but never answers (as a hung server or a dropped network does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.conftest import (
    LogLines,
    World,
    free_port,
    other_app,
    serve_app,
    unreachable_database_url,
)
from zixly.alerts.jobs import deliver_alerts
from zixly.app import create_app
from zixly.container import Services
from zixly.core.outages import watched
from zixly.core.queue import job_queue
from zixly.core.settings import Settings
from zixly.db.session import Database, create_engine
from zixly.embedded.stack import Endpoints
from zixly.http.editor_proxy import COOKIE

REFUSED_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1
ME = "{ me { email } }"
BOUND_SECONDS = 6.0  # "within a few seconds": the Redis timeouts are 2 s


@contextlib.contextmanager
def stalled_redis() -> Iterator[str]:
    """A Redis URL whose server accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


async def timed(request: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    async with asyncio.timeout(30):  # a hang fails here, not by blocking the run
        response = await request
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert elapsed < BOUND_SECONDS, elapsed


def graphql_code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["extensions"]["code"])


@pytest.mark.parametrize("kind", ["no-socket", "refused"])
async def test_every_route_is_a_typed_503_while_the_database_is_down(
    kind: str, endpoints: Endpoints, settings: Settings, world: World
) -> None:
    tenant = await world.tenant("pgdown")
    headers = world.headers(tenant.viewer)
    ingest_token = {"Authorization": "Bearer zik_" + secrets.token_urlsafe(32)}
    url = (
        unreachable_database_url()
        if kind == "no-socket"
        else f"postgresql+asyncpg://zixly_app@127.0.0.1:{free_port()}/zixly"
    )
    async with other_app(endpoints, settings, database_url=url) as (
        _,
        client,
    ):
        graphql, graphql_s = await timed(
            client.post("/graphql", json={"query": ME}, headers=headers)
        )
        export, export_s = await timed(
            client.get(
                "/export/financials.csv",
                params={"start": "2024-01-01", "end": "2024-01-31"},
                headers=headers,
            )
        )
        ingest, ingest_s = await timed(
            client.post("/ingest/v1/heartbeat", json={}, headers=ingest_token)
        )
        editor, editor_s = await timed(
            client.get(f"/editor/{tenant.slug}/login", headers=world.headers(tenant.editor))
        )
        ready, ready_s = await timed(client.get("/readyz"))
    for response, elapsed in (
        (graphql, graphql_s),
        (export, export_s),
        (editor, editor_s),
    ):
        assert_unavailable(response, elapsed)
        assert graphql_code(response) == "UNAVAILABLE"
    assert_unavailable(ingest, ingest_s)
    assert ingest.json()["code"] == "UNAVAILABLE"
    assert_unavailable(ready, ready_s)
    assert ready.json()["status"] == "unavailable"


async def test_a_websocket_is_told_to_come_back_later_while_the_database_is_down(
    endpoints: Endpoints, settings: Settings, world: World
) -> None:
    tenant = await world.tenant("wsdown")
    services = Services.build(
        settings, database_url=unreachable_database_url(), redis_url=endpoints.redis_url
    )
    payload = {"Authorization": world.headers(tenant.viewer)["Authorization"]}
    try:
        async with serve_app(create_app(services), ws="websockets-sansio") as url:
            ws_url = url.replace("http://", "ws://", 1) + "/graphql"
            async with (
                asyncio.timeout(BOUND_SECONDS),
                connect(ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws,
            ):
                await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
    finally:
        await services.close()
    assert closed.value.rcvd is not None
    # 1013 Try Again Later, not 4403 Forbidden: the client must not drop its credentials.
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1013,
        "UNAVAILABLE: retry after 5s",
    )


@pytest.mark.parametrize("kind", ["refused", "stalled"])
async def test_routes_that_need_redis_are_a_typed_503_within_seconds(
    kind: str, endpoints: Endpoints, settings: Settings, world: World
) -> None:
    """The editor proxy (its sessions) and the OAuth callback (its states) need Redis; with
    Redis refusing or not answering they answer 503 with Retry-After in seconds. The API
    itself keeps serving (its rate limits fail open, also within seconds)."""
    tenant = await world.tenant(f"redis-{kind}")
    with contextlib.ExitStack() as stack:
        url = REFUSED_REDIS if kind == "refused" else stack.enter_context(stalled_redis())
        async with other_app(endpoints, settings, redis_url=url) as (_, client):
            editor, editor_s = await timed(
                client.get(
                    f"/editor/{tenant.slug}/rest/settings",
                    headers={"Cookie": f"{COOKIE}={secrets.token_urlsafe(32)}"},
                )
            )
            login, login_s = await timed(
                client.get(f"/editor/{tenant.slug}/login", headers=world.headers(tenant.editor))
            )
            callback, callback_s = await timed(
                client.get("/oauth/xero/callback", params={"state": "s" * 43, "code": "c"})
            )
            ready, ready_s = await timed(client.get("/readyz"))
            api, api_s = await timed(
                client.post("/graphql", json={"query": ME}, headers=world.headers(tenant.viewer))
            )
    for response, elapsed in ((editor, editor_s), (login, login_s)):
        assert_unavailable(response, elapsed)
        assert graphql_code(response) == "UNAVAILABLE"
    assert_unavailable(callback, callback_s)
    assert "(unavailable)" in callback.text and callback.headers["cache-control"] == "no-store"
    assert_unavailable(ready, ready_s)
    assert ready.json()["checks"]["redis"].startswith("unavailable")
    assert api.json() == {"data": {"me": {"email": tenant.viewer}}}
    assert api_s < BOUND_SECONDS


async def test_a_cron_logs_one_line_when_an_outage_starts_and_one_when_it_ends(
    endpoints: Endpoints, settings: Settings, services: Services, logs: LogLines
) -> None:
    job = watched(deliver_alerts, "deliver_alerts_sweep")
    down = Database(create_engine(unreachable_database_url(), settings), settings)
    redis = Redis.from_url(endpoints.redis_url)
    http = httpx.AsyncClient()
    ctx: dict[str, Any] = {
        "settings": settings,
        "db": down,
        "http": http,
        "redis": job_queue(redis),
    }
    try:
        failed = [await job(ctx) for _ in range(3)]
        ctx["db"] = services.db  # the database is back
        ctx.pop("alerts")  # built over the database that was down
        recovered = await job(ctx)
        again = await job(ctx)
    finally:
        await http.aclose()
        await redis.aclose()
        await down.dispose()
    assert failed == [{"outage": "postgres"}] * 3
    assert "outage" not in recovered and "outage" not in again
    (started,) = logs.events("outage.started")
    assert (started["component"], started["job"], started["level"]) == (
        "postgres",
        "deliver_alerts_sweep",
        "error",
    )
    assert started["error"].startswith("FileNotFoundError")
    (ended,) = logs.events("outage.ended")
    assert (ended["component"], ended["failed_runs"], ended["jobs"]) == (
        "postgres",
        3,
        ["deliver_alerts_sweep"],
    )
    assert "Traceback" not in logs.text


async def test_a_cron_failing_for_another_reason_still_raises(settings: Settings) -> None:
    async def broken(_ctx: dict[str, Any]) -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await watched(broken)({"settings": settings})


async def test_a_redis_outage_is_named_as_such(logs: LogLines) -> None:
    async def uses_redis(ctx: dict[str, Any]) -> bool:
        return bool(await ctx["redis"].ping())

    redis = Redis.from_url(REFUSED_REDIS)
    try:
        job, ctx = watched(uses_redis), {"redis": redis}
        results = [await job(ctx) for _ in range(2)]
    finally:
        await redis.aclose()
    assert results == [{"outage": "redis"}] * 2
    (started,) = logs.events("outage.started")
    assert (started["component"], started["job"]) == ("redis", "uses_redis")
    assert "Traceback" not in logs.text
