"""The Starlette-mounted GraphQL endpoint (HTTP and graphql-transport-ws)."""

from __future__ import annotations

import uuid
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
from zixly.core.errors import AuthenticationError, BadRequestError, ZixlyError
from zixly.graphql import http_requests
from zixly.graphql.context import Context, build_context
from zixly.graphql.ide import GraphiQLPage
from zixly.graphql.ws import SESSION, SessionHandler, credentials
from zixly.http.middleware import error_response
from zixly.security.principal import Principal

ANONYMOUS = Principal(
    user_id=uuid.UUID(int=0), email="", is_staff=False, tenant_id=None, tenant_slug=None, role=None
)


# Where on_ws_connect puts the close code and reason for a rejection that is no refusal.
CLOSE_WITH = "ws_close_with"
TRY_AGAIN_LATER = 1013  # RFC 6455 close code registry: "Try Again Later"


class _ClosingAdapter(ASGIWebSocketAdapter):
    """Closes a rejected connection with the code ``on_ws_connect`` chose (1013 when the
    database is unavailable) instead of Strawberry's 4403 Forbidden for every rejection."""

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
            allow_queries_via_get=False,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            max_subscriptions_per_connection=20,
            allowed_origins=services.settings.cors_origins,
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
            response = await self.run(request)
        except (HTTPException, ZixlyError) as exc:
            error = exc if isinstance(exc, ZixlyError) else BadRequestError(exc.reason)
            if isinstance(exc, HTTPException):
                error.http_status = exc.status_code
            response = error_response(error, scope.get("state", {}).get("request_id", ""))
        status = getattr(request.state, "graphql_status", None)
        if status is not None:
            response.status_code = status
        media_type = http_requests.response_media_type(request.headers)
        if response.media_type == http_requests.JSON and media_type != http_requests.JSON:
            response.headers["content-type"] = media_type
        await response(scope, receive, send)

    def parse_json(self, data: str | bytes) -> Any:
        """An HTTP body: one well-formed request, or BAD_REQUEST."""
        return http_requests.decode_body(data)

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
        """Queries and mutations over POST (subscriptions need the WebSocket); an operation
        that cannot be determined or run here is a request error with a code."""
        if request_adapter.method != "POST":  # GET serves only the GraphiQL page
            raise BadRequestError("operations are served over POST only")
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types={OperationType.QUERY, OperationType.MUTATION},
                operation_extensions=request_data.extensions,
            )
        except MissingQueryError:
            raise BadRequestError("the request has no query", field="query") from None
        except CannotGetOperationTypeError as exc:
            message = exc.as_http_error_reason()
        except InvalidOperationTypeError as exc:
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
        its tenant. Each operation is then authorised again (zixly.graphql.ws)."""
        guard = self.services.guard
        client = getattr(context.request, "client", None)
        address = client.host if client else "unknown"
        credential, tenant = credentials(context.connection_params)
        if await guard.address_blocked(address, credential) is not None:
            guard.rejected("auth_failures", address)
            raise ConnectionRejectionError(
                {"message": "too many failed authentications", "code": "RATE_LIMITED"}
            )
        try:
            principal = await self.services.authenticator.authenticate(credential, tenant)
        except ZixlyError as error:
            if isinstance(error, AuthenticationError):
                await guard.record_auth_failure(address, credential, error)
            retry_after = error.headers().get("Retry-After")
            if retry_after is not None:  # the database is down: not a refusal, come back later
                context.request.scope.setdefault("state", {})[CLOSE_WITH] = (
                    TRY_AGAIN_LATER,
                    f"{error.code}: retry after {retry_after}s",
                )
            raise ConnectionRejectionError(
                {"message": error.message, "code": error.code}
            ) from error
        decision = await guard.admit(principal.rate_limit_key)
        if decision is not None and not decision.allowed:
            guard.rejected("tenant", principal.rate_limit_key)
            raise ConnectionRejectionError(
                {
                    "message": "rate limit exceeded",
                    "code": "RATE_LIMITED",
                    "retryAfter": decision.retry_after_seconds,
                }
            )
        context.principal = principal  # whom the socket is for; operations re-authorise
        session = context.extra.get(SESSION)
        if isinstance(session, SessionHandler):
            await session.follow(principal)
        return {"tenant": principal.tenant_slug}
