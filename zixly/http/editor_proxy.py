"""Each tenant's n8n editor behind Zixly: ``/editor/<tenant slug>/...`` (docs/n8n-editor-access.md).

``GET /editor/<slug>/login?token=<Zixly JWT>`` (or ``Authorization: Bearer``) checks that the
caller is an EDITOR or ADMIN of *that* tenant and sets Zixly's own editor cookie: a random id
whose session (tenant, user, expiry) lives in Redis, stored under the id's hash. Every other
request under the prefix must carry that cookie for the same tenant; the membership is read
again from the database every ``RECHECK_SECONDS``. Requests are forwarded to the tenant's
instance (its URL from ``n8n_instances``, never from the request) with the prefix stripped,
the client's cookies and credentials removed, and n8n's ``n8n-auth`` cookie of the instance
owner added: Zixly logs in with the stored owner password and caches that cookie per tenant,
logging in again when n8n answers 401. n8n's ``Set-Cookie`` never reaches the browser.

n8n serves its API at the root whatever ``N8N_PATH`` is; ``N8N_PATH=/editor/<slug>/`` (set by
the lifecycle) only makes the editor's assets and API calls use the prefix. The push channel
(``/rest/push``, a WebSocket by default) is relayed with the ``websockets`` client.

Routes a customer must not use through the proxy are refused with 403 (``BLOCKED``): owner
setup, user management and invitations, API keys, community packages, the owner's own
email/password/MFA, password resets, SSO/LDAP and licence changes, source control and
external secrets changes, n8n's own login, and the public API (Zixly's GraphQL API is the way
in for scripts). ``POST /rest/logout`` ends the Zixly editor session instead of n8n's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.cookiejar
import json
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from redis.asyncio import Redis
from sqlalchemy import text
from starlette.background import BackgroundTask
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Origin

from zixly.container import Services
from zixly.core.errors import (
    AuthenticationError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
    ValidationError,
    ZixlyError,
)
from zixly.core.logging import get_logger
from zixly.core.outages import unavailable
from zixly.db.session import Database, Scope
from zixly.http.middleware import error_response
from zixly.provisioning.instances import ActualState, InstanceRepository
from zixly.provisioning.n8n.client import AUTH_COOKIE, N8nClient
from zixly.provisioning.n8n.errors import N8nError
from zixly.provisioning.operations import STAFF
from zixly.provisioning.secrets import InstanceSecretBox, SecretField
from zixly.security.crypto import Keyring
from zixly.security.principal import Role

log = get_logger("zixly.editor")

PREFIX = "/editor"
COOKIE = "zixly_editor"
SESSION_SECONDS = 8 * 3600
RECHECK_SECONDS = 60
MINIMUM_ROLE = Role.EDITOR
LOGIN_RETRY_SECONDS = 1.0
TRY_AGAIN_LATER = 1013  # WebSocket close code (RFC 6455 registry): Redis or the database down
_REACHABLE = frozenset({ActualState.RUNNING, ActualState.UPGRADING})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ANY: frozenset[str] | None = None

# (methods or _ANY, pattern on the lower-cased path after the prefix). Express matches
# routes case-insensitively, so the path is lower-cased before matching.
BLOCKED: tuple[tuple[frozenset[str] | None, re.Pattern[str]], ...] = tuple(
    (methods, re.compile(pattern))
    for methods, pattern in (
        (_ANY, r"^/rest/owner(/|$)"),
        (_ANY, r"^/rest/invitations(/|$)"),
        (_WRITES, r"^/rest/users(/|$)"),
        (_ANY, r"^/rest/api-keys(/|$)"),
        (_ANY, r"^/rest/community-packages(/|$)"),
        (_WRITES, r"^/rest/me(/password)?/?$"),
        (_ANY, r"^/rest/mfa(/|$)"),
        (_ANY, r"^/rest/(forgot-password|resolve-password-token|change-password)(/|$)"),
        (_WRITES, r"^/rest/(ldap|sso|saml|oidc|license|source-control|external-secrets)(/|$)"),
        (_WRITES, r"^/rest/login/?$"),
        (_ANY, r"^/rest/e2e(/|$)"),
        (_ANY, r"^/api(/|$)"),
    )
)
_LOGOUT = re.compile(r"^/rest/logout/?$")
# The session names its tenant, so the token's age (issued_at) does not matter here.
_ROLE_LOOKUP = text(
    "SELECT tenant_id, role FROM zixly_auth_principal(:email, :tenant, NULL::timestamptz)"
)
# Hop-by-hop headers (RFC 9110 7.6.1) and what the proxy owns.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP = _HOP | {
    "host",
    "cookie",
    "authorization",
    "x-n8n-api-key",
    "content-length",
    "accept-encoding",  # set by _request_headers
}
_RESPONSE_DROP = _HOP | {"set-cookie"}


def editor_path(slug: str) -> str:
    return f"{PREFIX}/{slug}/"


def blocked(method: str, path: str) -> bool:
    lowered = path.lower()
    return any(
        (methods is None or method in methods) and pattern.search(lowered)
        for methods, pattern in BLOCKED
    )


def upstream_path(path: str) -> str:
    """The path after the prefix, refused when it could mean something else to n8n."""
    segments = path.split("/")
    if "\\" in path or any(s in (".", "..") for s in segments) or "" in segments[:-1]:
        raise ValidationError("unsupported path")
    return "/" + path


# --- sessions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditorSession:
    tenant_id: str
    tenant_slug: str
    user_id: str
    email: str
    expires_at: float
    checked_at: float


class EditorSessions:
    """Editor sessions in Redis, keyed by the hash of the cookie's random id."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def _key(session_id: str) -> str:
        return "editor:session:" + hashlib.sha256(session_id.encode()).hexdigest()

    async def create(self, session: EditorSession) -> str:
        session_id = secrets.token_urlsafe(32)
        await self.redis.set(self._key(session_id), json.dumps(asdict(session)), ex=SESSION_SECONDS)
        return session_id

    async def get(self, session_id: str) -> EditorSession | None:
        raw = await self.redis.get(self._key(session_id))
        if raw is None:
            return None
        session = EditorSession(**json.loads(raw))
        return session if session.expires_at > time.time() else None

    async def checked(self, session_id: str, session: EditorSession) -> EditorSession:
        renewed = EditorSession(**{**asdict(session), "checked_at": time.time()})
        await self.redis.set(self._key(session_id), json.dumps(asdict(renewed)), keepttl=True)
        return renewed

    async def end(self, session_id: str) -> None:
        await self.redis.delete(self._key(session_id))


