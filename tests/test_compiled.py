"""The compiled connection path (zixly/graphql/compiled): for every operation it answers,
its response is exactly Strawberry's for the same request (the same request is sent again
with the path switched off); everything it does not support is served by Strawberry."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import literal_column, text
from starlette.types import Message
from strawberry.permission import BasePermission
from strawberry.types.base import get_object_definition

from tests.conftest import LogLines, TenantFixture, World
from zixly.app import create_app
from zixly.container import Services
from zixly.core.metrics import REGISTRY
from zixly.graphql.api.clients import FinancialRecord
from zixly.graphql.compiled import endpoint, sources
from zixly.graphql.compiled.planner import Planner
from zixly.graphql.context import build_context
from zixly.graphql.schema import build_schema
from zixly.security.principal import Principal, Role

START = dt.date(2024, 3, 1)
DAYS = 6
RANGE = {"start": "2024-03-01", "end": "2024-03-06"}
UTC = dt.UTC


@dataclass
class Arranged:
    tenant: TenantFixture
    other: TenantFixture
    headers: dict[str, str]
    other_headers: dict[str, str]


async def _add_financials(owner: asyncpg.Connection, tenant: TenantFixture, seed: int) -> None:
    """Every client a row a day; client 0 a second source on even days (several rows share
    a date, so the id breaks ties); values of every sign and zero, some external ids."""
    rows = []
    for day in range(DAYS):
        for n, client_id in enumerate(tenant.client_ids):
            systems = ["manual", "xero"] if n == 0 and day % 2 == 0 else ["manual"]
            for system in systems:
                k = seed + day * 10 + n
                rows.append(
                    (
                        tenant.id,
                        client_id,
                        START + dt.timedelta(days=day),
                        Decimal(f"{k * 101}.{k % 100:02d}"),
                        Decimal("0.00") if k % 3 == 0 else Decimal(f"{k}.5"),
                        Decimal(f"-{k}.07"),
                        Decimal("1000000.10"),
                        "AUD",
                        system,
                        f"ext-{k}" if k % 2 else None,
                    )
                )
    await owner.executemany(
        "INSERT INTO financials (tenant_id, client_kpi_id, record_date, revenue, expenses, "
        "net_profit, cash_flow, currency, source_system, external_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        rows,
    )


async def _add_metrics(owner: asyncpg.Connection, tenant: TenantFixture) -> None:
    """Timestamps with and without microseconds (isoformat drops zero microseconds)."""
    c0, c1 = tenant.client_ids[:2]
    metrics = [
        (c0, "tasks_completed", Decimal("5"), "tasks", dt.datetime(2024, 3, 1, 9, 0, tzinfo=UTC)),
        (c1, "tasks_completed", Decimal("0"), None, dt.datetime(2024, 3, 1, 9, 0, tzinfo=UTC)),
        (c0, "nps", Decimal("-12.3456"), None, dt.datetime(2024, 3, 2, 0, 0, 0, 1, tzinfo=UTC)),
        (c1, "nps", Decimal("99.5"), "pts", dt.datetime(2024, 3, 6, 23, 59, 59, 999999, UTC)),
        (c0, "tasks_completed", Decimal("7"), "tasks", dt.datetime(2024, 3, 7, 0, 0, tzinfo=UTC)),
    ]
    await owner.executemany(
        "INSERT INTO custom_metrics (tenant_id, client_kpi_id, metric_name, metric_value, unit, "
        "record_date, source_system) VALUES ($1, $2, $3, $4, $5, $6, 'asana')",
        [(tenant.id, *metric) for metric in metrics],
    )


@pytest.fixture
async def arranged(world: World, owner: asyncpg.Connection) -> Arranged:
    tenant = await world.tenant("cmp", clients=3)
    other = await world.tenant("cmp-other", clients=2)
    await _add_financials(owner, tenant, seed=1)
    await _add_financials(owner, other, seed=500)
    await _add_metrics(owner, tenant)
    await _add_metrics(owner, other)
    # Names with LIKE metacharacters and quotes; one timestamp on a whole second.
    await owner.execute(
        "UPDATE client_kpis SET client_name = 'Zed 100% \"quoted\" under_score', "
        "industry = NULL, created_at = '2024-01-02T03:04:05Z' WHERE id = $1",
        tenant.client_ids[2],
    )
    return Arranged(tenant, other, world.headers(tenant.viewer), world.headers(other.viewer))


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("zixly_graphql_compiled_total", {"outcome": outcome}) or 0.0


async def _post(
    client: httpx.AsyncClient, body: Any, headers: dict[str, str]
) -> tuple[httpx.Response, str]:
    """The response and which path served it ("hit" or "fallback")."""
    hits, fallbacks = _count("hit"), _count("fallback")
    response = await client.post("/graphql", json=body, headers=headers)
    if _count("hit") == hits + 1 and _count("fallback") == fallbacks:
        return response, "hit"
    assert (_count("hit"), _count("fallback")) == (hits, fallbacks + 1)
    return response, "fallback"


async def _both(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response, str, httpx.Response]:
    """The response with the compiled path on (and which path answered), then Strawberry's."""
    body = {"query": query, "variables": variables}
    fast, outcome = await _post(client, body, headers or {})
    with monkeypatch.context() as patch:
        patch.setattr(endpoint, "COMPILED_PATH_ENABLED", False)
        slow = await client.post("/graphql", json=body, headers=headers or {})
    return fast, outcome, slow


