"""Fuzzing the GraphQL endpoint over HTTP and a real WebSocket: no input from a client may
produce a 5xx, an ``INTERNAL`` error, an error without ``extensions.code`` or a traceback.

Inputs are generated with Hypothesis: operations on every root field of the real schema
with extreme argument values passed as variables (huge and negative integers, floats,
NaN-ish and exponent strings, long text, NUL, lone surrogates, dates from year 1 to 9999,
decimals wider than any column, malformed ids and cursors), documents from
hypothesis-graphql (valid ones and, in its negative mode, invalid ones), raw bodies (bytes,
any JSON), and headers (tokens valid and not, tenant headers, Accept). Over the WebSocket
the same operations are subscribed on one graphql-transport-ws connection, and
connection_init payloads and raw messages are fuzzed on connections of their own.

Bounded for CI: ``ZIXLY_FUZZ_SCALE`` (default 1) multiplies the example counts; each test
prints how many inputs it sent (visible without ``-s``). Schemathesis is not used: its
GraphQL mode runs hypothesis-graphql (used here directly) through its own synchronous
runner, whose ASGI transport drives the app on an event loop of its own, away from the
session's asyncpg pool and Redis client.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis_graphql
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    get_named_type,
    is_leaf_type,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import nodes
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.conftest import World, make_settings, other_app, served
from tests.test_subscriptions import ws_url
from zixly.container import Services
from zixly.core.settings import Settings
from zixly.embedded.stack import Endpoints
from zixly.graphql.schema import build_schema

SCALE = float(os.environ.get("ZIXLY_FUZZ_SCALE", "1"))
HTTP_EXAMPLES = int(600 * SCALE)
WS_OPERATIONS = int(200 * SCALE)
WS_CONNECTIONS = int(40 * SCALE)
SCHEMA = build_schema(Settings())._schema
SDL = build_schema(Settings()).as_str()
# Close codes a graphql-transport-ws server uses for a client's fault: 4400 invalid
# message, 4401 subscribe before the acknowledgement, 4403 bad credentials, 4408 init
# timeout, 4409 duplicate id, 4429 too many init requests; 1013 a rate limit (the fuzzer's
# bad tokens lock its address out); 1000 normal (docs/graphql-over-http.md).
CLIENT_CLOSE_CODES = {1000, 1013, 4400, 4401, 4403, 4408, 4409, 4429}

# --- values -----------------------------------------------------------------------------------

NASTY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\x00" * 50,
    "é" * 300,
    "x" * 5000,
    "NaN",
    "-Infinity",
    "1E+999999999999",
    "0x10",
    "' OR 1=1 --",
    "{}",
    "\u2028\u2029",
    "\x1b[31m",
    "🍰" * 10,
    "a.b",
    "é.é",
    "eyJ9.eyJ9.x",
]
ODD_DATES = [
    "0001-01-01",
    "1899-12-31",
    "1900-01-01",
    "2024-02-29",
    "2024-02-30",
    "2200-12-31",
    "2201-01-01",
    "9999-12-31",
    "10000-01-01",
    "2024-1-1",
    "20240101",
    "2024-W01-1",
    "",
]
ODD_INSTANTS = [
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59.999999",
    "9999-12-31T23:00:00-10:00",
    "1899-12-31T23:59:59Z",
    "2200-12-31T23:59:59Z",
    "2026-03-01T09:30:00+25:00",
    "2026-03-01T24:00:00Z",
    "2026-03-01",
    "2026-03-01T09:30:00",
]
ODD_DECIMALS = [
    "1E+999999999999",
    "-1E+999999999999",
    "1E-999999999999",
    "NaN",
    "sNaN",
    "-Infinity",
    "9999999999.9999",
    "10000000000",
    "1.00001",
    "1" * 100,
    "0." + "0" * 100 + "1",
    "1_000",
    "--1",
]
BIG_INTS = [2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, 10**30, -(10**30), 0, -1]

text = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=50))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
ids = st.one_of(st.uuids().map(str), text, st.integers())


def scalar(type_: GraphQLScalarType) -> st.SearchStrategy[Any]:
    by_name: dict[str, st.SearchStrategy[Any]] = {
        "Int": st.one_of(st.sampled_from(BIG_INTS), st.integers(), st.floats(), text),
        "Float": st.one_of(st.floats(), st.sampled_from(BIG_INTS), text),
        "String": text,
        "Boolean": st.one_of(st.booleans(), text, st.integers()),
        "ID": ids,
        "Date": st.one_of(st.sampled_from(ODD_DATES), st.dates().map(str), text),
        "DateTime": st.one_of(st.sampled_from(ODD_INSTANTS), st.datetimes().map(str), text),
        "Decimal": st.one_of(
            st.sampled_from(ODD_DECIMALS), st.decimals().map(str), st.integers(), st.floats()
        ),
        "JSON": json_values,
    }
    return by_name.get(type_.name, json_values)


def values(type_: GraphQLInputType) -> st.SearchStrategy[Any]:
    """Mostly values of the right shape with extreme leaves; sometimes anything at all."""
    if isinstance(type_, GraphQLNonNull):
        return values(type_.of_type)
    if isinstance(type_, GraphQLList):
        inner = values(type_.of_type)
        return st.one_of(st.lists(inner, max_size=3), inner)
    if isinstance(type_, GraphQLEnumType):
        return st.one_of(st.sampled_from([*type_.values, "NOPE", "admin"]), text)
    if isinstance(type_, GraphQLInputObjectType):
        fields = {name: values(field.type) for name, field in type_.fields.items()}
        shaped = st.fixed_dictionaries({}, optional={**fields, "unknownField": json_values})
        return st.one_of(shaped, shaped, json_values)
    assert isinstance(type_, GraphQLScalarType)
    return st.one_of(scalar(type_), scalar(type_), scalar(type_), st.none())


def selection(field: GraphQLField) -> str:
    named = get_named_type(field.type)
    return "" if is_leaf_type(named) else " { __typename }"


@st.composite
def operations(draw: st.DrawFn, roots: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """One operation on a real root field, its arguments all passed as variables."""
    root = draw(st.sampled_from(roots))
    type_ = SCHEMA.get_type(root)
    assert type_ is not None
    fields = type_.fields  # type: ignore[attr-defined]
    name = draw(st.sampled_from(sorted(fields)))
    field = fields[name]
    definitions, arguments, variables = [], [], {}
    for n, (argument, spec) in enumerate(field.args.items()):
        if draw(st.integers(0, 9)) == 0:
            continue  # sometimes an argument (even a required one) is left out
        definitions.append(f"$v{n}: {spec.type}")
        arguments.append(f"{argument}: $v{n}")
        variables[f"v{n}"] = draw(values(spec.type))
    keyword = root.lower()
    head = f"{keyword}({', '.join(definitions)})" if definitions else keyword
    call = f"{name}({', '.join(arguments)})" if arguments else name
    return f"{head} {{ {call}{selection(field)} }}", variables


CUSTOM_SCALARS = {
    "Date": st.sampled_from(ODD_DATES).map(nodes.String),
    "DateTime": st.sampled_from(ODD_INSTANTS).map(nodes.String),
    "Decimal": st.sampled_from(ODD_DECIMALS).map(nodes.String),
    "JSON": st.one_of(st.text(max_size=20).map(nodes.String), st.integers().map(nodes.Int)),
}
documents = st.one_of(
    hypothesis_graphql.from_schema(SDL, custom_scalars=CUSTOM_SCALARS),
    hypothesis_graphql.from_schema(
        SDL, custom_scalars=CUSTOM_SCALARS, mode=hypothesis_graphql.Mode.NEGATIVE
    ),
)


def as_body(operation: tuple[str, dict[str, Any]]) -> bytes:
    query, variables = operation
    # ASCII escapes: NUL and lone surrogates travel as a client sends them.
    return json.dumps({"query": query, "variables": variables}).encode()


bodies = st.one_of(
    operations(("Query", "Mutation")).map(as_body),
    operations(("Query", "Mutation")).map(as_body),
    operations(("Subscription",)).map(as_body),
    documents.map(lambda document: json.dumps({"query": document}).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "query": st.one_of(text, json_values),
            "variables": json_values,
            "operationName": st.one_of(text, json_values),
            "extensions": json_values,
        },
    ).map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=300),
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


def collect(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` examples of ``strategy`` (generated up front: the requests are async)."""
    found: list[Any] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        derandomize=os.environ.get("CI") == "true",
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def gather(example: Any) -> None:
        found.append(example)

    gather()
    return found[:count]


