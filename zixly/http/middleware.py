"""ASGI middleware: request ids, body-size limit, authentication and the rate limit."""

from __future__ import annotations

import re
import secrets
from typing import Any

import structlog
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zixly.errors import ZixlyError
from zixly.http.metrics import HTTP_REQUESTS, RATE_LIMIT_REJECTIONS
from zixly.logging import get_logger
from zixly.services import Services

log = get_logger("zixly.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
PROTECTED_PREFIXES = ("/graphql", "/export/")


def error_response(
    error: ZixlyError, request_id: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "errors": [
            {"message": error.message, "extensions": {**error.extensions, "requestId": request_id}}
        ]
    }
    all_headers = {"X-Request-ID": request_id, **(headers or {})}
    if error.http_status == 401:
        description = error.message.replace('"', "'")
        all_headers["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{description}"'
        )
    return JSONResponse(body, status_code=error.http_status, headers=all_headers)


class RequestContextMiddleware:
    """Assigns a request id (or accepts a sane X-Request-ID), echoes it, binds it to logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        route = _route_label(scope.get("path", ""))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
                HTTP_REQUESTS.labels(route, f"{message['status'] // 100}xx").inc()
            await send(message)

        await self.app(scope, receive, send_with_id)


def _route_label(path: str) -> str:
    for known in ("/graphql", "/export/financials.csv", "/healthz", "/readyz", "/metrics"):
        if path == known:
            return known
    return "other"


class BodyLimitMiddleware:
    """Rejects request bodies over the limit (413) before anything parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        from zixly.errors import ValidationError

        error = ValidationError(f"request body is larger than {self.max_bytes} bytes")
        error.http_status = 413
        request_id = scope.get("state", {}).get("request_id", "")
        await error_response(error, request_id)(scope, receive, send)


class _TooLarge(Exception):
    pass


def _is_graphiql_page(scope: Scope) -> bool:
    if scope.get("method") != "GET" or scope.get("path") != "/graphql":
        return False
    accept = Headers(scope=scope).get("accept", "")
    return "text/html" in accept and b"query=" not in scope.get("query_string", b"")


class AuthRateLimitMiddleware:
    """Authenticates protected HTTP routes and applies the per-tenant rate limit.

    WebSockets authenticate in ``connection_init`` instead (browsers cannot set headers).
    The GraphiQL page itself is public; every query it sends carries a token.
    """

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not path.startswith(PROTECTED_PREFIXES)
            or scope.get("method") == "OPTIONS"
            or _is_graphiql_page(scope)
        ):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        request_id = state.get("request_id", "")
        headers = Headers(scope=scope)
        try:
            principal = await self.services.authenticator.authenticate(
                headers.get("authorization"), headers.get("x-zixly-tenant")
            )
        except ZixlyError as error:
            log.info("auth.rejected", reason=error.message, code=error.code)
            await error_response(error, request_id)(scope, receive, send)
            return
        structlog.contextvars.bind_contextvars(
            tenant_id=str(principal.tenant_id) if principal.tenant_id else None,
            user_id=str(principal.user_id),
        )
        decision = await self.services.rate_limiter.hit(principal.rate_limit_key)
        if not decision.allowed:
            from zixly.errors import RateLimitedError

            RATE_LIMIT_REJECTIONS.inc()
            log.info("ratelimit.rejected", key=principal.rate_limit_key)
            error = RateLimitedError(
                f"rate limit of {decision.limit} requests per "
                f"{self.services.settings.rate_limit_window_seconds}s exceeded; retry after "
                f"{decision.retry_after_seconds}s",
                retry_after=decision.retry_after_seconds,
            )
            await error_response(error, request_id, decision.headers())(scope, receive, send)
            return
        state["principal"] = principal
        limit_headers = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + limit_headers
            await send(message)

        await self.app(scope, receive, send_with_limits)
