"""The Starlette-mounted GraphQL endpoint (HTTP and graphql-transport-ws)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, cast

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UnsetType

from zixly.container import Services
from zixly.core.errors import (
    AuthenticationError,
    BadRequestError,
    MethodNotAllowedError,
    NotAcceptableError,
    RateLimitedError,
    ZixlyError,
)
from zixly.graphql import http_requests
from zixly.graphql.context import Context, build_context
from zixly.graphql.ide import GraphiQLPage
from zixly.graphql.ws import MAX_OPERATIONS, SESSION, SessionHandler, credentials, rejection
from zixly.http.middleware import error_response
from zixly.security.authenticator import MissingCredentials
from zixly.security.principal import Principal

ANONYMOUS = Principal(
    user_id=uuid.UUID(int=0), email="", is_staff=False, tenant_id=None, tenant_slug=None, role=None
)


# Where on_ws_connect puts the close code and reason of its rejection.
CLOSE_WITH = "ws_close_with"


class _ClosingAdapter(ASGIWebSocketAdapter):
    """Closes a rejected connection with the code and reason ``on_ws_connect`` chose
    (``zixly.graphql.ws.rejection``) instead of Strawberry's 4403 Forbidden for every
    rejection."""

    async def close(self, code: int, reason: str) -> None:
        chosen = self.ws.scope.get("state", {}).get(CLOSE_WITH)
        if chosen is not None and code == 4403:
            code, reason = chosen
        await super().close(code, reason)


class ZixlyGraphQL(GraphQL[Context, None]):
    websocket_adapter_class = _ClosingAdapter
    # Each operation authorised, rate-limited and in a transaction of its own; the socket
    # closed when its principal changes (zixly.graphql.ws).
    graphql_transport_ws_handler_class = SessionHandler

    def __init__(self, schema: Any, services: Services) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if services.settings.graphiql else None,
            allow_queries_via_get=True,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            max_subscriptions_per_connection=MAX_OPERATIONS,
            allowed_origins=services.settings.cors_origins,
            connection_init_wait_timeout=timedelta(
                seconds=services.settings.ws_init_timeout_seconds
            ),
        )
        self.services = services
        self.ide = GraphiQLPage(services.settings)

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from the files Zixly serves itself (zixly.graphql.ide), not a CDN."""
        return self.ide.page()

    # --- HTTP: a typed JSON error for every request, statuses by media type -------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            self._check_request_line(request)
            response = await self.run(request)
        except (HTTPException, ZixlyError) as exc:
            error = exc if isinstance(exc, ZixlyError) else _http_error(exc)
            response = error_response(error, scope.get("state", {}).get("request_id", ""))
        status = getattr(request.state, "graphql_status", None)
        if status is not None:
            response.status_code = status
        media_type = http_requests.response_media_type(request.headers)
        if response.media_type == http_requests.JSON and media_type != http_requests.JSON:
            response.headers["content-type"] = media_type
        await response(scope, receive, send)

    def _check_request_line(self, request: Request) -> None:
        """406 for an Accept header that takes no JSON (unless it asks for the GraphiQL
        page), and a GET's parameters bounded as a POST's body is."""
        ide_page = self.should_render_graphql_ide(self.request_adapter_class(request))
        if not ide_page and not http_requests.acceptable(request.headers):
            raise NotAcceptableError(
                f"the response is {http_requests.GRAPHQL_RESPONSE} or {http_requests.JSON}; "
                f"the Accept header takes neither"
            )
        limit = self.services.settings.max_body_bytes
        if len(request.scope.get("query_string", b"")) > limit:
            too_long = BadRequestError(f"the query string is longer than {limit} bytes")
            too_long.http_status = 414
            raise too_long

    def parse_json(self, data: str | bytes) -> Any:
        """An HTTP body: one well-formed request, or BAD_REQUEST."""
        return http_requests.decode_body(data)

    def parse_query_params(self, params: Mapping[str, str | None]) -> dict[str, Any]:
        """A GET's parameters (``variables`` and ``extensions`` as JSON), or BAD_REQUEST."""
        return http_requests.decode_query_params(params)

    def decode_json(self, data: str | bytes) -> object:
        """A WebSocket message, else a JSONDecodeError (Strawberry closes with 4400)."""
        return http_requests.load_message(data)

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Queries over GET, queries and mutations over POST (subscriptions need the
        WebSocket). A mutation over GET is 405 (``Allow: POST``): GET must never change
        anything. An operation that cannot be determined or run here is a request error
        with a code."""
        if "principal" not in request.scope.get("state", {}):
            # Only the GraphiQL page is served unauthenticated; nothing runs without a token.
            raise MissingCredentials("authentication required: send 'Authorization: Bearer <jwt>'")
        post = request_adapter.method == "POST"
        allowed = {OperationType.QUERY, OperationType.MUTATION} if post else {OperationType.QUERY}
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except MissingQueryError:
            raise BadRequestError("the request has no query", field="query") from None
        except CannotGetOperationTypeError as exc:
            message = exc.as_http_error_reason()
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.MUTATION:
                raise MethodNotAllowedError(
                    "mutations are served over POST only", allow="POST"
                ) from None
            message = (
                f"{exc.operation_type.value} operations are not served over HTTP: "
                "subscribe over the WebSocket (graphql-transport-ws)"
            )
        error = GraphQLError(message, extensions={"code": "BAD_REQUEST"})
        return ExecutionResult(data=None, errors=[error])

    async def process_result(self, request: Request, result: Any) -> GraphQLHTTPResponse:
        response = await super().process_result(request, result)
        errors = cast("list[dict[str, Any]]", response.get("errors") or [])
        if result.data is None and errors and all(e.get("path") is None for e in errors):
            # A request error: nothing executed.
            media_type = http_requests.response_media_type(request.headers)
            request.state.graphql_status = http_requests.request_error_status(media_type, errors)
            if media_type == http_requests.GRAPHQL_RESPONSE:
                response.pop("data", None)
        return response

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        state = request.scope.get("state", {})
        principal = state.get("principal", ANONYMOUS)
        context = build_context(
            self.services,
            principal,
            state.get("request_id", ""),
            request=request,
            uow=state.get("uow"),
        )
        context.response = response
        return context

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate ``connection_init`` and apply the same limits as HTTP requests:
        failed authentications per address, and the connection counted as one request of
        its tenant. Each operation is then authorised again (zixly.graphql.ws).

        A refusal closes the socket with a code that says what to do (``rejection``): 4403
        for credentials that are not accepted (a bad token, a foreign tenant), 1013 Try
        Again Later for a rate limit or an outage, the reason naming the code and
        ``retry after <seconds>s``."""
        guard = self.services.guard
        client = getattr(context.request, "client", None)
        address = client.host if client else "unknown"
        credential, tenant = credentials(context.connection_params)
        blocked = await guard.address_blocked(address, credential)
        if blocked is not None:
            guard.rejected("auth_failures", address)
            raise self._rejected(
                context,
                RateLimitedError(
                    "too many failed authentications with these credentials",
                    retry_after=blocked.retry_after_seconds,
                ),
            )
        try:
            principal = await self.services.authenticator.authenticate(credential, tenant)
        except ZixlyError as error:
            if isinstance(error, AuthenticationError):
                await guard.record_auth_failure(address, credential, error)
            raise self._rejected(context, error) from error
        decision = await guard.admit(principal.rate_limit_key)
        if decision is not None and not decision.allowed:
            guard.rejected("tenant", principal.rate_limit_key)
            raise self._rejected(
                context,
                RateLimitedError("rate limit exceeded", retry_after=decision.retry_after_seconds),
            )
        context.principal = principal  # whom the socket is for; operations re-authorise
        session = context.extra.get(SESSION)
        if isinstance(session, SessionHandler):
            await session.follow(principal)
        return {"tenant": principal.tenant_slug}

    @staticmethod
    def _rejected(context: Context, error: ZixlyError) -> ConnectionRejectionError:
        """The refusal of ``connection_init`` for ``error``, closing with its code."""
        context.request.scope.setdefault("state", {})[CLOSE_WITH] = rejection(error)
        return ConnectionRejectionError({"message": error.message, "code": error.code})


def _http_error(exc: HTTPException) -> ZixlyError:
    """Strawberry's refusal of a request as a typed error with the same status."""
    if exc.status_code == 405:
        return MethodNotAllowedError(exc.reason, allow="GET, POST")
    error = BadRequestError(exc.reason)
    error.http_status = exc.status_code
    return error