# --- checks -------------------------------------------------------------------------------------


def storable_utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_errors(errors: Any, where: str) -> list[str]:
    assert isinstance(errors, list), where
    found = []
    for error in errors:
        code = (error.get("extensions") or {}).get("code")
        assert code is not None, (where, error)
        assert code != "INTERNAL", (where, error)
        found.append(str(code))
    return found


def check_response(response: httpx.Response, where: str) -> list[str]:
    assert response.status_code < 500, (where, response.status_code, response.text[:500])
    assert "Traceback" not in response.text, where
    assert response.headers["content-type"].startswith("application/"), where
    body = response.json()
    if response.status_code >= 400:
        assert "errors" in body, where
    return check_errors(body.get("errors", []), where)


@pytest.fixture(scope="module")
async def fuzzed(
    endpoints: Endpoints, data_dir: Path
) -> AsyncIterator[tuple[Services, httpx.AsyncClient, str]]:
    """The app on a Redis database of its own and from an address of its own, served over
    HTTP in-process and over a real uvicorn: bad tokens lock out this address (the
    per-address limit works), and no other test's."""
    settings = make_settings(data_dir)
    redis_url = f"{endpoints.redis_url}?db=9"
    async with other_app(endpoints, settings, redis_url=redis_url, address="192.0.2.99") as (
        built,
        client,
    ):
        await built.redis.flushdb()
        async with served(built) as url:
            yield built, client, url
        await built.redis.flushdb()


