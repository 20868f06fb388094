"""ASGI middleware: request ids and access log, body-size limit, authentication, rate limits."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import structlog
from starlette.datastructures import Headers, QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zixly.container import Services
from zixly.core.errors import AuthenticationError, RateLimitedError, ValidationError, ZixlyError
from zixly.core.logging import get_logger
from zixly.core.metrics import HTTP_REQUESTS
from zixly.db.session import Scope as DbScope
from zixly.db.session import UnitOfWork
from zixly.http.negotiation import JSON, error_media_type
from zixly.security.ratelimit import Decision

log = get_logger("zixly.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_HEADER_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')
PROTECTED_PREFIXES = ("/graphql", "/export/")


def _challenge(error: ZixlyError) -> str:
    """The RFC 6750 WWW-Authenticate challenge for a 401."""
    bearer_error = getattr(error, "bearer_error", "invalid_token")
    if bearer_error is None:
        return 'Bearer realm="zixly"'
    description = _HEADER_UNSAFE.sub("'", error.message)
    return f'Bearer realm="zixly", error="{bearer_error}", error_description="{description}"'


def error_response(
    error: ZixlyError,
    request_id: str,
    headers: dict[str, str] | None = None,
    media_type: str = JSON,
) -> JSONResponse:
    """The GraphQL error body (``errors`` with ``extensions.code``) every refusal gets;
    ``media_type`` is the negotiated one on ``/graphql`` (``error_media_type``)."""
    body = {
        "errors": [
            {"message": error.message, "extensions": {**error.extensions, "requestId": request_id}}
        ]
    }
    all_headers = {**error.headers(), **(headers or {})}
    if error.http_status == 401:
        all_headers["WWW-Authenticate"] = _challenge(error)
    # X-Request-ID is added to every response by RequestContextMiddleware.
    return JSONResponse(
        body, status_code=error.http_status, headers=all_headers, media_type=media_type
    )


class _RoutingError(ZixlyError):
    """The router's own refusal: no route for the path (404), or not for the method (405)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(status, "BAD_REQUEST")
        self.extensions["code"] = self.code


async def routing_error_response(request: Request, exc: Exception) -> Response:
    """Starlette's HTTPException (an unmatched path or method) as Zixly's JSON error, not
    the router's plain text: every error of the API has one body format."""
    assert isinstance(exc, HTTPException)
    error = _RoutingError(exc.status_code, str(exc.detail).lower())
    allow = (exc.headers or {}).get("Allow")
    if allow:  # Starlette joins a set: give the methods in one order
        order = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        methods = {m.strip() for m in allow.split(",") if m.strip()}
        allow = ", ".join(sorted(methods, key=lambda m: (order.index(m) if m in order else 99, m)))
    request_id = str(request.scope.get("state", {}).get("request_id", ""))
    return error_response(error, request_id, {"Allow": allow} if allow else None)


class RequestContextMiddleware:
    """Assigns a request id (or accepts a sane X-Request-ID), echoes it, binds it to logs,
    counts responses and writes one access-log line per request."""

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
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
                HTTP_REQUESTS.labels(route, f"{status // 100}xx").inc()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "http.request",
                method=scope.get("method", "WEBSOCKET"),
                route=route,
                status=status or None,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            structlog.contextvars.clear_contextvars()


INGEST_ROUTES = tuple(
    f"/ingest/v1/{name}" for name in ("financials", "lead-events", "custom-metrics", "heartbeat")
)


def _route_label(path: str) -> str:
    for known in ("/graphql", "/export/financials.csv", "/healthz", "/readyz", "/metrics"):
        if path == known:
            return known
    if path in INGEST_ROUTES:
        return path
    return "other"


