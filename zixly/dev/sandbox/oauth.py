"""A provider sandbox: every provider's token endpoint, at the provider's own path under
``/<provider>`` (so ``provider_base_urls={"xero": f"{url}/xero"}`` points Zixly at it).

It behaves like the providers (docs/au-rules-and-provider-apis.md): a form-encoded
``grant_type=refresh_token``, client authentication as the provider requires (HTTP Basic
for Xero, form fields elsewhere), JSON ``{access_token, refresh_token, expires_in,
token_type, scope}``, and single-use refresh tokens where the provider rotates them (a used
one answers 400 ``{"error": "invalid_grant"}``). Tests can queue faults (429 with
Retry-After, 5xx, latency) and read how often each refresh token was presented.

The authorization-code flow is real too: ``GET <authorize_path>`` checks the client id, the
redirect URI and the PKCE challenge (S256 only), then consents on the user's behalf (or
refuses with ``error=access_denied`` while ``consent`` is False) and redirects to the
redirect URI with a code and the state. The code is single use, expires, and is exchanged
only with the same redirect URI and the verifier matching the challenge (a second use also
revokes what the first issued, as RFC 6749 10.5 suggests). Revocation answers at each
provider's own endpoint (Xero, Asana: RFC 7009 POST; HubSpot: DELETE with the token in
the path); a revoked refresh token answers ``invalid_grant`` from then on.

Each provider's data API (zixly/dev/sandbox/apis.py) is mounted beside its OAuth endpoints; the
access tokens issued here are remembered with their expiry, and the data APIs answer 401 to
any other token (zixly/dev/sandbox/server.py serves the whole sandbox on a loopback port).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from zixly.dev.sandbox.apis import data_routes
from zixly.dev.sandbox.common import DataApis
from zixly.providers.registry import PROVIDERS, Provider


@dataclass
class Fault:
    status: int = 500
    delay: float = 0.0  # seconds before answering (a client timeout shorter than this fires)
    retry_after: str | None = None


@dataclass
class IssuedCode:
    """An authorization code as the authorize endpoint handed it out."""

    provider: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: str
    issued_at: float
    used: bool = False
    refresh_token: str | None = None  # what its exchange issued (revoked on a replay)


@dataclass
class ProviderSandbox:
    clients: dict[str, tuple[str, str]] = field(default_factory=dict)  # provider -> id, secret
    live: dict[str, str] = field(default_factory=dict)  # refresh token -> provider
    used: set[str] = field(default_factory=set)
    calls: Counter[str] = field(default_factory=Counter)  # refresh token -> presentations
    faults: list[Fault] = field(default_factory=list)
    delay: float = 0.0  # latency of every successful answer
    consent: bool = True  # False: the user refuses at the authorize page (access_denied)
    code_ttl: float = 300.0  # seconds an authorization code stays exchangeable
    codes: dict[str, IssuedCode] = field(default_factory=dict)
    authorizations: list[dict[str, str]] = field(default_factory=list)  # authorize queries
    revoked: list[str] = field(default_factory=list)  # refresh tokens, in revocation order
    # Access tokens issued here -> (provider, expiry as time.time()): the data APIs
    # (zixly.dev.sandbox.apis) answer 401 to any other token, or to one past its expiry.
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    data: DataApis = field(default_factory=DataApis)  # the data APIs' data, faults, log

    def issue_access_token(self, provider: str, lifetime: float | None = None) -> str:
        """A new access token for ``provider``'s data API, valid for ``lifetime`` seconds
        (default: the provider's access-token lifetime), as a token endpoint issues it."""
        seconds = (
            PROVIDERS[provider].access_token_lifetime.total_seconds()
            if lifetime is None
            else lifetime
        )
        token = f"{provider}-at-{secrets.token_urlsafe(12)}"
        self.access_tokens[token] = (provider, time.time() + seconds)
        return token

    def access_token_state(self, provider: str, token: str) -> str:
        """ "ok", "expired" or "unknown" (never issued here, or for another provider)."""
        issued = self.access_tokens.get(token)
        if issued is None or issued[0] != provider:
            return "unknown"
        return "ok" if time.time() < issued[1] else "expired"

    def grant(self, provider: str) -> str:
        """A new refresh token, as a user's consent would produce."""
        token = f"{provider}-rt-{secrets.token_urlsafe(12)}"
        self.live[token] = provider
        return token

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def app(self) -> Starlette:
        routes = [
            Mount(f"/{p.name}", routes=[*self._oauth_routes(p), *data_routes(self, p.name)])
            for p in PROVIDERS.values()
        ]
        return Starlette(routes=routes)

    def _oauth_routes(self, spec: Provider) -> list[Route]:
        """One provider's OAuth endpoints (token, authorize, revocation), at its own paths."""

        async def authorize(request: Request) -> Response:
            return self._authorize(spec, request)

        async def revoke(request: Request) -> Response:
            return await self._revoke(spec, request)

        routes = [
            Route(spec.exchange_path, self._endpoint(spec), methods=["POST"]),
            Route(spec.authorize_path, authorize, methods=["GET"]),
        ]
        if spec.revocation_path is not None:
            path = spec.revocation_path.replace("{token}", "{token:path}")
            routes.append(Route(path, revoke, methods=[spec.revocation_method]))
        return routes

    def _endpoint(self, spec: Provider) -> Callable[[Request], Awaitable[Response]]:
        async def token(request: Request) -> Response:
            return await self._token(spec, request)

        return token

    async def _token(self, spec: Provider, request: Request) -> Response:
        # Form-encoded, as the providers take it (parsed here: no multipart dependency).
        form = dict(parse_qsl((await request.body()).decode()))
        presented = str(form.get("refresh_token", ""))
        if form.get("grant_type") != "authorization_code":
            self.calls[presented] += 1
        if self.faults:
            fault = self.faults.pop(0)
            await asyncio.sleep(fault.delay)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return JSONResponse({"error": "sandbox_fault"}, fault.status, headers=headers)
        if not self._client_ok(spec, request, form):
            return JSONResponse({"error": "invalid_client"}, 401)
        if form.get("grant_type") == "authorization_code":
            return await self._exchange_code(spec, request, form)
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        if self.live.get(presented) != spec.name or presented in self.used:
            return JSONResponse({"error": "invalid_grant"}, 400)
        await asyncio.sleep(self.delay)
        refresh = presented
        if spec.rotates_refresh_tokens:
            self.used.add(presented)
            refresh = self.grant(spec.name)
        return self._tokens(spec, refresh, " ".join(spec.scopes))

    def _tokens(self, spec: Provider, refresh: str, scope: str) -> JSONResponse:
        return JSONResponse(
            {
                "access_token": self.issue_access_token(spec.name),
                "refresh_token": refresh,
                "expires_in": int(spec.access_token_lifetime.total_seconds()),
                "token_type": "Bearer",
                "scope": scope,
            }
        )

    # --- the authorization-code flow ------------------------------------------------------------

    def _authorize(self, spec: Provider, request: Request) -> Response:
        query = dict(request.query_params)
        self.authorizations.append({"provider": spec.name, **query})
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri", "")
        expected = self.clients.get(spec.name)
        # RFC 6749 4.1.2.1: a bad client or redirect URI is shown, never redirected to.
        if not client_id or (expected is not None and client_id != expected[0]):
            return JSONResponse({"error": "invalid_client"}, 400)
        if urlsplit(redirect_uri).scheme not in ("http", "https"):
            return JSONResponse({"error": "invalid_request", "detail": "redirect_uri"}, 400)
        state = query.get("state")

        def back(**params: str) -> Response:
            if state is not None:
                params["state"] = state
            sep = "&" if "?" in redirect_uri else "?"
            return RedirectResponse(f"{redirect_uri}{sep}{urlencode(params)}", 302)

        if query.get("response_type") != "code":
            return back(error="unsupported_response_type")
        challenge = query.get("code_challenge", "")
        if query.get("code_challenge_method") != "S256" or not challenge:
            return back(error="invalid_request", error_description="PKCE S256 is required")
        if not self.consent:
            return back(error="access_denied", error_description="the user refused")
        code = secrets.token_urlsafe(24)
        self.codes[code] = IssuedCode(
            provider=spec.name,
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=challenge,
            scope=query.get("scope", ""),
            issued_at=time.monotonic(),
        )
        return back(code=code)

    async def _exchange_code(
        self, spec: Provider, request: Request, form: dict[str, str]
    ) -> Response:
        issued = self.codes.get(str(form.get("code", "")))
        if issued is None or issued.provider != spec.name:
            return JSONResponse({"error": "invalid_grant"}, 400)
        if issued.used:  # a replayed code: refuse it and revoke what it granted
            if issued.refresh_token is not None:
                self._revoke_token(issued.refresh_token)
            return JSONResponse({"error": "invalid_grant"}, 400)
        issued.used = True
        presented_client = (
            form.get("client_id")
            or ((_basic(request.headers.get("authorization", "")) or ("", ""))[0])
        )
        verifier = str(form.get("code_verifier", ""))
        if (
            time.monotonic() - issued.issued_at > self.code_ttl
            or (presented_client and presented_client != issued.client_id)
            or form.get("redirect_uri") != issued.redirect_uri
            or not verifier
            or create_s256_code_challenge(verifier) != issued.code_challenge
        ):
            return JSONResponse({"error": "invalid_grant"}, 400)
        await asyncio.sleep(self.delay)
        issued.refresh_token = self.grant(spec.name)
        return self._tokens(spec, issued.refresh_token, issued.scope)

    # --- revocation -------------------------------------------------------------------------

    async def _revoke(self, spec: Provider, request: Request) -> Response:
        if self.faults:
            fault = self.faults.pop(0)
            await asyncio.sleep(fault.delay)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return JSONResponse({"error": "sandbox_fault"}, fault.status, headers=headers)
        if spec.revocation_method == "DELETE":  # HubSpot: the token is the path
            token = request.path_params.get("token", "")
            if self.live.get(token) != spec.name or token in self.used:
                return JSONResponse({"status": "error", "message": "not found"}, 404)
            self._revoke_token(token)
            return Response(status_code=204)
        form = dict(parse_qsl((await request.body()).decode()))
        if not self._client_ok(spec, request, form):
            return JSONResponse({"error": "invalid_client"}, 401)
        token = str(form.get("token", ""))
        if self.live.get(token) == spec.name:  # RFC 7009: an unknown token is no error
            self._revoke_token(token)
        return Response(status_code=200)

    def _revoke_token(self, token: str) -> None:
        self.live.pop(token, None)
        self.revoked.append(token)

    def _client_ok(self, spec: Provider, request: Request, form: dict[str, str]) -> bool:
        expected = self.clients.get(spec.name)
        if expected is None:
            return True
        if spec.client_auth == "basic":
            return _basic(request.headers.get("authorization", "")) == expected
        return (str(form.get("client_id", "")), str(form.get("client_secret", ""))) == expected


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password
