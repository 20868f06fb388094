"""Bounded input and typed errors: whatever a client sends, the answer is a GraphQL-over-HTTP
compliant status and an error with ``extensions.code``, never a 5xx, an INTERNAL error or a
value PostgreSQL cannot take (infinity, NUL, a decimal wider than its column).

The extreme values the issue found (year 1 turning into ``-infinity``, dates past year
9999, ``1E+999999999999``, NUL in claims, headers, search text, names and emails, cursors
with non-ASCII text, bodies that are not a JSON object, subscriptions over POST, several
operations without a name) each have a test here; ``test_input_fuzz`` sends generated
input of every kind over HTTP and a real WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.conftest import World
from tests.test_ingest import envelope, financial, token_for
from tests.test_security_probes import lead, post
from tests.test_subscriptions import receive, ws_url
from zixly.container import Services
from zixly.core.bounds import MAX_DATE, MIN_DATE
from zixly.graphql.http_requests import GRAPHQL_RESPONSE, MAX_JSON_DEPTH

ME = "{ me { email } }"
FINANCIALS = "query($r: DateRangeInput!) { financials(range: $r) { nodes { id } } }"
CASH_FLOW = "query($r: DateRangeInput!) { cashFlow(range: $r) { cashBalance } }"
RECORD_METRIC = """
mutation($i: RecordCustomMetricInput!) {
  recordCustomMetric(input: $i) { value recordDate }
}"""
CLIENTS = "query($s: String, $a: String) { clients(search: $s, after: $a) { nodes { id } } }"
UPSERT = "mutation($i: UpsertClientInput!) { upsertClient(input: $i) { id } }"
INVITE = "mutation($e: String!) { inviteUser(email: $e, role: VIEWER) { id } }"


async def raw(
    client: httpx.AsyncClient,
    body: bytes,
    headers: dict[str, str] | None = None,
    accept: str | None = None,
) -> httpx.Response:
    sent = {"Content-Type": "application/json", **(headers or {})}
    if accept is not None:
        sent["Accept"] = accept
    return await client.post("/graphql", content=body, headers=sent)


async def ask(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    accept: str | None = None,
) -> httpx.Response:
    """JSON with ASCII escapes, so NUL and lone surrogates travel as a client sends them."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    return await raw(client, body, headers, accept)


def the_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body.get("data") is None, body
    (error,) = body["errors"]
    assert isinstance(error, dict)
    return error


def codes(response: httpx.Response) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in response.json()["errors"]]


# --- the request itself ---------------------------------------------------------------------

NOT_ONE_OBJECT = {
    "null": b"null",
    "a string": b'"{ me { email } }"',
    "a number": b"1",
    "true": b"true",
    "a batch": b'[{"query": "{ me { email } }"}]',
    "invalid UTF-8": b'{"query": "{ me { email } }", "x": "\xff\xfe"}',
    "invalid JSON": b'{"query": ',
    "nested too deep": b'{"query": "{ me { email } }", "variables": {"x": '
    + b"[" * 5000
    + b"]" * 5000
    + b"}}",
    "nested past the limit": b'{"query": "{ me { email } }", "extensions": '
    + b"[" * MAX_JSON_DEPTH
    + b"]" * MAX_JSON_DEPTH
    + b"}",
    "query not a string": b'{"query": 1}',
    "variables not an object": b'{"query": "{ me { email } }", "variables": [7]}',
    "operationName not a string": b'{"query": "{ me { email } }", "operationName": 5}',
    "no query": b"{}",
}


@pytest.mark.parametrize("accept", [None, GRAPHQL_RESPONSE])
async def test_a_body_that_is_not_one_well_formed_request_is_a_typed_400(
    client: httpx.AsyncClient, world: World, accept: str | None
) -> None:
    tenant = await world.tenant("bounds-body", clients=0)
    for name, body in NOT_ONE_OBJECT.items():
        response = await raw(client, body, world.headers(tenant.viewer), accept)
        assert response.status_code == 400, (name, response.text)
        error = the_error(response)
        assert error["extensions"]["code"] == "BAD_REQUEST", name
        assert error["extensions"]["requestId"] == response.headers["x-request-id"], name
        assert len(response.content) < 500, name  # nothing of the body is echoed back