# --- the owner's n8n session per tenant ---------------------------------------------------------


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that keeps nothing: n8n's cookies must never ride along to another instance."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None


@dataclass(frozen=True)
class Upstream:
    url: str
    cookie: str = ""

    def headers(self) -> dict[str, str]:
        return {"Cookie": f"{AUTH_COOKIE}={self.cookie}"}


class OwnerSessions:
    """One n8n owner session per tenant, logged in on first use and again after a 401."""

    def __init__(self, db: Database, keyring: Keyring, http: httpx.AsyncClient) -> None:
        self.db = db
        self.secrets = InstanceSecretBox(keyring)
        self.http = http
        self._cache: dict[uuid.UUID, Upstream] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}

    async def get(self, tenant_id: uuid.UUID) -> Upstream:
        cached = self._cache.get(tenant_id)
        if cached is not None:
            return cached
        async with self._locks.setdefault(tenant_id, asyncio.Lock()):
            cached = self._cache.get(tenant_id)
            if cached is None:
                cached = self._cache[tenant_id] = await self._login(tenant_id)
            return cached

    def forget(self, tenant_id: uuid.UUID, stale: Upstream) -> None:
        if self._cache.get(tenant_id) is stale:
            del self._cache[tenant_id]

    async def _login(self, tenant_id: uuid.UUID) -> Upstream:
        async with self.db.transaction(STAFF) as session:
            row = await InstanceRepository(session).get(tenant_id)
        if row is None or row.actual_state is ActualState.DEPROVISIONED:
            raise NotFoundError("your tenant has no n8n instance")
        password = self.secrets.open(row, SecretField.OWNER_PASSWORD)
        if row.actual_state not in _REACHABLE or row.url is None:
            raise UnavailableError(
                f"your n8n instance is not running (it is {row.actual_state.value.lower()})",
                state=row.actual_state.value,
            )
        if password is None or row.owner_email is None:
            raise UnavailableError("your n8n instance is not set up yet")
        client = N8nClient(row.url, self.http, retry_for=LOGIN_RETRY_SECONDS)
        try:
            cookie = await client.login(row.owner_email, password.reveal())
        except N8nError as exc:
            raise UnavailableError(
                "your n8n instance could not be opened; try again shortly", reason=exc.code
            ) from exc
        return Upstream(row.url.rstrip("/"), cookie)


# --- the proxy ----------------------------------------------------------------------------------


