"""Rate limits, query limits, input validation, body size, error masking, timeouts, CORS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

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
from zixly.core.settings import Settings
from zixly.db.session import Scope
from zixly.embedded.stack import Endpoints
from zixly.security.guard import ADDRESS_FAILURES_PER_WINDOW, AUTH_FAILURES_PER_WINDOW

ME = "{ me { email } }"
FINANCIALS = (
    "query($r: DateRangeInput!, $first: Int, $after: String) "
    "{ financials(range: $r, first: $first, after: $after) { nodes { id } } }"
)


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") is None, body
    (error,) = body["errors"]
    assert isinstance(error, dict)
    return error


# --- per-tenant rate limit ------------------------------------------------------------


@pytest.fixture
async def limited(
    data_dir: Path, endpoints: Endpoints
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    settings = make_settings(data_dir, rate_limit_per_minute=5, rate_limit_window_seconds=2)
    async with other_app(endpoints, settings) as app:
        yield app


async def test_rate_limit_per_tenant(
    limited: tuple[Services, httpx.AsyncClient], world: World
) -> None:
    _, client = limited
    busy = await world.tenant("rl")
    quiet = await world.tenant("rl-quiet")
    # Every user of a tenant shares its allowance.
    for n, email in enumerate([busy.admin, busy.editor, busy.viewer, busy.admin, busy.viewer]):
        response = await client.post("/graphql", json={"query": ME}, headers=world.headers(email))
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "5"
        assert response.headers["x-ratelimit-remaining"] == str(4 - n)
        assert 1 <= int(response.headers["x-ratelimit-reset"]) <= 2
    response = await client.post("/graphql", json={"query": ME}, headers=world.headers(busy.admin))
    assert response.status_code == 429
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 2
    assert response.headers["x-ratelimit-limit"] == "5"
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["x-ratelimit-reset"] == str(retry_after)
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retry_after"] == retry_after
    assert error["message"] == (
        f"rate limit of 5 requests per 2s exceeded; retry after {retry_after}s"
    )
    # The export is behind the same limit.
    response = await client.get(
        "/export/financials.csv",
        params={"start": "2024-01-01", "end": "2024-01-02"},
        headers=world.headers(busy.viewer),
    )
    assert response.status_code == 429

    # Another tenant is unaffected.
    response = await client.post("/graphql", json={"query": ME}, headers=world.headers(quiet.admin))
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining"] == "4"

    await asyncio.sleep(2.1)  # the window slides past the first requests
    response = await client.post("/graphql", json={"query": ME}, headers=world.headers(busy.admin))
    assert response.status_code == 200
    assert response.json() == {"data": {"me": {"email": busy.admin}}}


# --- failed authentications per client address ------------------------------------------


async def test_failed_authentications_are_throttled_per_address(
    endpoints: Endpoints, settings: Settings, world: World
) -> None:
    tenant = await world.tenant("af")
    guess = {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.bm90LWEtc2lnbmF0dXJl"}
    async with (
        other_app(endpoints, settings, address="192.0.2.77") as (_, guesser),
        other_app(endpoints, settings, address="192.0.2.78") as (_, neighbour),
    ):
        # A token naming no account is charged to the address (see tests/test_edges.py
        # for tokens that name one).
        for _ in range(ADDRESS_FAILURES_PER_WINDOW):
            response = await guesser.post("/graphql", json={"query": ME}, headers=guess)
            assert response.status_code == 401
        response = await guesser.post("/graphql", json={"query": ME}, headers=guess)
        assert response.status_code == 429
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["message"].startswith("too many failed authentications with these credentials")
        assert 1 <= int(response.headers["retry-after"]) <= 60
        # A valid token from the same address (another customer behind the NAT) still works.
        response = await guesser.post(
            "/graphql", json={"query": ME}, headers=world.headers(tenant.viewer)
        )
        assert response.status_code == 200
        # Another address is not affected.
        response = await neighbour.post(
            "/graphql", json={"query": ME}, headers=world.headers(tenant.viewer)
        )
        assert response.status_code == 200


async def test_successful_requests_do_not_count_as_failures(
    endpoints: Endpoints, settings: Settings, world: World
) -> None:
    tenant = await world.tenant("af-ok")
    async with other_app(endpoints, settings, address="192.0.2.79") as (_, client):
        for _ in range(AUTH_FAILURES_PER_WINDOW + 5):
            response = await client.post(
                "/graphql", json={"query": ME}, headers=world.headers(tenant.viewer)
            )
            assert response.status_code == 200


# --- query limits ---------------------------------------------------------------------


async def test_depth_limit(data_dir: Path, endpoints: Endpoints, world: World) -> None:
    tenant = await world.tenant("depth")
    settings = make_settings(data_dir, max_query_depth=2)
    async with other_app(endpoints, settings) as (_, client):
        deep = "{ clients { nodes { latestFinancial { id } } } }"
        error = only_error(await gql(client, deep, headers=world.headers(tenant.viewer)))
        assert error["message"] == "'anonymous' exceeds maximum operation depth of 2"
        shallow = "{ clients { nodes { id } } }"
        body = await gql(client, shallow, headers=world.headers(tenant.viewer))
        assert len(body["data"]["clients"]["nodes"]) == 2


async def test_token_limit(client: httpx.AsyncClient, world: World, settings: Settings) -> None:
    tenant = await world.tenant("tokens")
    # "{", "me", "{", 2000 x "email", "}", "}": over the 2000-token limit.
    query = "{ me { " + "email " * settings.max_query_tokens + "} }"
    error = only_error(await gql(client, query, headers=world.headers(tenant.viewer)))
    assert (
        error["message"]
        == "Syntax Error: Document contains more than 2000 tokens. Parsing aborted."
    )


async def test_alias_limit(client: httpx.AsyncClient, world: World, settings: Settings) -> None:
    tenant = await world.tenant("alias")
    aliases = settings.max_aliases + 1
    query = "{ " + " ".join(f"a{n}: me {{ email }}" for n in range(aliases)) + " }"
    error = only_error(await gql(client, query, headers=world.headers(tenant.viewer)))
    assert error["message"] == "16 aliases found. Allowed: 15"
    allowed = "{ " + " ".join(f"a{n}: me {{ email }}" for n in range(aliases - 1)) + " }"
    body = await gql(client, allowed, headers=world.headers(tenant.viewer))
    assert body["data"]["a14"] == {"email": tenant.viewer}


# --- input validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (501, "first may be at most 500"),
        (0, "first must be at least 1"),
        (-1, "first must be at least 1"),
    ],
)
async def test_page_size_bounds(
    client: httpx.AsyncClient, world: World, first: int, message: str
) -> None:
    tenant = await world.tenant("first")
    body = await gql(
        client,
        "query($first: Int) { clients(first: $first) { nodes { id } } }",
        {"first": first},
        headers=world.headers(tenant.viewer),
    )
    error = only_error(body)
    assert error["message"] == message
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert error["extensions"]["field"] == "first"


async def test_malformed_and_foreign_cursors(client: httpx.AsyncClient, world: World) -> None:
    a = await world.tenant("cur-a", clients=3)
    b = await world.tenant("cur-b", clients=3)
    query = (
        "query($after: String) { clients(first: 1, after: $after) "
        "{ nodes { name } pageInfo { endCursor } } }"
    )
    page = await gql(client, query, headers=world.headers(b.viewer))
    b_cursor = page["data"]["clients"]["pageInfo"]["endCursor"]
    # The cursor works for its own tenant ...
    page = await gql(client, query, {"after": b_cursor}, headers=world.headers(b.viewer))
    assert page["data"]["clients"]["nodes"] == [{"name": f"Client 1 of {b.slug}"}]
    # ... and nowhere else; nor does anything hand-made.
    payload, mac = b_cursor.split(".")
    for cursor in [b_cursor, "not-a-cursor", "a.b.c", payload + "." + mac[::-1], "x" * 600]:
        body = await gql(client, query, {"after": cursor}, headers=world.headers(a.viewer))
        error = only_error(body)
        assert error["message"] == "malformed or foreign cursor"
        assert error["extensions"] == {
            "code": "VALIDATION_ERROR",
            "field": "after",
        }


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2024-03-01", "2024-02-01", "range end 2024-02-01 is before its start 2024-03-01"),
        (
            "2020-01-01",
            "2023-12-31",
            "range covers 1461 days; the most one query may cover is 1099",
        ),
    ],
)
async def test_bad_date_ranges(
    client: httpx.AsyncClient, world: World, start: str, end: str, message: str
) -> None:
    tenant = await world.tenant("range")
    body = await gql(
        client,
        FINANCIALS,
        {"r": {"start": start, "end": end}},
        headers=world.headers(tenant.viewer),
    )
    error = only_error(body)
    assert error["message"] == message
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert error["extensions"]["field"] == "range"


async def test_invalid_date_literal(client: httpx.AsyncClient, world: World) -> None:
    tenant = await world.tenant("date")
    inline = '{ financials(range: {start: "2024-02-30", end: "2024-03-01"}) { nodes { id } } }'
    error = only_error(await gql(client, inline, headers=world.headers(tenant.viewer)))
    assert error["message"] == (
        'Value cannot represent a Date: "2024-02-30". day is out of range for month'
    )


async def test_invalid_date_variable_is_a_client_error(
    client: httpx.AsyncClient, world: World
) -> None:
    tenant = await world.tenant("date")
    body = await gql(
        client,
        FINANCIALS,
        {"r": {"start": "2024-02-30", "end": "2024-03-01"}},
        headers=world.headers(tenant.viewer),
    )
    error = only_error(body)  # no data either way
    assert error["message"].startswith("Variable '$r' has invalid value at .start")
    assert "day is out of range for month" in error["message"]
    assert error.get("extensions", {}).get("code") != "INTERNAL"


# --- request body size --------------------------------------------------------------------


async def test_oversized_body(client: httpx.AsyncClient, world: World, settings: Settings) -> None:
    tenant = await world.tenant("body")
    padding = "#" * settings.max_body_bytes  # a GraphQL comment: valid, just too big
    payload = {"query": f"{{ me {{ email }} }}\n{padding}"}
    response = await client.post("/graphql", json=payload, headers=world.headers(tenant.viewer))
    assert response.status_code == 413
    error = response.json()["errors"][0]
    assert error["message"] == f"request body is larger than {settings.max_body_bytes} bytes"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]

    # Without a Content-Length (chunked), counted while it is read.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(settings.max_body_bytes // 1024 + 2):
            yield b" " * 1024

    response = await client.post(
        "/graphql",
        content=chunks(),
        headers={**world.headers(tenant.viewer), "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


# --- unexpected errors are masked -------------------------------------------------------


async def test_unexpected_error_is_masked_and_logged(
    services: Services, owner: asyncpg.Connection, world: World, logs: LogLines
) -> None:
    tenant = await world.tenant("mask")
    async with app_with_broken_data_path(services, owner) as client:
        response = await client.post(
            "/graphql",
            json={"query": "{ clients { nodes { id } } }"},
            headers=world.headers(tenant.viewer),
        )
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    error = only_error(response.json())
    assert error["message"] == f"Unexpected error (request id {request_id})."
    assert error["extensions"] == {"code": "INTERNAL", "requestId": request_id}
    assert "nonexistent" not in response.text
    assert "No such file" not in response.text

    (line,) = logs.events("graphql.unexpected_error")
    assert line["request_id"] == request_id
    assert line["tenant_id"] == str(tenant.id)
    assert line["level"] == "error"
    assert "permission denied for table" in line["error"]
    assert "Traceback" in line["exception"]


async def test_database_down_during_authentication_is_503(
    endpoints: Endpoints, settings: Settings, world: World, logs: LogLines
) -> None:
    tenant = await world.tenant("dbdown")
    url = unreachable_database_url()
    async with other_app(endpoints, settings, database_url=url) as (_, client):
        response = await client.post(
            "/graphql", json={"query": ME}, headers=world.headers(tenant.viewer)
        )
    assert response.status_code == 503
    error = response.json()["errors"][0]
    assert error["message"] == "the database is unavailable; try again shortly"
    assert error["extensions"]["code"] == "UNAVAILABLE"
    (line,) = logs.events("auth.unavailable")
    assert line["cause"] == "FileNotFoundError(2, 'No such file or directory')"


# --- statement timeout ----------------------------------------------------------------------


async def test_statement_timeout(data_dir: Path, endpoints: Endpoints) -> None:
    settings = make_settings(data_dir, statement_timeout_ms=200)
    async with other_app(endpoints, settings) as (services, _):
        with pytest.raises(DBAPIError) as raised:
            async with services.db.transaction(Scope.system()) as session:
                await session.execute(text("SELECT pg_sleep(1)"))
        # SQLAlchemy's DBAPIError wraps its asyncpg adapter's error, caused by asyncpg's own.
        assert raised.value.orig is not None
        assert isinstance(raised.value.orig.__cause__, asyncpg.exceptions.QueryCanceledError)
        assert "canceling statement due to statement timeout" in str(raised.value)
        # A short statement in the next transaction is fine: the setting is per transaction.
        async with services.db.transaction(Scope.system()) as session:
            assert (await session.execute(text("SELECT pg_sleep(0.05), 1"))).one()[1] == 1


# --- CORS -------------------------------------------------------------------------------------


async def test_cors_allow_list(data_dir: Path, endpoints: Endpoints, world: World) -> None:
    tenant = await world.tenant("cors")
    allowed = "https://dashboard.example.com.au"
    settings = make_settings(data_dir, cors_origins=[allowed])
    async with other_app(endpoints, settings) as (_, client):
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        response = await client.options("/graphql", headers={"Origin": allowed, **preflight})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == allowed
        assert "authorization" in response.headers["access-control-allow-headers"].lower()

        response = await client.options(
            "/graphql", headers={"Origin": "https://evil.example", **preflight}
        )
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers

        for origin, expected in ((allowed, allowed), ("https://evil.example", None)):
            response = await client.post(
                "/graphql",
                json={"query": ME},
                headers={**world.headers(tenant.viewer), "Origin": origin},
            )
            assert response.status_code == 200
            assert response.headers.get("access-control-allow-origin") == expected
        # Errors are readable cross-origin too (the 401 carries the CORS headers).
        response = await client.post("/graphql", json={"query": ME}, headers={"Origin": allowed})
        assert response.status_code == 401
        assert response.headers["access-control-allow-origin"] == allowed
        assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