class BodyLimitMiddleware:
    """Rejects request bodies over the limit (413) before anything parses them.

    Paths under ``exempt_prefixes`` enforce limits of their own (the ingest endpoint takes
    bulk bodies, bounded by its own setting, and answers in its own error format)."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.exempt_prefixes and scope.get("path", "").startswith(self.exempt_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if started:  # too late for a status; drop the connection
                raise
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = ValidationError(f"request body is larger than {self.max_bytes} bytes")
        error.http_status = 413
        request_id = scope.get("state", {}).get("request_id", "")
        await error_response(error, request_id, media_type=error_media_type(scope))(
            scope, receive, send
        )


class _TooLarge(Exception):
    pass


def _is_graphiql_page(scope: Scope) -> bool:
    """A browser's GET of the GraphiQL page: HTML asked for and no ``query`` parameter, read
    as the view reads it (percent-encoded names included), since GET also runs queries."""
    if scope.get("method") != "GET" or scope.get("path") != "/graphql":
        return False
    accept = Headers(scope=scope).get("accept", "")
    return "text/html" in accept and "query" not in QueryParams(scope.get("query_string", b""))


class AuthRateLimitMiddleware:
    """Authenticates protected HTTP routes and applies the rate limits.

    Two sliding windows in Redis: requests per tenant, and failed authentications per
    client address (an address over that limit is refused before its token is even
    checked, so a guess cannot succeed while throttled). Both fail open when Redis cannot
    be asked: an outage of the limiter must not take the API down with it.

    WebSockets authenticate in ``connection_init`` instead (browsers cannot set headers).
    The GraphiQL page itself is public; every query it sends carries a token.
    """

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        self.guard = services.guard

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
        address = (scope.get("client") or ("unknown",))[0]
        headers = Headers(scope=scope)
        blocked = await self.guard.address_blocked(address, headers.get("authorization"))
        if blocked is not None:
            await self._reject(
                request_id,
                "auth_failures",
                address,
                blocked,
                f"too many failed authentications with these credentials; retry after "
                f"{blocked.retry_after_seconds}s",
                error_media_type(scope),
            )(scope, receive, send)
            return
        # The request's one transaction: opened by authentication, used by the route,
        # committed by the GraphQL request boundary; anything left open is rolled back here.
        uow = UnitOfWork(self.services.db, DbScope.system())
        try:
            await self._authenticated(scope, receive, send, headers, uow, request_id, address)
        finally:
            await uow.finish(commit=False)

    async def _authenticated(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: Headers,
        uow: UnitOfWork,
        request_id: str,
        address: str,
    ) -> None:
        state: dict[str, Any] = scope["state"]
        try:
            principal = await self.services.authenticator.authenticate(
                headers.get("authorization"), headers.get("x-zixly-tenant"), uow=uow
            )
        except ZixlyError as error:
            if isinstance(error, AuthenticationError):
                await self.guard.record_auth_failure(address, headers.get("authorization"), error)
            if error.http_status >= 500:  # an outage, not a bad token: keep the cause
                log.warning("auth.unavailable", reason=error.message, cause=repr(error.__cause__))
            else:
                log.info("auth.rejected", reason=error.message, code=error.code)
            await error_response(error, request_id, media_type=error_media_type(scope))(
                scope, receive, send
            )
            return
        structlog.contextvars.bind_contextvars(
            tenant_id=str(principal.tenant_id) if principal.tenant_id else None,
            user_id=str(principal.user_id),
        )
        decision = await self.guard.admit(principal.rate_limit_key)
        if decision is not None and not decision.allowed:
            window = self.services.settings.rate_limit_window_seconds
            await self._reject(
                request_id,
                "tenant",
                principal.rate_limit_key,
                decision,
                f"rate limit of {decision.limit} requests per {window}s exceeded; "
                f"retry after {decision.retry_after_seconds}s",
                error_media_type(scope),
            )(scope, receive, send)
            return
        state["principal"] = principal
        state["uow"] = uow
        limit_headers = [
            (k.lower().encode(), v.encode())
            for k, v in (decision.headers() if decision else {}).items()
        ]

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + limit_headers
            await send(message)

        await self.app(scope, receive, send_with_limits)

    def _reject(
        self,
        request_id: str,
        limit: str,
        key: str,
        decision: Decision,
        message: str,
        media_type: str,
    ) -> JSONResponse:
        self.guard.rejected(limit, key)
        error = RateLimitedError(message, retry_after=decision.retry_after_seconds)
        return error_response(error, request_id, decision.headers(), media_type)