async def unblock(services: Services) -> None:
    """Forget failed authentications, so the fuzzer's own bad tokens do not turn every
    later input into a 429."""
    await services.redis.flushdb()


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}")


# --- HTTP -----------------------------------------------------------------------------------------


async def test_no_http_input_gets_a_5xx_or_an_internal_error(
    fuzzed: tuple[Services, httpx.AsyncClient, str],
    world: World,
    capsys: pytest.CaptureFixture[str],
) -> None:
    services, client, _ = fuzzed
    tenant = await world.tenant("fuzz-http", clients=2)
    other = await world.tenant("fuzz-other", clients=0)
    tokens = {
        "admin": world.headers(tenant.admin),
        "viewer": world.headers(tenant.viewer),
        "other tenant": world.headers(tenant.admin, tenant=other.slug),
    }
    # Claims JSON can carry (a token with a lone surrogate cannot even be encoded).
    claim_text = st.one_of(
        st.sampled_from([t for t in NASTY_TEXT if storable_utf8(t)]),
        st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    )
    # Lifetimes that minting accepts (over-long or expired tokens: tests/test_edges.py).
    lifetimes = st.sampled_from([None, 1, 60, 86_400])
    emails = [tenant.admin, tenant.viewer, "nobody@example.com"]
    headers = st.fixed_dictionaries(
        {
            "auth": st.one_of(
                *[st.just(tokens["admin"])] * 6,
                st.sampled_from(list(tokens.values())),
                # Tokens correctly signed, with odd claims: any email, tenant and lifetime.
                st.tuples(claim_text, st.one_of(st.none(), claim_text), lifetimes).map(
                    lambda claims: world.headers(claims[0], tenant=claims[1], ttl_seconds=claims[2])
                ),
                st.tuples(st.sampled_from(emails), claim_text).map(
                    lambda claims: world.headers(claims[0], tenant=claims[1])
                ),
                header_text.map(lambda t: {"Authorization": t}),
                header_text.map(lambda t: {"Authorization": f"Bearer {t}"}),
                st.just({}),
            ),
            "tenant": st.one_of(
                st.just({}),
                st.just({}),
                st.sampled_from([tenant.slug, other.slug, str(tenant.id)]).map(
                    lambda t: {"X-Zixly-Tenant": t}
                ),
                header_text.map(lambda t: {"X-Zixly-Tenant": t}),
            ),
            "accept": st.sampled_from(
                [
                    {},
                    {"Accept": "application/json"},
                    {"Accept": "application/graphql-response+json"},
                    {"Accept": "application/graphql-response+json, application/json;q=0.9"},
                    {"Accept": "*/*"},
                    {"Accept": "text/html"},
                ]
            ),
            "type": st.sampled_from(
                [
                    {"Content-Type": "application/json"},
                    {"Content-Type": "application/json"},
                    {"Content-Type": "text/plain"},
                    {"Content-Type": "application/json; charset=latin-1"},
                    {},
                ]
            ),
        }
    )
    examples = collect(st.tuples(bodies, headers), HTTP_EXAMPLES)
    seen: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for n, (body, parts) in enumerate(examples):
        if n % 20 == 0:
            await unblock(services)
        sent = {k: v for part in parts.values() for k, v in part.items()}
        response = await client.post("/graphql", content=body, headers=sent)
        where = f"POST {body[:300]!r} {sent}"
        seen.update(check_response(response, where))
        statuses[response.status_code] += 1
    assert sum(statuses.values()) == len(examples) == HTTP_EXAMPLES
    report(
        capsys,
        f"fuzz over HTTP: {len(examples)} inputs, statuses {dict(sorted(statuses.items()))}, "
        f"error codes {dict(seen.most_common())}",
    )