class EditorProxy:
    def __init__(self, services: Services) -> None:
        self.services = services
        # The request client: its socket timeouts turn a Redis that stopped answering into
        # a 503 within seconds instead of a request that hangs.
        self.sessions = EditorSessions(services.redis_commands)
        # Its own client: no cookie jar, no read timeout (long-lived streams), and no idle
        # connections kept (loopback connects are cheap; nothing is left open to close).
        self.http = httpx.AsyncClient(
            cookies=_NoCookies(),
            timeout=httpx.Timeout(None, connect=10.0),
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self.owners = OwnerSessions(services.db, services.keyring, self.http)
        self.secure = services.settings.base_url.startswith("https://")

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/{slug}/login", self.login, methods=["GET"]),
            WebSocketRoute("/{slug}/rest/push", self.push),
            Route(
                "/{slug}/{path:path}",
                self.forward,
                methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            ),
        ]

    # --- login ----------------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        address = (request.client.host if request.client else None) or "unknown"
        token = request.query_params.get("token")
        authorization = f"Bearer {token}" if token else request.headers.get("authorization")
        try:
            return await self._login(request, slug, address, authorization)
        except Exception as exc:
            return self._outage(request, exc)

    async def _login(
        self, request: Request, slug: str, address: str, authorization: str | None
    ) -> Response:
        guard = self.services.guard
        try:
            if await guard.address_blocked(address, authorization) is not None:
                raise AuthenticationError("too many failed authentications with these credentials")
            try:
                principal = await self.services.authenticator.authenticate(authorization, slug)
            except AuthenticationError as error:
                await guard.record_auth_failure(address, authorization, error)
                raise
            if principal.tenant_slug != slug:
                raise ForbiddenError("you are not a member of that tenant")
            tenant_id = principal.require_role(MINIMUM_ROLE)
        except ZixlyError as error:
            return self._error(request, error)
        now = time.time()
        session_id = await self.sessions.create(
            EditorSession(
                tenant_id=str(tenant_id),
                tenant_slug=slug,
                user_id=str(principal.user_id),
                email=principal.email,
                expires_at=now + SESSION_SECONDS,
                checked_at=now,
            )
        )
        log.info("editor.opened", tenant_id=str(tenant_id), user_id=str(principal.user_id))
        response = RedirectResponse(editor_path(slug), status_code=303)
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=SESSION_SECONDS,
            path=editor_path(slug),
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )
        return response

    async def _session(self, connection: HTTPConnection, slug: str) -> tuple[str, EditorSession]:
        session_id = connection.cookies.get(COOKIE)
        session = await self.sessions.get(session_id) if session_id else None
        if session_id is None or session is None:
            raise AuthenticationError(
                f"no editor session: open {editor_path(slug)}login with your Zixly token"
            )
        if session.tenant_slug != slug:
            raise ForbiddenError("this editor session is for another tenant")
        if time.time() - session.checked_at >= RECHECK_SECONDS:
            if not await self._still_member(session):
                await self.sessions.end(session_id)
                raise ForbiddenError(f"requires role {MINIMUM_ROLE.value} or higher")
            session = await self.sessions.checked(session_id, session)
        return session_id, session

    async def _still_member(self, session: EditorSession) -> bool:
        params = {"email": session.email, "tenant": session.tenant_id}
        async with self.services.db.transaction(Scope.system()) as db:
            row = (await db.execute(_ROLE_LOOKUP, params)).first()
        return (
            row is not None
            and str(row.tenant_id) == session.tenant_id
            and row.role is not None
            and Role(row.role).rank >= MINIMUM_ROLE.rank
        )

    # --- HTTP -----------------------------------------------------------------------------------
    async def forward(self, request: Request) -> Response:
        try:
            return await self._forward(request)
        except Exception as exc:
            return self._outage(request, exc)

    async def _forward(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        try:
            session_id, session = await self._session(request, slug)
            path = upstream_path(request.path_params["path"])
            if blocked(request.method, path):
                raise ForbiddenError("this part of n8n is not available through Zixly")
            if request.method not in _SAFE_METHODS:
                self._check_origin(request)
            if _LOGOUT.search(path.lower()):
                return await self._logout(session_id, slug)
            body = await request.body()
            upstream = await self._send(uuid.UUID(session.tenant_id), request, path, body)
        except ZixlyError as error:
            return self._error(request, error)
        response = StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            background=BackgroundTask(upstream.aclose),
        )
        response.raw_headers = _response_headers(upstream.headers)
        return response

    async def _send(
        self, tenant_id: uuid.UUID, request: Request, path: str, body: bytes
    ) -> httpx.Response:
        headers = _request_headers(request.headers, request.url)
        for attempt in range(2):
            upstream = await self.owners.get(tenant_id)
            url = httpx.URL(upstream.url + quote(path, safe="/:@!$&'()*+,;=~"))
            outgoing = self.http.build_request(
                request.method,
                url.copy_with(query=request.url.query.encode() or None),
                headers={**headers, **upstream.headers()},
                content=body,
            )
            try:
                response = await self.http.send(outgoing, stream=True)
            except httpx.ConnectError as exc:
                self.owners.forget(tenant_id, upstream)  # restarted elsewhere? read it again
                if attempt:
                    raise UnavailableError("your n8n instance is not answering") from exc
                continue
            except httpx.HTTPError as exc:
                raise UnavailableError("your n8n instance failed to answer") from exc
            if response.status_code == 401 and not attempt:
                await response.aclose()
                self.owners.forget(tenant_id, upstream)  # n8n's session ended: log in again
                continue
            return response
        raise AssertionError("unreachable")

    def _check_origin(self, request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            raise ForbiddenError("cross-origin request refused")

    async def _logout(self, session_id: str, slug: str) -> Response:
        await self.sessions.end(session_id)
        response = JSONResponse({"data": {"loggedOut": True}})
        response.delete_cookie(
            COOKIE, path=editor_path(slug), secure=self.secure, httponly=True, samesite="strict"
        )
        return response

    def _outage(self, connection: HTTPConnection, exc: Exception) -> Response:
        """Redis or PostgreSQL could not serve: a typed 503 with Retry-After; else a bug."""
        typed = unavailable(exc)
        if typed is None:
            raise exc
        log.warning("editor.unavailable", reason=typed.message, cause=repr(exc))
        return error_response(typed, connection.scope.get("state", {}).get("request_id", ""))

    def _error(self, connection: HTTPConnection, error: ZixlyError) -> Response:
        request_id = connection.scope.get("state", {}).get("request_id", "")
        if error.http_status >= 500:
            log.warning("editor.unavailable", reason=error.message)
        return error_response(error, request_id)

    # --- the push channel -----------------------------------------------------------------------
    async def push(self, websocket: WebSocket) -> None:
        slug = websocket.path_params["slug"]
        try:
            _, session = await self._session(websocket, slug)
            upstream = await self.owners.get(uuid.UUID(session.tenant_id))
        except ZixlyError:
            await websocket.close(code=1008)
            return
        except Exception as exc:
            if unavailable(exc) is None:
                raise
            log.warning("editor.unavailable", cause=repr(exc))
            await websocket.close(code=TRY_AGAIN_LATER)
            return
        query = websocket.url.query
        url = upstream.url.replace("http", "ws", 1) + "/rest/push" + (f"?{query}" if query else "")
        headers = {**upstream.headers(), **_forwarded(websocket.headers, websocket.url)}
        origin = websocket.headers.get("origin")
        try:
            async with connect(
                url,
                additional_headers=headers,
                origin=Origin(origin) if origin else None,
                max_size=None,
            ) as n8n:
                await websocket.accept()
                await _relay(websocket, n8n)
        except (OSError, WebSocketException) as exc:
            log.warning("editor.push_failed", error=type(exc).__name__)
            with contextlib.suppress(RuntimeError):
                await websocket.close(code=1011)


async def _relay(browser: WebSocket, n8n: ClientConnection) -> None:
    async def downstream() -> None:
        async for message in n8n:
            if isinstance(message, bytes):
                await browser.send_bytes(message)
            else:
                await browser.send_text(message)

    async def upstream() -> None:
        while True:
            message = await browser.receive()
            if message["type"] == "websocket.disconnect":
                return
            binary: bytes | None = message.get("bytes")
            await n8n.send(binary if binary is not None else str(message.get("text", "")))

    tasks = [asyncio.create_task(downstream()), asyncio.create_task(upstream())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        with contextlib.suppress(ConnectionClosed, WebSocketDisconnect, RuntimeError):
            task.result()
    with contextlib.suppress(RuntimeError):
        await browser.close()


def _forwarded(headers: Mapping[str, str], url: Any) -> dict[str, str]:
    """So n8n's origin check compares the browser's Origin with the browser's host."""
    host = headers.get("host", "")
    scheme = "https" if url.scheme in ("https", "wss") else "http"
    return {"X-Forwarded-Host": host, "X-Forwarded-Proto": scheme} if host else {}


def _request_headers(headers: Mapping[str, str], url: Any) -> dict[str, str]:
    kept = {k: v for k, v in headers.items() if k.lower() not in _REQUEST_DROP}
    # The body is relayed as n8n sends it, so n8n may compress only what the client
    # accepts: left out, httpx's own default (gzip, deflate) would ask on the client's behalf.
    kept["accept-encoding"] = headers.get("accept-encoding") or "identity"
    return {**kept, **_forwarded(headers, url)}


def _response_headers(headers: httpx.Headers) -> list[tuple[bytes, bytes]]:
    kept = [
        (name.lower(), value)
        for name, value in headers.multi_items()
        if name.lower() not in _RESPONSE_DROP
    ]
    names = {name for name, _ in kept}
    if "x-frame-options" not in names:
        kept.append(("x-frame-options", "DENY"))
    if "content-security-policy" not in names:
        kept.append(("content-security-policy", "frame-ancestors 'none'"))
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in kept]


def editor_mount(services: Services) -> Mount:
    """The ``/editor`` routes; mounted by ``create_app``."""
    return Mount(PREFIX, routes=EditorProxy(services).routes())