async def test_validation_errors_carry_a_code_and_statuses_follow_the_accept_header(
    client: httpx.AsyncClient, world: World
) -> None:
    tenant = await world.tenant("bounds-codes", clients=1)
    headers = world.headers(tenant.viewer)
    cases = [
        ("{", None, "GRAPHQL_PARSE_FAILED"),
        ("{ nope }", None, "GRAPHQL_VALIDATION_FAILED"),
        ("{}", None, "GRAPHQL_VALIDATION_FAILED"),  # the depth limit raised ValueError
        ("{ me {} }", None, "GRAPHQL_VALIDATION_FAILED"),
        ('{ clients(first: "x") { nodes { id } } }', None, "GRAPHQL_VALIDATION_FAILED"),
        ("query($x: Int) { me { email } }", None, "GRAPHQL_VALIDATION_FAILED"),  # unused
        ("{ " + "me { " * 20 + "}" * 20 + " }", None, "GRAPHQL_VALIDATION_FAILED"),  # depth
        (FINANCIALS, {"r": {"start": 5, "end": "2024-01-01"}}, "BAD_USER_INPUT"),
        (FINANCIALS, {"r": {"start": "2024-02-30", "end": "2024-03-01"}}, "BAD_USER_INPUT"),
        (FINANCIALS, {}, "BAD_USER_INPUT"),  # a required variable missing
    ]
    for query, variables, code in cases:
        # application/json (and no Accept at all): 200, as the specification recommends.
        response = await ask(client, query, variables, headers)
        assert response.status_code == 200, (query[:40], response.text)
        assert response.headers["content-type"] == "application/json"
        assert codes(response)[0] == code, (query[:40], response.text)
        assert response.json()["data"] is None
        # application/graphql-response+json: a request error is a 400, without data.
        response = await ask(client, query, variables, headers, accept=GRAPHQL_RESPONSE)
        assert response.status_code == 400, (query[:40], response.text)
        assert response.headers["content-type"] == GRAPHQL_RESPONSE
        assert "data" not in response.json()
        assert codes(response)[0] == code
    # Coercion errors name the variable's field.
    response = await ask(client, FINANCIALS, {"r": {"start": 5, "end": "2024-01-01"}}, headers)
    assert the_error(response)["extensions"]["field"] == "start"
    query = "query($f: Int) { clients(first: $f) { nodes { id } } }"
    response = await ask(client, query, {"f": "ten"}, headers)
    assert the_error(response)["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}
    # A successful answer is a 200 in either media type, compiled or not.
    for query in ("{ clients { nodes { id } } }", ME):
        response = await ask(client, query, None, headers, accept=GRAPHQL_RESPONSE)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == GRAPHQL_RESPONSE
        assert response.json()["data"]
    # A field error (execution ran) stays a 200 with data null in either media type.
    response = await ask(client, '{ client(id: "nope") { id } }', None, headers, GRAPHQL_RESPONSE)
    assert response.status_code == 200
    assert codes(response) == ["VALIDATION_ERROR"]


async def test_several_operations_need_an_operation_name(
    client: httpx.AsyncClient, world: World
) -> None:
    tenant = await world.tenant("bounds-ops", clients=0)
    headers = world.headers(tenant.viewer)
    document = "query A { me { email } } query B { me { role } }"
    for accept, status in ((None, 200), (GRAPHQL_RESPONSE, 400)):
        response = await ask(client, document, None, headers, accept)
        assert response.status_code == status, response.text
        assert codes(response) == ["BAD_REQUEST"]
        assert "operationName" in the_error(response)["message"]
    body = json.dumps({"query": document, "operationName": "B"}).encode()
    response = await raw(client, body, headers)
    assert response.json() == {"data": {"me": {"role": "VIEWER"}}}


async def test_a_subscription_over_http_is_refused_with_a_code(
    client: httpx.AsyncClient, world: World
) -> None:
    tenant = await world.tenant("bounds-sub", clients=0)
    headers = world.headers(tenant.viewer)
    for accept, status in ((None, 200), (GRAPHQL_RESPONSE, 400)):
        response = await ask(
            client, "subscription { syncEvents { status } }", None, headers, accept
        )
        assert response.status_code == status, response.text
        error = the_error(response)
        assert error["extensions"]["code"] == "BAD_REQUEST"
        assert "WebSocket" in error["message"]


# --- dates and decimals ---------------------------------------------------------------------


@pytest.mark.parametrize("day", ["0001-01-01", "1899-12-31", "2201-01-01", "9999-12-31"])
async def test_dates_outside_the_documented_range_are_refused_at_once(
    client: httpx.AsyncClient, world: World, day: str
) -> None:
    """Year 1 reached PostgreSQL as -infinity and the month series ran until the statement
    timeout; year 9999 overflowed the range arithmetic."""
    tenant = await world.tenant("bounds-date", clients=1)
    headers = world.headers(tenant.viewer)
    started = time.perf_counter()
    for query in (FINANCIALS, CASH_FLOW):
        response = await ask(client, query, {"r": {"start": day, "end": day}}, headers)
        errors = response.json()["errors"]
        assert [e["extensions"]["code"] for e in errors] == ["VALIDATION_ERROR"] * 2, errors
        assert [e["extensions"]["field"] for e in errors] == ["start", "end"]
        assert f"between {MIN_DATE} and {MAX_DATE}" in errors[0]["message"]
    inline = f'{{ cashFlow(range: {{start: "{day}", end: "2024-01-01"}}) {{ cashBalance }} }}'
    error = the_error(await ask(client, inline, None, headers))
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert error["extensions"]["field"] == "start"
    # The CSV export takes its range through the same check.
    response = await client.get(
        "/export/financials.csv", params={"start": day, "end": day}, headers=headers
    )
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["extensions"]["field"] == "range"
    assert time.perf_counter() - started < 2


async def test_the_ends_of_the_documented_range_are_accepted(
    client: httpx.AsyncClient, world: World
) -> None:
    tenant = await world.tenant("bounds-edge", clients=1)
    headers = world.headers(tenant.viewer)
    for day in (MIN_DATE.isoformat(), MAX_DATE.isoformat()):
        for query in (FINANCIALS, CASH_FLOW):
            body = (await ask(client, query, {"r": {"start": day, "end": day}}, headers)).json()
            assert "errors" not in body, (day, body)


def metric_input(client_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
    value = {
        "clientId": str(client_id),
        "metricName": "bounds",
        "value": "1",
        "recordDate": "2026-01-01T00:00:00Z",
    }
    return value | changes


async def test_instants_outside_the_range_are_never_stored_as_infinity(
    client: httpx.AsyncClient, owner: asyncpg.Connection, world: World
) -> None:
    tenant = await world.tenant("bounds-instant", clients=1)
    headers = world.headers(tenant.editor)
    for instant in (
        "0001-01-01T00:00:00",  # asyncpg writes datetime.min as -infinity
        "0001-01-01T00:00:00+00:00",
        "9999-12-31T23:59:59-05:00",  # year 10000 in UTC
        "9999-12-31T23:59:59.999999",  # datetime.max: infinity
        "1899-12-31T23:59:59Z",
        "2201-01-01T00:00:00Z",
    ):
        variables = {"i": metric_input(tenant.client_ids[0], recordDate=instant)}
        error = the_error(await ask(client, RECORD_METRIC, variables, headers))
        assert error["extensions"] == {"code": "VALIDATION_ERROR", "field": "recordDate"}, instant
    stored = await owner.fetchval(
        "SELECT count(*) FROM custom_metrics WHERE tenant_id = $1", tenant.id
    )
    assert stored == 0
    variables = {"i": metric_input(tenant.client_ids[0], recordDate="2200-12-31T23:59:59Z")}
    body = (await ask(client, RECORD_METRIC, variables, headers)).json()
    assert body["data"]["recordCustomMetric"]["recordDate"] == "2200-12-31T23:59:59+00:00"


async def test_decimals_are_bounded_by_their_column(
    client: httpx.AsyncClient, owner: asyncpg.Connection, world: World
) -> None:
    """custom_metrics.metric_value is NUMERIC(14,4)."""
    tenant = await world.tenant("bounds-decimal", clients=1)
    headers = world.headers(tenant.editor)
    refused = {
        "1E+999999999999": "value",  # overflowed abs() in the decimal context: INTERNAL
        "-1E+999999999999": "value",
        "1E-999999999999": "value",
        "NaN": "value",
        "sNaN": "value",
        "Infinity": "value",
        "1" * 41: "value",
        "0." + "0" * 60 + "1": "value",
        "1.00001": "value",  # five places: PostgreSQL would round it silently
        "10000000000": "value",  # 10^10: the column has 10 digits before the point
        "-10000000000.0000": "value",
    }
    for value, field in refused.items():
        variables = {"i": metric_input(tenant.client_ids[0], value=value)}
        error = the_error(await ask(client, RECORD_METRIC, variables, headers))
        assert error["extensions"]["code"] == "VALIDATION_ERROR", (value, error)
        assert error["extensions"]["field"] == field, (value, error)
    assert (
        await owner.fetchval("SELECT count(*) FROM custom_metrics WHERE tenant_id = $1", tenant.id)
        == 0
    )
    for value, stored in (
        ("9999999999.9999", "9999999999.9999"),
        ("1.10000", "1.1000"),
        (2, "2.0000"),
    ):
        variables = {"i": metric_input(tenant.client_ids[0], value=value)}
        body = (await ask(client, RECORD_METRIC, variables, headers)).json()
        assert body["data"]["recordCustomMetric"]["value"] == stored, body


async def test_ingest_takes_the_same_documented_range(
    client: httpx.AsyncClient, world: World, services: Services
) -> None:
    """A guard for the shared bounds (ingest checked years 1900 to 2200 before)."""
    tenant = await world.tenant("bounds-ingest", clients=1)
    token = await token_for(services, tenant.id)
    records = [financial(0, record_date=MIN_DATE.isoformat())]
    records.append(financial(1, record_date=MAX_DATE.isoformat()))
    assert (await post(client, "financials", token, envelope(records))).status_code == 200
    for day in ("1899-12-31", "2201-01-01"):
        response = await post(
            client, "financials", token, envelope([financial(0, record_date=day)])
        )
        assert response.status_code == 422
        assert (
            response.json()["errors"][0]["message"]
            == f"must be a date between {MIN_DATE} and {MAX_DATE}"
        )
    for instant in ("2201-01-01T00:00:00Z", "1899-12-31T23:59:59+00:00"):
        response = await post(client, "lead-events", token, envelope([lead(0, event_date=instant)]))
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "event_date"


# --- text PostgreSQL cannot store -----------------------------------------------------------


async def test_nul_and_lone_surrogates_are_refused_in_every_argument(
    client: httpx.AsyncClient, owner: asyncpg.Connection, world: World
) -> None:
    tenant = await world.tenant("bounds-nul", clients=1)
    admin = world.headers(tenant.admin)
    cases = [
        (CLIENTS, {"s": "a\x00b"}, "search"),
        (CLIENTS, {"s": "caf\udce9"}, "search"),
        (UPSERT, {"i": {"clientId": "C-\x00", "name": "n"}}, "clientId"),
        (UPSERT, {"i": {"clientId": "C-9", "name": "N\x00"}}, "name"),
        (UPSERT, {"i": {"clientId": "C-9", "name": "N", "industry": "\ud800"}}, "industry"),
        (INVITE, {"e": "someone\x00@example.com"}, "email"),
        ('{ clients(search: "a\\u0000b") { nodes { id } } }', None, "search"),  # a literal
        ('mutation { upsertClient(input: {clientId: "x", name: "\\u0000"}) { id } }', None, "name"),
        (
            "mutation($b: JSON!) { importWorkflows(bundle: $b) { ok } }",
            {"b": {"workflows": [{"name": "w\x00"}]}},
            "name",
        ),
    ]
    for query, variables, field in cases:
        error = the_error(await ask(client, query, variables, admin))
        assert error["extensions"] == {"code": "VALIDATION_ERROR", "field": field}, (field, error)
    assert (
        await owner.fetchval("SELECT count(*) FROM client_kpis WHERE tenant_id = $1", tenant.id)
        == 1
    )


async def test_cursors_with_non_ascii_text_are_malformed_not_a_crash(
    client: httpx.AsyncClient, world: World
) -> None:
    tenant = await world.tenant("bounds-cursor", clients=1)
    for cursor in ("é.é", "ü" * 20 + ".abc", "abc.\u00ff", "\u2028.x"):
        error = the_error(await ask(client, CLIENTS, {"a": cursor}, world.headers(tenant.viewer)))
        assert error["message"] == "malformed or foreign cursor"
        assert error["extensions"] == {"code": "VALIDATION_ERROR", "field": "after"}


async def test_nul_in_token_claims_or_the_tenant_header_is_a_typed_4xx(
    client: httpx.AsyncClient, world: World
) -> None:
    """Both reached the authentication look-up, where PostgreSQL refused the text (a 500)."""
    tenant = await world.tenant("bounds-claims", clients=0)
    for headers in (
        world.headers(tenant.viewer + "\x00"),
        world.headers("x\x00@example.com"),
        world.headers(tenant.viewer, tenant=tenant.slug + "\x00"),
        world.headers(tenant.viewer, tenant="\x00"),
    ):
        response = await ask(client, ME, None, headers)
        assert response.status_code == 401, response.text
        assert codes(response) == ["UNAUTHENTICATED"]
    headers = {**world.headers(tenant.viewer), "X-Zixly-Tenant": tenant.slug + "\x00"}
    response = await ask(client, ME, None, headers)
    assert response.status_code == 400, response.text
    assert the_error(response)["extensions"]["code"] == "BAD_REQUEST"
    assert the_error(response)["extensions"]["field"] == "X-Zixly-Tenant"


async def test_nul_in_the_websocket_tenant_header_or_claims_is_refused(
    live_server: str, world: World
) -> None:
    """The WebSocket takes its tenant from connection_init's JSON payload: a NUL there reached
    the authentication look-up (an error of PostgreSQL's, and a broken socket)."""
    tenant = await world.tenant("bounds-ws", clients=0)
    payloads = [
        {**world.headers(tenant.viewer), "X-Zixly-Tenant": tenant.slug + "\x00"},
        {**world.headers(tenant.viewer), "x-zixly-tenant": "\ud800"},
        world.headers(tenant.viewer, tenant="t\x00"),
        world.headers(tenant.viewer + "\x00"),
    ]
    for payload in payloads:
        async with connect(
            ws_url(live_server), subprotocols=[Subprotocol("graphql-transport-ws")]
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4403, closed.value.rcvd
    # The same socket with a clean payload works.
    async with connect(
        ws_url(live_server), subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        payload = {**world.headers(tenant.viewer), "X-Zixly-Tenant": tenant.slug}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        assert (await receive(ws))["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": ME}}))
        message = await receive(ws)
        assert message["payload"] == {"data": {"me": {"email": tenant.viewer}}}


async def test_websocket_messages_that_are_not_json_objects_close_the_socket_with_4400(
    live_server: str, world: World
) -> None:
    """A message of null, a list or a number crashed the protocol handler (no close frame),
    and so did JSON nested deeper than Python's parser recurses."""
    tenant = await world.tenant("bounds-ws-msg", clients=0)
    subscribe = {"type": "subscribe", "payload": {"query": ME}}
    for message in (
        "null",
        "[]",
        "7",
        '"subscribe"',
        "[" * 5000 + "]" * 5000,
        json.dumps({**subscribe, "id": ["1"]}),
        json.dumps({**subscribe, "id": "1", "payload": 5}),
        json.dumps({**subscribe, "id": "1", "payload": {"query": ME, "variables": [1]}}),
    ):
        async with connect(
            ws_url(live_server), subprotocols=[Subprotocol("graphql-transport-ws")]
        ) as ws:
            payload = world.headers(tenant.viewer)
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            assert (await receive(ws))["type"] == "connection_ack"
            await ws.send(message)
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
        assert closed.value.rcvd is not None, message[:20]
        assert closed.value.rcvd.code == 4400, (message[:20], closed.value.rcvd)


async def test_a_deeply_nested_document_is_a_parse_or_validation_error(
    client: httpx.AsyncClient, world: World
) -> None:
    tenant = await world.tenant("bounds-deep", clients=0)
    for document in (
        "{ me " + "{ tenant " * 600 + "}" * 600 + " }",
        "query($x: [[Int]]) { me { email } }".replace("[[Int]]", "[" * 500 + "Int" + "]" * 500),
        '{ clients(search: "' + "\\u0000" * 10 + '") { nodes { id } } }',
    ):
        response = await ask(client, document, None, world.headers(tenant.viewer))
        assert response.status_code == 200, response.text
        assert codes(response)[0] in {
            "GRAPHQL_PARSE_FAILED",
            "GRAPHQL_VALIDATION_FAILED",
            "VALIDATION_ERROR",
        }, response.text
    await asyncio.sleep(0)
