"""Health, readiness, Prometheus metrics and structured logs."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    LogLines,
    World,
    app_with_broken_data_path,
    gql,
    make_settings,
    other_app,
    unreachable_database_url,
)
from zixly.container import Services
from zixly.core.logging import REDACTED, get_logger
from zixly.core.settings import Settings
from zixly.embedded.stack import Endpoints

REFUSED_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


async def test_readyz_names_an_unreachable_redis(endpoints: Endpoints, settings: Settings) -> None:
    async with other_app(endpoints, settings, redis_url=REFUSED_REDIS) as (_, client):
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "redis": "unavailable: ConnectionError"},
    }


async def test_readyz_names_an_unreachable_database(
    endpoints: Endpoints, settings: Settings
) -> None:
    async with other_app(endpoints, settings, database_url=unreachable_database_url()) as (
        _,
        client,
    ):
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "unavailable: FileNotFoundError", "redis": "ok"},
    }


async def test_the_api_keeps_serving_when_the_rate_limiter_is_down(
    client: httpx.AsyncClient,
    endpoints: Endpoints,
    settings: Settings,
    world: World,
    logs: LogLines,
) -> None:
    tenant = await world.tenant("ops-redis")
    before = await sample(client, "zixly_rate_limit_unavailable_total")
    async with other_app(endpoints, settings, redis_url=REFUSED_REDIS) as (_, degraded):
        response = await degraded.post(
            "/graphql", json={"query": "{ me { email } }"}, headers=world.headers(tenant.viewer)
        )
    assert response.status_code == 200
    assert response.json() == {"data": {"me": {"email": tenant.viewer}}}
    assert "x-ratelimit-limit" not in response.headers
    # Checked twice (failed-authentication block, then the tenant's allowance); both fail open.
    assert await sample(client, "zixly_rate_limit_unavailable_total") == before + 2
    assert len(logs.events("ratelimit.unavailable")) == 2


# --- metrics ----------------------------------------------------------------------------------


async def sample(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    """The current value of one sample in /metrics (0 when absent)."""
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def test_metrics(
    client: httpx.AsyncClient,
    world: World,
    services: Services,
    owner: asyncpg.Connection,
    data_dir: Path,
    endpoints: Endpoints,
) -> None:
    tenant = await world.tenant("ops-metrics")
    headers = world.headers(tenant.viewer)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")

    latency = ("zixly_graphql_request_duration_seconds_count",)
    # Labelled by the schema's root field, never by the client's operation name.
    probe = {"root_field": "me", "type": "query"}
    before = await sample(client, *latency, **probe)
    await gql(client, "query OpsProbe { me { email } }", headers=headers)
    await gql(client, "query OpsProbe { me { email } }", headers=headers)
    assert await sample(client, *latency, **probe) == before + 2
    assert await sample(
        client, "zixly_graphql_request_duration_seconds_bucket", le="+Inf", **probe
    ) == (before + 2)

    errors = ("zixly_graphql_errors_total",)
    bad = {"root_field": "clients", "code": "VALIDATION_ERROR"}
    before = await sample(client, *errors, **bad)
    await gql(client, "query OpsBad { clients(first: 0) { nodes { id } } }", headers=headers)
    assert await sample(client, *errors, **bad) == before + 1

    # A masked unexpected error is counted under INTERNAL, its code on the wire.
    internal = {"root_field": "clients", "code": "INTERNAL"}
    before = await sample(client, *errors, **internal)
    async with app_with_broken_data_path(services, owner) as broken:
        await gql(broken, "query OpsBroken { clients { nodes { id } } }", headers=headers)
    assert await sample(client, *errors, **internal) == before + 1

    # Several root fields in one operation are one label.
    before = await sample(client, *latency, root_field="multiple", type="query")
    await gql(client, "{ me { email } clients { nodes { id } } }", headers=headers)
    assert await sample(client, *latency, root_field="multiple", type="query") == before + 1

    rejected = ("zixly_rate_limit_rejections_total",)
    before = await sample(client, *rejected, limit="tenant")
    low = make_settings(data_dir, rate_limit_per_minute=1, rate_limit_window_seconds=60)
    # A tenant of its own: the allowance is shared by every app on this Redis.
    fresh = world.headers((await world.tenant("ops-limited")).viewer)
    async with other_app(endpoints, low) as (_, limited):
        statuses = [
            (
                await limited.post("/graphql", json={"query": "{ me { email } }"}, headers=fresh)
            ).status_code
            for _ in range(3)
        ]
    assert statuses == [200, 429, 429]
    assert await sample(client, *rejected, limit="tenant") == before + 2

    before = await sample(client, "zixly_http_requests_total", route="/healthz", status="2xx")
    await client.get("/healthz")
    assert (
        await sample(client, "zixly_http_requests_total", route="/healthz", status="2xx")
        == before + 1
    )


# --- logs -----------------------------------------------------------------------------------


async def test_logs_are_json_with_request_and_tenant_and_no_token(
    client: httpx.AsyncClient, world: World, logs: LogLines
) -> None:
    tenant = await world.tenant("ops-logs")
    token = world.token(tenant.editor)
    response = await client.post(
        "/graphql",
        json={"query": "{ me { email } }"},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "ops-logs-0001"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "ops-logs-0001"

    (line,) = [e for e in logs.events("http.request") if e["request_id"] == "ops-logs-0001"]
    assert line["tenant_id"] == str(tenant.id)
    assert line["method"] == "POST"
    assert line["route"] == "/graphql"
    assert line["status"] == 200
    assert line["level"] == "info"
    assert line["logger_name"] == "zixly.http"
    assert isinstance(line["duration_ms"], float)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", line["timestamp"])

    # A rejected token is logged as a reason, never as the token.
    expired = world.token(tenant.editor, now=1_700_000_000, ttl_seconds=60)
    response = await client.post(
        "/graphql",
        json={"query": "{ me { email } }"},
        headers={"Authorization": f"Bearer {expired}"},
    )
    assert response.status_code == 401
    (rejected,) = [
        e
        for e in logs.events("auth.rejected")
        if e["request_id"] == response.headers["x-request-id"]
    ]
    assert rejected["reason"] == "token expired"

    # Even if code logs one by mistake, the renderer's last processor scrubs it.
    get_logger("zixly.test").info(
        "oops", header=f"Authorization: Bearer {token}", authorization=token, note=f"jwt={token}"
    )
    (oops,) = logs.events("oops")
    assert oops["header"] == f"Authorization: Bearer {REDACTED}"
    assert oops["authorization"] == REDACTED
    assert oops["note"] == f"jwt={REDACTED}"

    assert token not in logs.text
    assert expired not in logs.text
    assert token.split(".")[2] not in logs.text  # not even the signature


async def test_insane_request_ids_are_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "has spaces; and=more"})
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])
    assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]
