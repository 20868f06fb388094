"""graphql-transport-ws sessions that follow the principal.

The socket authenticates once in ``connection_init`` (``ZixlyGraphQL.on_ws_connect``);
after that, invariants:

* every ``subscribe`` is authorised as a new request: the connection's token is verified
  again and the user, membership and role read again from the database through
  ``Authenticator.authenticate`` (the path HTTP requests take), and the operation counts
  against the same per-tenant/per-user rate limit (``AccessGuard.admit``). The operation
  runs as that fresh principal, never as the one the socket opened with: a demoted user's
  operation is authorised with the new role;
* every operation has a context and unit of work (transaction) of its own, committed or
  rolled back by the request boundary for that operation alone: no operation's failure
  touches another's writes, and none shares another's data loaders;
* the socket is closed **4401 Unauthorized** when its token stops being accepted (a timer
  at its ``exp`` plus the verifier's leeway, and any operation whose token no longer
  verifies), **4403 Forbidden** when its user is no longer a member of the tenant the
  socket was opened for (found by an operation's authorisation) or a removal or role change
  of that user in that tenant is announced by any replica (``zixly.security.principal_events``).
  Closing ends every operation of the socket, subscriptions included;
* an operation refused for a rate limit (RATE_LIMITED) or an outage (UNAVAILABLE) gets an
  ``error`` message of its own; the socket stays open;
* a ``subscribe`` whose document does not parse, does not validate, or names no operation
  it has gets an ``error`` message with the errors (``extensions.code``
  GRAPHQL_PARSE_FAILED, GRAPHQL_VALIDATION_FAILED, BAD_REQUEST), as PROTOCOL.md has it; the
  socket stays open (Strawberry would close it 4400 for the first and last).

A refused ``connection_init`` closes the socket (``rejection``): **4403 Forbidden** only when
the credentials are not accepted (no or a bad token, a tenant the user is not a member
of), **1013 Try Again Later** (RFC 6455) when the same credentials may succeed later (a
rate limit: reason ``RATE_LIMITED: retry after <n>s``; an outage: ``UNAVAILABLE: retry
after <n>s``), **4500** for an unexpected error. The protocol's own codes are Strawberry's:
4400 (a message that is not one), 4401 (subscribe before the acknowledgement), 4408 (no
``connection_init`` within ``ws_init_timeout_seconds``), 4409 (an id already in use), 4429
(a second ``connection_init``). docs/graphql-over-http.md has the table.

Only graphql-transport-ws is served (the view enables no other protocol).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from contextlib import suppress
from contextvars import ContextVar
from typing import Any

import structlog
from graphql import GraphQLError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message

from zixly.core.errors import ForbiddenError, RateLimitedError, ZixlyError
from zixly.graphql.context import Context, build_context
from zixly.security.principal import Principal
from zixly.security.principal_events import PrincipalChange

UNAUTHORIZED = 4401
FORBIDDEN = 4403
INTERNAL_SERVER_ERROR = 4500
TRY_AGAIN_LATER = 1013  # RFC 6455 close code registry: "Try Again Later"
MAX_REASON_BYTES = 123  # RFC 6455: a close frame's reason
MAX_OPERATIONS = 20  # operations in flight on one socket (more: an ``error`` message)
# Where the connection's context holds its session, for ``on_ws_connect`` to follow.
SESSION = "ws_session"
# The operation being run by the current task (each operation runs in a task of its own).
_OPERATION_CONTEXT: ContextVar[Context | None] = ContextVar("zixly_ws_operation", default=None)


def credentials(params: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """The Authorization and X-Zixly-Tenant values of a ``connection_init`` payload."""
    params = params or {}
    authorization = params.get("Authorization") or params.get("authorization")
    tenant = params.get("X-Zixly-Tenant") or params.get("x-zixly-tenant")
    return (
        authorization if isinstance(authorization, str) else None,
        tenant if isinstance(tenant, str) else None,
    )


def close_code(error: ZixlyError) -> int | None:
    """The close code a refusal of the socket's principal takes; None when only the
    operation is refused (a rate limit, an outage, a malformed request)."""
    if error.http_status == 401:
        return UNAUTHORIZED
    if error.http_status == 403:
        return FORBIDDEN
    return None


def rejection(error: ZixlyError) -> tuple[int, str]:
    """The close code and reason of a ``connection_init`` refused for ``error`` (see the
    module): the reason starts with the error's code."""
    retry_after = error.headers().get("Retry-After")
    if retry_after is not None:
        return TRY_AGAIN_LATER, f"{error.code}: retry after {retry_after}s"
    code = INTERNAL_SERVER_ERROR if error.http_status >= 500 else FORBIDDEN
    reason = f"{error.code}: {error.message}".encode()[:MAX_REASON_BYTES]
    return code, reason.decode("utf-8", errors="ignore")


class SessionHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler with per-operation authorisation, units of
    work and rate limits, and closing when the principal changes (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connection.extra[SESSION] = self
        self._expiry: asyncio.TimerHandle | None = None
        self._unwatch: Callable[[], None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self._operations_run = 0

    # Strawberry runs every operation with ``self.context``: inside an operation's task this
    # is that operation's own context, elsewhere the connection's.
    @property
    def context(self) -> Context:
        return _OPERATION_CONTEXT.get() or self._connection

    @context.setter
    def context(self, value: Context) -> None:
        self._connection = value

    # --- following the principal ------------------------------------------------------------

    async def follow(self, principal: Principal) -> None:
        """Called by ``on_ws_connect`` before the acknowledgement: close at the token's
        expiry, and when a change of this user in this tenant is announced."""
        if principal.valid_until is not None:
            delay = max(0.0, principal.valid_until - time.time())
            self._expiry = asyncio.get_running_loop().call_later(
                delay, self._close_soon, UNAUTHORIZED, "token expired"
            )
        if principal.tenant_id is not None:
            watch = self._connection.services.principal_watch
            self._unwatch = await watch.watch(
                principal.tenant_id, principal.user_id, self._principal_changed
            )

    def _principal_changed(self, change: PrincipalChange) -> None:
        self._close_soon(FORBIDDEN, f"membership {change.kind.value.replace('_', ' ')}")

    def _close_soon(self, code: int, reason: str) -> None:
        task = asyncio.create_task(self.revoke(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def revoke(self, code: int, reason: str) -> None:
        """End every operation of the socket and close it with ``code``."""
        if self._closed:
            return
        self._closed = True
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        with suppress(Exception):  # the client may be gone already
            await self.websocket.close(code=code, reason=reason)

    async def shutdown(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        await super().shutdown()

    # --- each operation as a request of its own ---------------------------------------------

    async def send_message(self, message: Message) -> None:
        """Every error sent has an ``extensions.code``: Strawberry's own (the per-socket
        operation limit, incremental delivery) are BAD_REQUEST."""
        if message["type"] == "error":
            for error in message["payload"]:
                extensions = error.setdefault("extensions", {})
                extensions.setdefault("code", "BAD_REQUEST")
        await super().send_message(message)

    @staticmethod
    def _get_pre_execution_close_reason(error: GraphQLError) -> str | None:
        """None: every error before execution is the operation's ``error`` message."""
        return None

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        context = await self._authorise(operation)
        if context is None:
            return
        token = _OPERATION_CONTEXT.set(context)
        try:
            await super().run_operation(operation)
        finally:
            _OPERATION_CONTEXT.reset(token)
            # Whatever the request boundary did not finish (a cancelled operation).
            await context.uow.finish(commit=False)

    async def _authorise(self, operation: Operation[Context, None]) -> Context | None:
        """The operation's own context, or None when it was refused (and told so)."""
        connection = self._connection
        services = connection.services
        self._operations_run += 1
        request_id = f"{connection.request_id[:48]}-{self._operations_run}"
        structlog.contextvars.bind_contextvars(request_id=request_id)  # this task's only
        try:
            principal = await services.authenticator.authenticate(
                *credentials(connection.connection_params)
            )
            if principal.tenant_id != connection.principal.tenant_id:
                raise ForbiddenError("you are no longer a member of this connection's tenant")
        except ZixlyError as error:
            await self._refuse(operation, error, request_id, close_code(error))
            return None
        structlog.contextvars.bind_contextvars(
            tenant_id=str(principal.tenant_id) if principal.tenant_id else None,
            user_id=str(principal.user_id),
        )
        decision = await services.guard.admit(principal.rate_limit_key)
        if decision is not None and not decision.allowed:
            services.guard.rejected("tenant", principal.rate_limit_key)
            window = services.settings.rate_limit_window_seconds
            limited = RateLimitedError(
                f"rate limit of {decision.limit} requests per {window}s exceeded; "
                f"retry after {decision.retry_after_seconds}s",
                retry_after=decision.retry_after_seconds,
            )
            await self._refuse(operation, limited, request_id, None)
            return None
        context = build_context(services, principal, request_id, connection.request)
        context.response = connection.response
        context.connection_params = connection.connection_params
        return context

    async def _refuse(
        self,
        operation: Operation[Context, None],
        error: ZixlyError,
        request_id: str,
        close_with: int | None,
    ) -> None:
        extensions = {**error.extensions, "requestId": request_id}
        refusal = GraphQLError(error.message, extensions=extensions)
        await _quietly(operation.send_initial_errors([refusal]))
        if close_with is not None:
            self.operations.pop(operation.id, None)  # this task: not to be cancelled by itself
            await self.revoke(close_with, error.code)


async def _quietly(sending: Coroutine[Any, Any, None]) -> None:
    """Send, unless the client has gone meanwhile."""
    with suppress(Exception):
        await sending
