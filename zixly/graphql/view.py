"""The Starlette-mounted GraphQL endpoint (HTTP and graphql-transport-ws)."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UnsetType

from zixly.auth.principal import Principal
from zixly.errors import AuthenticationError, ZixlyError
from zixly.graphql.context import Context, build_context
from zixly.services import Services

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
        its tenant."""
        guard = self.services.guard
        client = getattr(context.request, "client", None)
        address = client.host if client else "unknown"
        params = context.connection_params or {}
        authorization = params.get("Authorization") or params.get("authorization")
        credential = authorization if isinstance(authorization, str) else None
        if await guard.address_blocked(address, credential) is not None:
            guard.rejected("auth_failures", address)
            raise ConnectionRejectionError(
                {"message": "too many failed authentications", "code": "RATE_LIMITED"}
            )
        tenant = params.get("X-Zixly-Tenant") or params.get("x-zixly-tenant")
        try:
            principal = await self.services.authenticator.authenticate(
                credential,
                tenant if isinstance(tenant, str) else None,
            )
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
        fresh = build_context(self.services, principal, context.request_id, context.request)
        context.principal = principal
        context.uow = fresh.uow
        context.loaders = fresh.loaders
        return {"tenant": principal.tenant_slug}
