"""The one adapter around provider token endpoints (RFC 6749 refresh_token grant).

Outside failures become typed Zixly errors: a rejected grant (``invalid_grant``) is final,
a 429 carries ``retry_after``, and timeouts, connection failures and 5xx are retryable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from zixly.crypto import Secret
from zixly.errors import RateLimitedError, UnavailableError, ZixlyError
from zixly.integrations.registry import Provider
from zixly.settings import Settings


class ProviderError(ZixlyError):
    """The provider answered, but not with tokens (and retrying will not help)."""

    code = "PROVIDER_ERROR"
    http_status = 502
    retryable = False


class InvalidGrantError(ProviderError):
    """The refresh token is revoked, expired or already used: the user must reconnect."""

    code = "PROVIDER_INVALID_GRANT"


class ProviderRateLimitedError(RateLimitedError):
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None, **details: Any) -> None:
        super().__init__(message, retry_after=retry_after, **details)
        self.retry_after = retry_after


class ProviderUnavailableError(UnavailableError):
    """Timeout, connection failure or 5xx: nothing changed at the provider, try again."""

    retryable = True


@dataclass(frozen=True)
class TokenSet:
    access_token: Secret
    refresh_token: Secret | None  # None: the provider kept the old one
    expires_in: timedelta
    scope: str | None = None


class OAuthClient:
    """Calls token endpoints with an injected ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self.http = http
        self.settings = settings

    async def refresh(
        self, provider: Provider, refresh_token: Secret, **url_params: str
    ) -> TokenSet:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token.reveal()}
        auth: httpx.BasicAuth | None = None
        client = self.settings.oauth_clients.get(provider.name)
        if client is not None:
            secret = client.client_secret.get_secret_value()
            if provider.client_auth == "basic":
                auth = httpx.BasicAuth(client.client_id, secret)
            else:
                form.update(client_id=client.client_id, client_secret=secret)
        url = provider.token_url(self.settings, **url_params)
        try:
            response = await self.http.post(
                url,
                data=form,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                headers={"Accept": "application/json"},
                timeout=self.settings.oauth_timeout_seconds,
            )
        except httpx.TimeoutException as exc:
            raise ProviderUnavailableError(
                f"{provider.name} token endpoint timed out", provider=provider.name
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(
                f"{provider.name} token endpoint unreachable", provider=provider.name
            ) from exc
        return _parse(provider, response)


def _parse(provider: Provider, response: httpx.Response) -> TokenSet:
    name = provider.name
    if response.status_code == 429:
        raise ProviderRateLimitedError(
            f"{name} rate-limited the token endpoint",
            retry_after=_retry_after(response.headers.get("Retry-After")),
            provider=name,
        )
    if response.status_code >= 500:
        raise ProviderUnavailableError(
            f"{name} token endpoint failed ({response.status_code})",
            provider=name,
            status=response.status_code,
        )
    body = _json(response) or {}
    if response.status_code != 200:
        error = str(body.get("error", ""))
        if error == "invalid_grant":
            raise InvalidGrantError(f"{name} rejected the refresh token", provider=name)
        raise ProviderError(
            f"{name} token endpoint answered {response.status_code}",
            provider=name,
            status=response.status_code,
            error=error or None,
        )
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise ProviderError(f"{name} token response has no access_token", provider=name)
    refresh = body.get("refresh_token")
    expires_in = body.get("expires_in")
    seconds = (
        float(expires_in)
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
        else provider.access_token_lifetime.total_seconds()
    )
    return TokenSet(
        access_token=Secret(access),
        refresh_token=Secret(refresh) if isinstance(refresh, str) and refresh else None,
        expires_in=timedelta(seconds=seconds),
        scope=body.get("scope") if isinstance(body.get("scope"), str) else None,
    )


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (HTTP dates are not used by these providers)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0)
