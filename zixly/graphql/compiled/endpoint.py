"""The ASGI wrapper around the GraphQL view that answers planned operations itself.

For a POST whose operation plans (see ``planner``), it checks the arguments and the role
with the resolver's own functions, runs one statement in the request's transaction (which
authentication opened, scoped to the tenant) and writes the response from the rows.
Whenever anything is not exactly as the slow path would answer it (an unplanned
operation, variables that do not coerce, a ZixlyError from the checks, any unexpected
error), nothing has been sent yet and the request goes to Strawberry with its body
replayed, so the client gets Strawberry's answer or error.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import strawberry
from prometheus_client import Counter
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from zixly.core.errors import BadRequestError, RateLimitedError, UnavailableError, ZixlyError
from zixly.core.logging import get_logger
from zixly.core.metrics import GRAPHQL_LATENCY, REGISTRY
from zixly.graphql.api.analytics import REPORT_FIELDS
from zixly.graphql.compiled.planner import Plan, Planner
from zixly.graphql.compiled.render import render
from zixly.graphql.context import build_context
from zixly.graphql.http_requests import acceptable, decode_body, response_media_type
from zixly.graphql.input_checks import unstorable_in
from zixly.graphql.view import ANONYMOUS, ZixlyGraphQL
from zixly.http.middleware import error_response

log = get_logger("zixly.graphql.compiled")

# Tests switch it off to compare the compiled answers with Strawberry's.
COMPILED_PATH_ENABLED = True

COMPILED_REQUESTS = Counter(
    "zixly_graphql_compiled_total",
    "GraphQL POSTs by outcome: 'hit' (answered by the compiled SQL path) or 'fallback' "
    "(served by Strawberry).",
    ["outcome"],
    registry=REGISTRY,
)
# Accept values that make Strawberry stream its answer instead.
_STREAMING = ("multipart/mixed", "text/event-stream")


class CompiledGraphQL:
    def __init__(self, view: ZixlyGraphQL) -> None:
        self.view = view
        self.services = view.services
        assert isinstance(view.schema, strawberry.Schema)
        self.schema = view.schema._schema  # graphql-core's, as the caching extensions use it
        self.planner = Planner(self.schema, self.services.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not COMPILED_PATH_ENABLED or scope["type"] != "http" or scope["method"] != "POST":
            await self.view(scope, receive, send)
            return
        messages, body = await _read_body(receive)
        answer = None
        if body is not None and _accepts_plain_json(scope):
            started = time.perf_counter()
            try:
                answer = await self._answer(scope, body)
            except (UnavailableError, RateLimitedError) as error:
                # The database could not serve it (timeout, no connection, over the caps):
                # answered now, 503/429 with Retry-After; Strawberry would only run it again.
                request_id = scope.get("state", {}).get("request_id", "")
                media_type = response_media_type(Headers(scope=scope))
                await error_response(error, request_id, media_type=media_type)(scope, receive, send)
                return
            except ZixlyError:
                answer = None  # Strawberry raises it again, as a proper GraphQL error
            except Exception as exc:
                log.warning("graphql.compiled.failed", error=repr(exc), exc_info=exc)
                answer = None
            if answer is not None:
                plan, content = answer
                GRAPHQL_LATENCY.labels(plan.field_node.name.value, "query").observe(
                    time.perf_counter() - started
                )
        if answer is None:
            COMPILED_REQUESTS.labels("fallback").inc()
            await self.view(scope, _replay(messages, receive), send)
            return
        COMPILED_REQUESTS.labels("hit").inc()
        media_type = response_media_type(Headers(scope=scope))
        await Response(content, media_type=media_type)(scope, receive, send)

    async def _answer(self, scope: Scope, body: bytes) -> tuple[Plan, bytes] | None:
        request = _graphql_request(body)
        if request is None:
            return None
        query, variables, operation_name = request
        plan = self.planner.plan(query)
        if plan is None or (operation_name is not None and operation_name != plan.operation_name):
            return None
        arguments = plan.arguments(self.schema, variables)
        if arguments is None:
            return None
        state = scope.get("state", {})
        # The request's unit of work: authentication opened it, scoped to the tenant.
        ctx = build_context(
            self.services,
            state.get("principal", ANONYMOUS),
            state.get("request_id", ""),
            uow=state.get("uow"),
        )
        bound = await plan.source.bind(ctx, arguments)
        try:
            report = plan.source.field in REPORT_FIELDS
            async with ctx.report_session() if report else ctx.session() as session:
                rows = (await session.execute(plan.select(bound), bound.params)).all()
            # As the request boundary does; before rendering, to free the connection sooner.
            await ctx.uow.finish(commit=True)
        except Exception:
            # A failed statement aborts the transaction: Strawberry gets a fresh one.
            await ctx.uow.finish(commit=False)
            raise
        page = plan.source.page(ctx, bound, rows)
        return plan, ('{"data":' + render(plan.data, page) + "}").encode()


def _accepts_plain_json(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    accept = headers.get("accept", "").lower()
    return (
        content_type == "application/json"
        and acceptable(headers)  # else Strawberry's 406
        and not any(s in accept for s in _STREAMING)
    )


def _graphql_request(body: bytes) -> tuple[str, dict[str, Any] | None, str | None] | None:
    """query, variables and operationName of a single (not batched), well-formed request
    whose variables PostgreSQL can store, when no request extensions are given."""
    try:
        data = decode_body(body)
    except BadRequestError:
        return None
    query, variables = data.get("query"), data.get("variables")
    operation_name = data.get("operationName")
    if (
        not isinstance(query, str)
        or not isinstance(variables, dict | None)
        or not isinstance(operation_name, str | None)
        or data.get("extensions")
        or unstorable_in(variables, "variables") is not None
    ):
        return None
    return query, variables, operation_name


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The request's messages (to replay) and its body (``None`` if it was cut short)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(chunks)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = deque(messages)

    async def replayed() -> Message:
        return pending.popleft() if pending else await receive()

    return replayed
