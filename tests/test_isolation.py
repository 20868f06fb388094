"""Tenant A's token asking for tenant B's data through the API gets nothing."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import event

from tests.conftest import TenantFixture, World, gql
from zixly.container import Services
from zixly.dev.seed import copy_financials, daily_financials

RANGE = {"start": "2025-01-01", "end": "2025-03-31"}


async def _with_financials(world: World, label: str) -> TenantFixture:
    tenant = await world.tenant(label, clients=3)
    rng = random.Random(label)
    for client in tenant.client_ids:
        await copy_financials(
            world.owner, daily_financials(rng, tenant.id, client, dt.date(2025, 1, 1), 90, 1000.0)
        )
    return tenant


async def test_lists_never_include_another_tenants_rows(
    client: httpx.AsyncClient, world: World
) -> None:
    a = await _with_financials(world, "iso-a")
    b = await _with_financials(world, "iso-b")
    headers = world.headers(a.viewer)
    body = await gql(client, "{ clients(first: 500) { nodes { id } } }", headers=headers)
    assert {n["id"] for n in body["data"]["clients"]["nodes"]} == {str(c) for c in a.client_ids}
    body = await gql(
        client,
        "query($r: DateRangeInput!) { financials(range: $r, first: 500) "
        "{ nodes { clientId } pageInfo { hasNextPage } } }",
        {"r": RANGE},
        headers=headers,
    )
    client_ids = {n["clientId"] for n in body["data"]["financials"]["nodes"]}
    assert client_ids <= {str(c) for c in a.client_ids}
    assert not client_ids & {str(c) for c in b.client_ids}


async def test_another_tenants_ids_are_not_found(client: httpx.AsyncClient, world: World) -> None:
    a = await _with_financials(world, "iso-a")
    b = await _with_financials(world, "iso-b")
    headers = world.headers(a.admin)
    body = await gql(
        client,
        "query($id: ID!) { client(id: $id) { name } }",
        {"id": str(b.client_ids[0])},
        headers=headers,
    )
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    body = await gql(
        client,
        "query($r: DateRangeInput!, $c: ID) { financials(range: $r, clientId: $c) "
        "{ nodes { id } } }",
        {"r": RANGE, "c": str(b.client_ids[0])},
        headers=headers,
    )
    assert body["data"]["financials"]["nodes"] == []


async def test_another_tenants_cursor_is_rejected(client: httpx.AsyncClient, world: World) -> None:
    a = await _with_financials(world, "iso-a")
    b = await _with_financials(world, "iso-b")
    query = (
        "query($r: DateRangeInput!, $after: String) { financials(range: $r, first: 10, "
        "after: $after) { nodes { id } pageInfo { endCursor } } }"
    )
    b_page = await gql(client, query, {"r": RANGE}, headers=world.headers(b.viewer))
    b_cursor = b_page["data"]["financials"]["pageInfo"]["endCursor"]
    stolen = await gql(
        client, query, {"r": RANGE, "after": b_cursor}, headers=world.headers(a.viewer)
    )
    assert stolen["data"] is None
    assert stolen["errors"][0]["extensions"] == {"code": "VALIDATION_ERROR", "field": "after"}
    # A cursor from one listing is not accepted by another listing of the same tenant.
    clients = await gql(
        client,
        "query($after: String) { clients(first: 1, after: $after) { nodes { id } } }",
        {"after": b_cursor},
        headers=world.headers(b.viewer),
    )
    assert clients["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"


@contextmanager
def count_statements(services: Services) -> Iterator[list[str]]:
    statements: list[str] = []

    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", _count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", _count)


async def test_clients_with_latest_financials_cost_constant_statements(
    client: httpx.AsyncClient, world: World, services: Services
) -> None:
    query = "{ clients(first: 100) { nodes { name latestFinancial { recordDate revenue } } } }"
    counts = []
    for size in (2, 12):
        tenant = await world.tenant(f"loader{size}", clients=size)
        rng = random.Random(size)
        for c in tenant.client_ids:
            await copy_financials(
                world.owner, daily_financials(rng, tenant.id, c, dt.date(2025, 1, 1), 3, 100.0)
            )
        with count_statements(services) as statements:
            body = await gql(client, query, headers=world.headers(tenant.viewer))
        nodes = body["data"]["clients"]["nodes"]
        assert len(nodes) == size
        assert all(n["latestFinancial"]["recordDate"] == "2025-01-03" for n in nodes)
        counts.append(len(statements))
    # The authentication look-up (which also scopes the transaction), the clients page and
    # one batched latest-financials query: the same for 2 clients as for 12.
    assert counts[0] == counts[1] == 3, counts
