"""A provider sandbox: every provider's token endpoint, at the provider's own path under
``/<provider>`` (so ``provider_base_urls={"xero": f"{url}/xero"}`` points Zixly at it).

It behaves like the providers (docs/au-rules-and-provider-apis.md): a form-encoded
``grant_type=refresh_token``, client authentication as the provider requires (HTTP Basic
for Xero, form fields elsewhere), JSON ``{access_token, refresh_token, expires_in,
token_type, scope}``, and single-use refresh tokens where the provider rotates them (a used
one answers 400 ``{"error": "invalid_grant"}``). Tests can queue faults (429 with
Retry-After, 5xx, latency) and read how often each refresh token was presented.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from zixly.integrations.registry import PROVIDERS, Provider


@dataclass
class Fault:
    status: int = 500
    delay: float = 0.0  # seconds before answering (a client timeout shorter than this fires)
    retry_after: str | None = None


@dataclass
class ProviderSandbox:
    clients: dict[str, tuple[str, str]] = field(default_factory=dict)  # provider -> id, secret
    live: dict[str, str] = field(default_factory=dict)  # refresh token -> provider
    used: set[str] = field(default_factory=set)
    calls: Counter[str] = field(default_factory=Counter)  # refresh token -> presentations
    faults: list[Fault] = field(default_factory=list)
    delay: float = 0.0  # latency of every successful answer

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
            Mount(
                f"/{p.name}", routes=[Route(p.exchange_path, self._endpoint(p), methods=["POST"])]
            )
            for p in PROVIDERS.values()
        ]
        return Starlette(routes=routes)

    def _endpoint(self, spec: Provider) -> Callable[[Request], Awaitable[Response]]:
        async def token(request: Request) -> Response:
            return await self._token(spec, request)

        return token

    async def _token(self, spec: Provider, request: Request) -> Response:
        # Form-encoded, as the providers take it (parsed here: no multipart dependency).
        form = dict(parse_qsl((await request.body()).decode()))
        presented = str(form.get("refresh_token", ""))
        self.calls[presented] += 1
        if self.faults:
            fault = self.faults.pop(0)
            await asyncio.sleep(fault.delay)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return JSONResponse({"error": "sandbox_fault"}, fault.status, headers=headers)
        if not self._client_ok(spec, request, form):
            return JSONResponse({"error": "invalid_client"}, 401)
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        if self.live.get(presented) != spec.name or presented in self.used:
            return JSONResponse({"error": "invalid_grant"}, 400)
        await asyncio.sleep(self.delay)
        refresh = presented
        if spec.rotates_refresh_tokens:
            self.used.add(presented)
            refresh = self.grant(spec.name)
        return JSONResponse(
            {
                "access_token": f"{spec.name}-at-{secrets.token_urlsafe(12)}",
                "refresh_token": refresh,
                "expires_in": int(spec.access_token_lifetime.total_seconds()),
                "token_type": "Bearer",
                "scope": " ".join(spec.scopes),
            }
        )

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