# --- WebSocket -----------------------------------------------------------------------------------


async def receive_for(ws: ClientConnection, operation_id: str, wait: float) -> list[dict]:
    """The messages for ``operation_id`` up to its complete or error (or the timeout)."""
    messages: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(wait):
            while True:
                raw = await ws.recv()
                assert "Traceback" not in str(raw)
                message = json.loads(raw)
                if message.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                    continue
                if message.get("id") != operation_id:
                    continue
                messages.append(message)
                if message["type"] in ("complete", "error"):
                    return messages
    except TimeoutError:
        return messages


class Socket:
    """A graphql-transport-ws connection that is opened again when the server closes it."""

    def __init__(self, url: str, payload: dict[str, Any]) -> None:
        self.url = url
        self.payload = payload
        self.ws: ClientConnection | None = None
        self.closes: Counter[int] = Counter()

    async def open(self) -> ClientConnection:
        if self.ws is None:
            self.ws = await connect(self.url, subprotocols=[Subprotocol("graphql-transport-ws")])
            await self.ws.send(json.dumps({"type": "connection_init", "payload": self.payload}))
            async with asyncio.timeout(5):
                assert json.loads(await self.ws.recv())["type"] == "connection_ack"
        return self.ws

    def closed(self, error: ConnectionClosed, where: str) -> None:
        code = error.rcvd.code if error.rcvd else -1
        assert code in CLIENT_CLOSE_CODES, (where, code, error)
        self.closes[code] += 1
        self.ws = None

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def test_no_websocket_operation_gets_an_internal_error_or_a_broken_socket(
    fuzzed: tuple[Services, httpx.AsyncClient, str],
    world: World,
    capsys: pytest.CaptureFixture[str],
) -> None:
    services, _, url = fuzzed
    await unblock(services)
    tenant = await world.tenant("fuzz-ws", clients=2)
    socket = Socket(ws_url(url), world.headers(tenant.admin))
    examples = collect(
        st.one_of(
            operations(("Query", "Mutation", "Subscription")),
            documents.map(lambda document: (document, {})),
        ),
        WS_OPERATIONS,
    )
    seen: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    try:
        for n, (query, variables) in enumerate(examples):
            where = f"subscribe {query[:300]!r} {json.dumps(variables)[:300]}"
            operation_id = f"op-{n}"
            try:
                ws = await socket.open()
                await ws.send(
                    json.dumps(
                        {
                            "id": operation_id,
                            "type": "subscribe",
                            "payload": {"query": query, "variables": variables},
                        }
                    )
                )
                messages = await receive_for(ws, operation_id, wait=2.0)
                if not messages or messages[-1]["type"] == "next":  # a live subscription
                    await ws.send(json.dumps({"id": operation_id, "type": "complete"}))
            except ConnectionClosed as closed:
                socket.closed(closed, where)
                kinds["closed"] += 1
                continue
            for message in messages:
                kinds[message["type"]] += 1
                if message["type"] == "error":
                    seen.update(check_errors(message["payload"], where))
                elif message["type"] == "next":
                    seen.update(check_errors(message["payload"].get("errors", []), where))
    finally:
        await socket.close()
    report(
        capsys,
        f"fuzz over WebSocket: {len(examples)} operations on one connection, messages "
        f"{dict(kinds)}, closes {dict(socket.closes)}, error codes {dict(seen.most_common())}",
    )