async def _same(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Asserts the compiled path answered, exactly as Strawberry does; returns the data."""
    fast, outcome, slow = await _both(client, monkeypatch, query, variables, headers)
    assert outcome == "hit", fast.text
    assert slow.status_code == fast.status_code == 200
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    assert [name for name, _ in fast.headers.multi_items()] == [
        name for name, _ in slow.headers.multi_items()
    ]
    parsed, expected = fast.json(), slow.json()
    assert "errors" not in expected, expected
    assert parsed == expected
    # Same keys in the same order at every level, not only equal as dicts.
    assert json.dumps(parsed) == json.dumps(expected)
    data: dict[str, Any] = parsed["data"]
    return data


FULL_FINANCIAL = (
    "id clientId recordDate revenue expenses netProfit cashFlow currency sourceSystem externalId"
)
BENCH = """
query BenchFinancials($start: Date!, $end: Date!, $first: Int!) {
  financials(range: {start: $start, end: $end}, first: $first) {
    edges { cursor node { id clientId recordDate revenue expenses netProfit cashFlow currency } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def test_benchmark_query_matches_strawberry_and_the_rows(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    arranged: Arranged,
    owner: asyncpg.Connection,
) -> None:
    data = await _same(client, monkeypatch, BENCH, {**RANGE, "first": 500}, arranged.headers)
    expected = await owner.fetch(
        "SELECT id, client_kpi_id, record_date, revenue, expenses, net_profit, cash_flow, "
        "currency FROM financials WHERE tenant_id = $1 ORDER BY record_date, id",
        arranged.tenant.id,
    )
    assert len(expected) == 3 * DAYS + DAYS // 2
    assert [edge["node"] for edge in data["financials"]["edges"]] == [
        {
            "id": str(row["id"]),
            "clientId": str(row["client_kpi_id"]),
            "recordDate": row["record_date"].isoformat(),
            "revenue": str(row["revenue"]),
            "expenses": str(row["expenses"]),
            "netProfit": str(row["net_profit"]),
            "cashFlow": str(row["cash_flow"]),
            "currency": "AUD",
        }
        for row in expected
    ]
    assert data["financials"]["pageInfo"]["hasNextPage"] is False


@pytest.mark.parametrize(
    ("query", "variables", "rows"),
    [
        pytest.param(
            '{ financials(range: {start: "2024-03-01", end: "2024-03-06"}) '
            f"{{ nodes {{ {FULL_FINANCIAL} }} }} }}",
            None,
            21,
            id="nodes-only-literals",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { financials(range: $r, first: 5) "
            f"{{ edges {{ node {{ {FULL_FINANCIAL} }} }} }} }}",
            {"r": RANGE},
            5,
            id="edges-only-range-variable",
        ),
        pytest.param(
            "query Q($r: DateRangeInput!) { list: financials(range: $r, first: 4) {"
            " e: edges { c: cursor n: node { i: id d: recordDate r: revenue } }"
            " ns: nodes { x: externalId i: id }"
            " pi: pageInfo { more: hasNextPage prev: hasPreviousPage"
            " s: startCursor end: endCursor }"
            " } }",
            {"r": RANGE},
            4,
            id="aliases-at-every-level",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { __typename financials(range: $r, first: 2) {"
            " __typename edges { __typename cursor node { __typename id } }"
            " nodes { __typename } pageInfo { __typename hasNextPage } } }",
            {"r": RANGE},
            2,
            id="typename-everywhere",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { financials(range: $r, first: 3) {"
            " edges { cursor } edges { node { id } node { revenue id } }"
            " nodes { id id currency } pageInfo { endCursor } pageInfo { startCursor } } }",
            {"r": RANGE},
            3,
            id="repeated-fields-merge",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { financials(range: $r, first: 3) {"
            " pageInfo { hasPreviousPage startCursor } } }",
            {"r": RANGE},
            None,
            id="page-info-only",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { financials(range: $r, first: 3) {"
            " a: nodes { id } b: nodes { revenue } pageInfo { endCursor hasNextPage } } }",
            {"r": RANGE},
            3,
            id="two-node-selections",
        ),
        pytest.param(
            "query($r: DateRangeInput!, $first: Int = 2, $after: String) {"
            " financials(range: $r, first: $first, after: $after) { nodes { id } } }",
            {"r": RANGE},
            2,
            id="variable-defaults",
        ),
        pytest.param(
            '{ financials(range: {start: "2023-01-01", end: "2023-01-31"}) {'
            " edges { cursor node { id } } nodes { id }"
            " pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }",
            None,
            0,
            id="empty",
        ),
    ],
)
async def test_matches_strawberry(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    arranged: Arranged,
    query: str,
    variables: dict[str, Any] | None,
    rows: int | None,
) -> None:
    data = await _same(client, monkeypatch, query, variables, arranged.headers)
    (connection,) = [value for value in data.values() if isinstance(value, dict)]
    lists = [value for value in connection.values() if isinstance(value, list)]
    assert (len(lists[0]) if lists else None) == rows


async def test_three_pages_with_the_compiled_cursors(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    arranged: Arranged,
    owner: asyncpg.Connection,
) -> None:
    query = (
        "query($r: DateRangeInput!, $after: String) {"
        " financials(range: $r, first: 8, after: $after) {"
        " edges { cursor node { id } } pageInfo { hasNextPage endCursor startCursor } } }"
    )
    seen: list[str] = []
    after = None
    for _ in range(3):
        data = await _same(
            client, monkeypatch, query, {"r": RANGE, "after": after}, arranged.headers
        )
        page = data["financials"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        after = page["pageInfo"]["endCursor"]
    expected = await owner.fetch(
        "SELECT id FROM financials WHERE tenant_id = $1 ORDER BY record_date, id",
        arranged.tenant.id,
    )
    assert seen == [str(row["id"]) for row in expected]  # 21 rows: pages of 8, 8, 5
    assert page["pageInfo"]["hasNextPage"] is False


async def test_client_filter_and_tenant_isolation(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    arranged: Arranged,
    owner: asyncpg.Connection,
) -> None:
    query = (
        "query($r: DateRangeInput!, $c: ID) { financials(range: $r, clientId: $c, first: 100)"
        " { nodes { id clientId } } }"
    )
    mine = await _same(client, monkeypatch, query, {"r": RANGE, "c": None}, arranged.headers)
    ids = {node["id"] for node in mine["financials"]["nodes"]}
    theirs = await owner.fetch("SELECT id FROM financials WHERE tenant_id = $1", arranged.other.id)
    assert len(ids) == 21 and not ids & {str(row["id"]) for row in theirs}
    c0 = str(arranged.tenant.client_ids[0])
    filtered = await _same(client, monkeypatch, query, {"r": RANGE, "c": c0}, arranged.headers)
    nodes = filtered["financials"]["nodes"]
    assert len(nodes) == DAYS + DAYS // 2 and {n["clientId"] for n in nodes} == {c0}
    # Another tenant's client id filters to nothing, never to that tenant's rows.
    other = str(arranged.other.client_ids[0])
    assert await _same(client, monkeypatch, query, {"r": RANGE, "c": other}, arranged.headers) == {
        "financials": {"nodes": []}
    }


CLIENTS = (
    "query($first: Int, $after: String, $search: String) {"
    " clients(first: $first, after: $after, search: $search) {"
    " edges { cursor node { id clientId name industry createdAt updatedAt __typename } }"
    " pageInfo { hasNextPage endCursor } } }"
)


async def test_clients(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, arranged: Arranged
) -> None:
    first = await _same(client, monkeypatch, CLIENTS, {"first": 2}, arranged.headers)
    page = first["clients"]
    assert [edge["node"]["clientId"] for edge in page["edges"]] == ["C-0", "C-1"]
    rest = await _same(
        client,
        monkeypatch,
        CLIENTS,
        {"first": 2, "after": page["pageInfo"]["endCursor"]},
        arranged.headers,
    )
    (zed,) = [edge["node"] for edge in rest["clients"]["edges"]]
    assert zed["createdAt"] == "2024-01-02T03:04:05+00:00" and zed["industry"] is None
    for search, names in (("100%", ["C-2"]), ("under_", ["C-2"]), ("C-1", ["C-1"]), ("_x", [])):
        found = await _same(client, monkeypatch, CLIENTS, {"search": search}, arranged.headers)
        assert [e["node"]["clientId"] for e in found["clients"]["edges"]] == names
    # The repository's own check (inside ClientRepository.page) raises: Strawberry's error.
    fast, outcome, slow = await _both(
        client, monkeypatch, CLIENTS, {"search": "x" * 201}, arranged.headers
    )
    assert outcome == "fallback" and fast.json() == slow.json()
    assert fast.json()["errors"][0]["extensions"] == {"code": "VALIDATION_ERROR", "field": "search"}


async def test_custom_metrics(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, arranged: Arranged
) -> None:
    query = (
        "query($r: DateRangeInput!, $name: String, $after: String) {"
        " customMetrics(range: $r, metricName: $name, first: 2, after: $after) {"
        " edges { cursor node { id clientId metricName value unit recordDate sourceSystem } }"
        " pageInfo { hasNextPage endCursor } } }"
    )
    page1 = await _same(client, monkeypatch, query, {"r": RANGE}, arranged.headers)
    after = page1["customMetrics"]["pageInfo"]["endCursor"]
    page2 = await _same(client, monkeypatch, query, {"r": RANGE, "after": after}, arranged.headers)
    nodes = [e["node"] for p in (page1, page2) for e in p["customMetrics"]["edges"]]
    assert [(n["recordDate"], n["unit"]) for n in nodes][2:] == [
        ("2024-03-02T00:00:00.000001+00:00", None),
        ("2024-03-06T23:59:59.999999+00:00", "pts"),
    ]
    # Two values share the first moment: the id breaks the tie.
    tied = nodes[:2]
    assert {n["recordDate"] for n in tied} == {"2024-03-01T09:00:00+00:00"}
    assert tied[0]["id"] < tied[1]["id"]
    assert sorted(n["value"] for n in tied) == ["0.0000", "5.0000"]
    assert [n["value"] for n in nodes[2:]] == ["-12.3456", "99.5000"]
    assert page2["customMetrics"]["pageInfo"]["hasNextPage"] is False
    named = await _same(client, monkeypatch, query, {"r": RANGE, "name": "nps"}, arranged.headers)
    assert [e["node"]["value"] for e in named["customMetrics"]["edges"]] == ["-12.3456", "99.5000"]


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(
            "query($r: DateRangeInput!) { financials(range: $r) { ...F } }"
            " fragment F on FinancialRecordConnection { nodes { id } }",
            id="fragment",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { financials(range: $r) { ... on"
            " FinancialRecordConnection { nodes { id } } } }",
            id="inline-fragment",
        ),
        pytest.param(
            "query($r: DateRangeInput!, $yes: Boolean!) { financials(range: $r) {"
            " nodes { id revenue @include(if: $yes) } } }",
            id="include-directive",
        ),
        pytest.param(
            "query { clients { nodes { id latestFinancial { revenue } } } }", id="nested-object"
        ),
        pytest.param(
            "query($r: DateRangeInput!) { financials(range: $r) { nodes { id } }"
            " clients { nodes { id } } }",
            id="two-root-fields",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { a: financials(range: $r) { nodes { id } }"
            " b: financials(range: $r) { nodes { id } } }",
            id="same-listing-twice",
        ),
        pytest.param("query { me { email } }", id="other-root-field"),
        pytest.param(
            "query($r: DateRangeInput!) { financials(range: $r) { nodes { id } } }"
            " query Other { me { email } }",
            id="two-operations",
        ),
    ],
)
async def test_unsupported_shapes_are_served_by_strawberry(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, arranged: Arranged, query: str
) -> None:
    variables = {"r": RANGE, "yes": True}
    fast, outcome, slow = await _both(client, monkeypatch, query, variables, arranged.headers)
    assert outcome == "fallback"
    assert (fast.status_code, fast.json()) == (slow.status_code, slow.json())


async def test_other_requests_are_served_by_strawberry(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, arranged: Arranged
) -> None:
    query = "query Q($r: DateRangeInput!) { financials(range: $r, first: 1) { nodes { id } } }"
    body = {"query": query, "variables": {"r": RANGE}}
    # Another operation name than the document's: a request error (200 for application/json).
    response, outcome = await _post(client, {**body, "operationName": "Nope"}, arranged.headers)
    assert (outcome, response.status_code) == ("fallback", 200)
    [error] = response.json()["errors"]
    assert error["message"] == 'Unknown operation named "Nope".'
    assert error["extensions"] == {"code": "BAD_REQUEST"}
    # A batch (not supported): not a well-formed request, 400.
    response, outcome = await _post(client, [body], arranged.headers)
    assert (outcome, response.status_code) == ("fallback", 400)
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    # Request extensions are Strawberry's business (it gets the body the wrapper read).
    response, outcome = await _post(client, {**body, "extensions": {"x": 1}}, arranged.headers)
    assert outcome == "fallback" and len(response.json()["data"]["financials"]["nodes"]) == 1
    # A mutation.
    response, outcome = await _post(
        client,
        {"query": 'mutation { upsertClient(input: {clientId: "M", name: "M"}) { id } }'},
        arranged.headers,
    )
    assert outcome == "fallback"
    # GET goes straight to Strawberry (which answers queries over GET too), uncounted.
    counts = _count("hit"), _count("fallback")
    params = {"query": query, "variables": json.dumps({"r": RANGE})}
    response = await client.get("/graphql", params=params, headers=arranged.headers)
    assert response.status_code == 200 and (_count("hit"), _count("fallback")) == counts
    assert len(response.json()["data"]["financials"]["nodes"]) == 1
    # An Accept without JSON: Strawberry's 406, never a compiled 200.
    response, outcome = await _post(client, body, {**arranged.headers, "Accept": "text/plain"})
    assert (outcome, response.status_code) == ("fallback", 406)
    # The document's own operation name is compiled.
    response, outcome = await _post(client, {**body, "operationName": "Q"}, arranged.headers)
    assert outcome == "hit" and len(response.json()["data"]["financials"]["nodes"]) == 1


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        pytest.param(
            {"r": {"start": "2024-03-06", "end": "2024-03-01"}},
            "VALIDATION_ERROR",
            id="reversed-range",
        ),
        pytest.param(
            {"r": {"start": "2020-01-01", "end": "2024-03-01"}},
            "VALIDATION_ERROR",
            id="range-too-long",
        ),
        pytest.param({"r": RANGE, "first": 0}, "VALIDATION_ERROR", id="first-zero"),
        pytest.param({"r": RANGE, "first": 501}, "VALIDATION_ERROR", id="first-too-big"),
        pytest.param({"r": RANGE, "c": "not-a-uuid"}, "VALIDATION_ERROR", id="bad-client-id"),
        pytest.param({"r": RANGE, "after": "garbage"}, "VALIDATION_ERROR", id="garbage-cursor"),
        pytest.param(
            {"r": {"start": "2024-13-01", "end": "2024-03-01"}},
            "BAD_USER_INPUT",
            id="variable-coercion",
        ),
        pytest.param({"r": RANGE, "first": "ten"}, "BAD_USER_INPUT", id="variable-type"),
    ],
)
async def test_argument_errors_are_strawberrys(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    arranged: Arranged,
    variables: dict[str, Any],
    code: str | None,
) -> None:
    query = (
        "query($r: DateRangeInput!, $first: Int, $after: String, $c: ID) {"
        " financials(range: $r, first: $first, after: $after, clientId: $c) { nodes { id } } }"
    )
    fast, outcome, slow = await _both(client, monkeypatch, query, variables, arranged.headers)
    assert outcome == "fallback"
    assert fast.json() == slow.json()
    (error,) = fast.json()["errors"]
    assert (error.get("extensions") or {}).get("code") == code


async def test_foreign_cursors_are_rejected_as_strawberry_rejects_them(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, arranged: Arranged
) -> None:
    query = (
        "query($r: DateRangeInput!, $after: String) {"
        " financials(range: $r, first: 1, after: $after) { pageInfo { endCursor } } }"
    )
    theirs = await _same(client, monkeypatch, query, {"r": RANGE}, arranged.other_headers)
    clients = await _same(
        client,
        monkeypatch,
        "{ clients(first: 1) { pageInfo { endCursor } } }",
        None,
        arranged.headers,
    )
    for cursor in (
        theirs["financials"]["pageInfo"]["endCursor"],  # another tenant's
        clients["clients"]["pageInfo"]["endCursor"],  # another listing's
    ):
        fast, outcome, slow = await _both(
            client, monkeypatch, query, {"r": RANGE, "after": cursor}, arranged.headers
        )
        assert outcome == "fallback"
        assert fast.json() == slow.json()
        assert fast.json()["errors"][0]["extensions"] == {
            "code": "VALIDATION_ERROR",
            "field": "after",
        }


async def test_callers_without_a_tenant_role_get_strawberrys_error(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, world: World
) -> None:
    staff = await world.staff()  # staff, member of no tenant
    query = "query($r: DateRangeInput!) { financials(range: $r) { nodes { id } } }"
    fast, outcome, slow = await _both(
        client, monkeypatch, query, {"r": RANGE}, world.headers(staff)
    )
    assert outcome == "fallback"
    assert fast.json() == slow.json()
    assert fast.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_invalid_documents_are_strawberrys(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, arranged: Arranged
) -> None:
    deep = "{ clients { edges { node { latestFinancial { id } } } } }"
    too_many_aliases = (
        "query($r: DateRangeInput!) { financials(range: $r) { nodes { "
        + " ".join(f"a{n}: id" for n in range(16))
        + " } } }"
    )
    for query in (
        "{ financials { nodes { id } } }",  # a required argument is missing
        '{ financials(range: {start: "2024-03-01", end: "2024-03-02"}) { nodes { nope } } }',
        too_many_aliases,
        "{ financials(",
        deep,
    ):
        fast, outcome, slow = await _both(
            client, monkeypatch, query, {"r": RANGE}, arranged.headers
        )
        assert outcome == "fallback"
        assert (fast.status_code, fast.json()) == (slow.status_code, slow.json())


async def test_records_the_operation_latency(client: httpx.AsyncClient, arranged: Arranged) -> None:
    labels = {"root_field": "clients", "type": "query"}

    def observed() -> float:
        return (
            REGISTRY.get_sample_value("zixly_graphql_request_duration_seconds_count", labels) or 0.0
        )

    before = observed()
    response, outcome = await _post(
        client,
        {
            "query": "query CompiledLatency { clients(first: 1) { nodes { id } } }",
        },
        arranged.headers,
    )
    assert outcome == "hit" and response.status_code == 200
    assert observed() == before + 1


async def test_switched_off_everything_goes_to_strawberry(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, arranged: Arranged
) -> None:
    monkeypatch.setattr(endpoint, "COMPILED_PATH_ENABLED", False)
    counts = _count("hit"), _count("fallback")
    response = await client.post(
        "/graphql",
        json={"query": "{ clients(first: 1) { nodes { id } } }"},
        headers=arranged.headers,
    )
    assert response.status_code == 200 and len(response.json()["data"]["clients"]["nodes"]) == 1
    assert (_count("hit"), _count("fallback")) == counts  # the wrapper stepped aside


async def test_a_failing_statement_falls_back_on_a_fresh_transaction(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    arranged: Arranged,
    logs: LogLines,
) -> None:
    broken = dataclasses.replace(
        sources.FINANCIALS_SOURCE, keys=(literal_column("1 / 0"), literal_column("'x'"))
    )
    monkeypatch.setitem(sources.SOURCES, "financials", broken)  # planned afresh: a new text
    query = "query Broken($r: DateRangeInput!) { financials(range: $r) { nodes { id } } }"
    fast, outcome, slow = await _both(client, monkeypatch, query, {"r": RANGE}, arranged.headers)
    assert outcome == "fallback"
    assert fast.json() == slow.json() and len(fast.json()["data"]["financials"]["nodes"]) == 21
    (failed,) = logs.events("graphql.compiled.failed")
    assert "division by zero" in failed["error"]


async def test_fields_with_permissions_are_not_compiled(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, arranged: Arranged
) -> None:
    class Anyone(BasePermission):
        def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
            return True

    definition = next(
        f
        for f in get_object_definition(FinancialRecord, strict=True).fields
        if f.name == "external_id"
    )
    monkeypatch.setattr(definition, "permission_classes", [Anyone])
    query = "query Guarded($r: DateRangeInput!) { financials(range: $r) { nodes { externalId } } }"
    _fast, outcome, _slow = await _both(client, monkeypatch, query, {"r": RANGE}, arranged.headers)
    assert outcome == "fallback"


async def test_a_body_in_chunks_is_read_and_replayed(
    services: Services, arranged: Arranged
) -> None:
    app = create_app(services)

    async def call(query: str) -> tuple[str, dict[str, Any]]:
        body = json.dumps({"query": query, "variables": {"r": RANGE}}).encode()
        chunks = [body[:10], body[10:25], body[25:]]
        messages: list[dict[str, Any]] = [
            {"type": "http.request", "body": chunk, "more_body": n < 2}
            for n, chunk in enumerate(chunks)
        ]
        sent: list[Message] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        headers = [
            (b"content-type", b"application/json"),
            *((k.lower().encode(), v.encode()) for k, v in arranged.headers.items()),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/graphql",
            "raw_path": b"/graphql",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
        }
        hits = _count("hit")
        await app(scope, receive, send)
        outcome = "hit" if _count("hit") == hits + 1 else "fallback"
        assert sent[0]["status"] == 200
        return outcome, json.loads(b"".join(m.get("body", b"") for m in sent[1:]))

    compiled = await call("query($r: DateRangeInput!) { financials(range: $r) { nodes { id } } }")
    served = await call(
        "query($r: DateRangeInput!) { financials(range: $r) { ... on FinancialRecordConnection"
        " { nodes { id } } } }"
    )
    assert compiled[0] == "hit" and served[0] == "fallback"
    assert compiled[1] == served[1] and len(compiled[1]["data"]["financials"]["nodes"]) == 21


async def test_node_values_do_not_depend_on_the_session_date_style_or_time_zone(
    services: Services, arranged: Arranged
) -> None:
    settings = services.settings
    schema = build_schema(settings)._schema
    planner = Planner(schema, settings)
    principal = Principal(
        user_id=uuid.uuid4(),
        email=arranged.tenant.viewer,
        is_staff=False,
        tenant_id=arranged.tenant.id,
        tenant_slug=arranged.tenant.slug,
        role=Role.VIEWER,
    )
    ctx = build_context(services, principal, "test")
    dates = '{start: "2024-03-01", end: "2024-03-06"}'
    for query in (
        f"{{ financials(range: {dates}) {{ edges {{ cursor node {{ id recordDate }} }} }} }}",
        f"{{ customMetrics(range: {dates}) {{ edges {{ cursor node {{ recordDate }} }} }} }}",
        "{ clients { edges { cursor node { createdAt updatedAt } } } }",
        f"{{ financialSummary(range: {dates}, granularity: DAY) {{ periodStart periodEnd }} }}",
    ):
        plan = planner.plan(query)
        assert plan is not None
        arguments = plan.arguments(schema, None)
        assert arguments is not None
        bound = await plan.source.bind(ctx, arguments)
        statement = plan.select(bound)
        answers = []
        for style, zone in (("ISO, MDY", "UTC"), ("SQL, DMY", "Australia/Sydney")):
            async with services.db.transaction(principal.scope) as session:
                await session.execute(text(f"SET LOCAL datestyle = '{style}'"))
                await session.execute(text(f"SET LOCAL timezone = '{zone}'"))
                rows = (await session.execute(statement, bound.params)).all()
                answers.append([tuple(row) for row in rows])
        assert answers[0] == answers[1] and len(answers[0]) >= 3


# --- financialSummary: a plain list -----------------------------------------------------

SUMMARY_FIELDS = ("periodStart", "periodEnd", "revenue", "expenses", "netProfit", "cashFlow")
SUMMARY_ALL = " ".join((*SUMMARY_FIELDS, "recordCount"))
SUMMARY = (
    "query($r: DateRangeInput!, $g: Granularity!, $c: ID) {"
    f" financialSummary(range: $r, granularity: $g, clientId: $c) {{ {SUMMARY_ALL} }} }}"
)
MONEY = ("revenue", "expenses", "net_profit", "cash_flow")
GRANULARITIES = ("DAY", "WEEK", "MONTH", "QUARTER", "YEAR")


@dataclass(frozen=True)
class Record:
    client_id: uuid.UUID
    day: dt.date
    money: tuple[Decimal, Decimal, Decimal, Decimal]  # as MONEY


@dataclass
class Summarised:
    tenant: TenantFixture
    other: TenantFixture
    headers: dict[str, str]
    records: list[Record]  # the tenant's


def _summary_records(tenant: TenantFixture, seed: int) -> list[Record]:
    """Client 0 every 5 days from 2023-11-20 (a second source every third time), client 1
    every 9 days from 2023-11-22: months, quarters and a year boundary; values of every
    sign, zeros, and sums beyond numeric(14, 2)."""
    records = []
    for client, first, step, count in (
        (0, dt.date(2023, 11, 20), 5, 30),
        (1, dt.date(2023, 11, 22), 9, 16),
    ):
        for n in range(count):
            k = seed + n * 7 + client
            day = first + dt.timedelta(days=step * n)
            for source in range(2 if client == 0 and n % 3 == 0 else 1):
                big = (
                    Decimal("999999999999.99")
                    if n % 4 == 0
                    else Decimal(f"{k}.{(k * 3) % 100:02d}")
                )
                records.append(
                    Record(
                        tenant.client_ids[client],
                        day,
                        (
                            Decimal(f"{k * 131 % 9000}.{k % 100:02d}"),
                            Decimal("0.00") if k % 5 == 0 else Decimal(f"{k % 700}.{source}0"),
                            Decimal(f"-{k % 300}.05") if k % 2 else Decimal(f"{k % 50}.10"),
                            -big if source else big,
                        ),
                    )
                )
    return records


async def _insert_records(
    owner: asyncpg.Connection, tenant: TenantFixture, records: list[Record]
) -> None:
    seen: set[tuple[uuid.UUID, dt.date]] = set()
    rows = []
    for record in records:
        source = "xero" if (record.client_id, record.day) in seen else "manual"
        seen.add((record.client_id, record.day))
        rows.append((tenant.id, record.client_id, record.day, *record.money, source))
    await owner.executemany(
        "INSERT INTO financials (tenant_id, client_kpi_id, record_date, revenue, expenses, "
        "net_profit, cash_flow, source_system) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        rows,
    )


@pytest.fixture
async def summarised(world: World, owner: asyncpg.Connection) -> Summarised:
    tenant = await world.tenant("sum", clients=2)
    other = await world.tenant("sum-other", clients=2)
    records = _summary_records(tenant, seed=3)
    await _insert_records(owner, tenant, records)
    await _insert_records(owner, other, _summary_records(other, seed=400))
    return Summarised(tenant, other, world.headers(tenant.viewer), records)


def _period_start(day: dt.date, granularity: str) -> dt.date:
    if granularity == "DAY":
        return day
    if granularity == "WEEK":
        return day - dt.timedelta(days=day.weekday())
    if granularity == "MONTH":
        return day.replace(day=1)
    if granularity == "QUARTER":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)


def _next_period(start: dt.date, granularity: str) -> dt.date:
    if granularity in ("DAY", "WEEK"):
        return start + dt.timedelta(days=1 if granularity == "DAY" else 7)
    months = start.year * 12 + start.month - 1 + {"MONTH": 1, "QUARTER": 3, "YEAR": 12}[granularity]
    return dt.date(months // 12, months % 12 + 1, 1)


def _expected_summary(
    records: list[Record], start: dt.date, end: dt.date, granularity: str, client: uuid.UUID | None
) -> list[dict[str, Any]]:
    """Every period overlapping the range, clipped to it, with its records' sums."""
    periods = []
    period = _period_start(start, granularity)
    while period <= end:
        following = _next_period(period, granularity)
        first, last = max(period, start), min(following - dt.timedelta(days=1), end)
        inside = [r for r in records if first <= r.day <= last and client in (None, r.client_id)]
        sums = [sum((r.money[i] for r in inside), Decimal("0.00")) for i in range(4)]
        periods.append(
            {
                "periodStart": first.isoformat(),
                "periodEnd": last.isoformat(),
                **{
                    field: str(total) for field, total in zip(SUMMARY_FIELDS[2:], sums, strict=True)
                },
                "recordCount": len(inside),
            }
        )
        period = following
    return periods


SUMMARY_RANGES = {
    # Edges in the middle of a week, a month and a quarter; across a year's end.
    "mid-periods": ("2023-12-13", "2024-02-20"),
    "all-data": ("2023-10-15", "2024-05-03"),
    "one-day": ("2024-01-09", "2024-01-09"),
    "no-data": ("2022-06-01", "2022-08-15"),
}


@pytest.mark.parametrize("client_filter", [None, 0], ids=["all-clients", "client-0"])
@pytest.mark.parametrize("span", list(SUMMARY_RANGES))
@pytest.mark.parametrize("granularity", GRANULARITIES)
async def test_financial_summary_matches_strawberry_and_the_records(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    summarised: Summarised,
    granularity: str,
    span: str,
    client_filter: int | None,
) -> None:
    start, end = SUMMARY_RANGES[span]
    client_id = None if client_filter is None else summarised.tenant.client_ids[client_filter]
    variables = {
        "r": {"start": start, "end": end},
        "g": granularity,
        "c": None if client_id is None else str(client_id),
    }
    data = await _same(client, monkeypatch, SUMMARY, variables, summarised.headers)
    expected = _expected_summary(
        summarised.records,
        dt.date.fromisoformat(start),
        dt.date.fromisoformat(end),
        granularity,
        client_id,
    )
    assert data == {"financialSummary": expected}
    counts = sum(period["recordCount"] for period in expected)
    assert (counts > 0) == (span != "no-data")


async def test_financial_summary_of_another_tenants_client_is_zeros(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, summarised: Summarised
) -> None:
    variables = {
        "r": {"start": "2023-11-01", "end": "2024-01-31"},
        "g": "MONTH",
        "c": str(summarised.other.client_ids[0]),
    }
    data = await _same(client, monkeypatch, SUMMARY, variables, summarised.headers)
    zero = {"revenue": "0.00", "expenses": "0.00", "netProfit": "0.00", "cashFlow": "0.00"}
    assert data["financialSummary"] == [
        {"periodStart": s, "periodEnd": e, **zero, "recordCount": 0}
        for s, e in (
            ("2023-11-01", "2023-11-30"),
            ("2023-12-01", "2023-12-31"),
            ("2024-01-01", "2024-01-31"),
        )
    ]


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        pytest.param(
            '{ financialSummary(range: {start: "2023-12-13", end: "2024-02-20"}) { revenue } }',
            None,
            id="default-granularity-literals",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { financialSummary(range: $r, granularity: WEEK) {"
            " recordCount periodEnd cashFlow } }",
            {"r": {"start": "2023-12-13", "end": "2024-01-20"}},
            id="subset-in-another-order",
        ),
        pytest.param(
            "query S($r: DateRangeInput!, $g: Granularity! = QUARTER) { __typename"
            " s: financialSummary(range: $r, granularity: $g) { __typename from: periodStart"
            " to: periodEnd n: recordCount money: revenue again: revenue } }",
            {"r": {"start": "2023-12-13", "end": "2024-04-20"}},
            id="aliases-typename-variable-default",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { financialSummary(range: $r) { revenue }"
            " financialSummary(range: $r) { expenses revenue __typename } }",
            {"r": {"start": "2023-12-13", "end": "2024-02-20"}},
            id="repeated-fields-merge",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { financialSummary(range: $r, granularity: YEAR) {"
            " __typename } }",
            {"r": {"start": "2023-12-13", "end": "2024-02-20"}},
            id="typename-only",
        ),
    ],
)
async def test_financial_summary_shapes_match_strawberry(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    summarised: Summarised,
    query: str,
    variables: dict[str, Any] | None,
) -> None:
    data = await _same(client, monkeypatch, query, variables, summarised.headers)
    (periods,) = [value for value in data.values() if isinstance(value, list)]
    assert len(periods) >= 2


async def test_financial_summary_aliases_and_order_exactly(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, summarised: Summarised
) -> None:
    query = (
        "query($r: DateRangeInput!) { __typename q: financialSummary(range: $r,"
        " granularity: QUARTER) { n: recordCount __typename from: periodStart r: revenue } }"
    )
    r = {"start": "2023-12-13", "end": "2024-04-20"}
    data = await _same(client, monkeypatch, query, {"r": r}, summarised.headers)
    expected = _expected_summary(
        summarised.records, dt.date(2023, 12, 13), dt.date(2024, 4, 20), "QUARTER", None
    )
    assert [list(period) for period in data["q"]] == [["n", "__typename", "from", "r"]] * 3
    assert data == {
        "__typename": "Query",
        "q": [
            {
                "n": period["recordCount"],
                "__typename": "FinancialPeriod",
                "from": period["periodStart"],
                "r": period["revenue"],
            }
            for period in expected
        ],
    }
    assert [period["from"] for period in data["q"]] == ["2023-12-13", "2024-01-01", "2024-04-01"]


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(
            "query($r: DateRangeInput!) { financialSummary(range: $r) { ...P } }"
            " fragment P on FinancialPeriod { revenue }",
            id="fragment",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { financialSummary(range: $r) {"
            " ... on FinancialPeriod { revenue } } }",
            id="inline-fragment",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { financialSummary(range: $r) {"
            " revenue expenses @skip(if: true) } }",
            id="skip-directive",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { a: financialSummary(range: $r) { revenue }"
            " b: financialSummary(range: $r, granularity: DAY) { revenue } }",
            id="same-list-twice",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { financialSummary(range: $r) { revenue }"
            " financials(range: $r) { nodes { id } } }",
            id="with-a-connection",
        ),
        pytest.param(
            "query($r: DateRangeInput!) { cashFlow(range: $r) { cashBalance } }",
            id="not-a-source",
        ),
    ],
)
async def test_unsupported_financial_summary_shapes_are_served_by_strawberry(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, summarised: Summarised, query: str
) -> None:
    variables = {"r": {"start": "2023-12-13", "end": "2024-02-20"}}
    fast, outcome, slow = await _both(client, monkeypatch, query, variables, summarised.headers)
    assert outcome == "fallback"
    assert (fast.status_code, fast.json()) == (slow.status_code, slow.json())
    assert "errors" not in fast.json()


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        pytest.param(
            {"r": {"start": "2024-02-20", "end": "2023-12-13"}, "g": "DAY"},
            "VALIDATION_ERROR",
            id="reversed-range",
        ),
        pytest.param(
            {"r": {"start": "2020-01-01", "end": "2024-03-01"}, "g": "YEAR"},
            "VALIDATION_ERROR",
            id="range-too-long",
        ),
        pytest.param(
            {"r": {"start": "2024-01-01", "end": "2024-02-01"}, "g": "DAY", "c": "nope"},
            "VALIDATION_ERROR",
            id="bad-client-id",
        ),
        pytest.param(
            {"r": {"start": "2024-01-01", "end": "2024-02-01"}, "g": "HOUR"},
            "BAD_USER_INPUT",
            id="unknown-granularity",
        ),
        pytest.param(
            {"r": {"start": "2024-01-01", "end": "2024-02-01"}, "g": None},
            "BAD_USER_INPUT",
            id="null-granularity",
        ),
    ],
)
async def test_financial_summary_argument_errors_are_strawberrys(
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    summarised: Summarised,
    variables: dict[str, Any],
    code: str | None,
) -> None:
    fast, outcome, slow = await _both(client, monkeypatch, SUMMARY, variables, summarised.headers)
    assert outcome == "fallback"
    assert (fast.status_code, fast.json()) == (slow.status_code, slow.json())
    (error,) = fast.json()["errors"]
    assert (error.get("extensions") or {}).get("code") == code


async def test_financial_summary_without_a_tenant_role_is_strawberrys_error(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, world: World
) -> None:
    staff = await world.staff()
    variables = {"r": {"start": "2024-01-01", "end": "2024-02-01"}, "g": "MONTH"}
    fast, outcome, slow = await _both(client, monkeypatch, SUMMARY, variables, world.headers(staff))
    assert outcome == "fallback"
    assert fast.json() == slow.json()
    assert fast.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