async def test_no_websocket_handshake_or_message_breaks_the_server(
    fuzzed: tuple[Services, httpx.AsyncClient, str],
    world: World,
    capsys: pytest.CaptureFixture[str],
) -> None:
    services, _, url = fuzzed
    tenant = await world.tenant("fuzz-init", clients=0)
    token = world.headers(tenant.viewer)["Authorization"]
    valid = {"Authorization": token}
    payloads = st.one_of(
        *[st.just(valid)] * 6,
        st.just({**valid, "X-Zixly-Tenant": tenant.slug}),
        st.fixed_dictionaries(
            {},
            optional={
                "Authorization": st.one_of(st.just(token), text, json_values),
                "X-Zixly-Tenant": st.one_of(st.just(tenant.slug), text, json_values),
                "x-zixly-tenant": text,
            },
        ),
        json_values,
    )
    messages = st.one_of(
        json_values.map(json.dumps),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["subscribe", "next", "complete", "ping", "pong", "x"])},
            optional={"id": st.one_of(text, json_values), "payload": json_values},
        ).map(json.dumps),
        st.binary(max_size=100),
        text.filter(storable_utf8),  # a text frame is UTF-8: a lone surrogate cannot be sent
    )
    examples = collect(st.tuples(payloads, messages), WS_CONNECTIONS)
    outcomes: Counter[str] = Counter()
    for n, (payload, message) in enumerate(examples):
        stage = "init"
        if n % 10 == 0:
            await unblock(services)
        where = f"init {payload!r} then {message!r}"[:600]
        try:
            async with connect(
                ws_url(url), subprotocols=[Subprotocol("graphql-transport-ws")]
            ) as ws:
                await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
                async with asyncio.timeout(5):
                    first = json.loads(await ws.recv())
                assert first["type"] == "connection_ack", (where, first)
                stage = "message"
                await ws.send(message)
                async with asyncio.timeout(2):
                    answer = await ws.recv()
                assert "Traceback" not in str(answer), where
                parsed = json.loads(answer)
                if parsed.get("type") == "error":
                    check_errors(parsed["payload"], where)
                outcomes[f"message answered {parsed.get('type')}"] += 1
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else -1
            assert code in CLIENT_CLOSE_CODES, (where, code)
            outcomes[f"{stage} closed {code}"] += 1
        except TimeoutError:
            outcomes[f"{stage} no answer"] += 1  # e.g. after a pong, or a complete
    report(
        capsys,
        f"fuzz of WebSocket handshakes: {len(examples)} connections, {dict(outcomes)}",
    )
