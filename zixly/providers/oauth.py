"""The one adapter around provider token endpoints: the refresh_token and authorization_code
grants (RFC 6749, with PKCE, RFC 7636) and revocation (RFC 7009, or the provider's own).

Outside failures become typed Zixly errors: a rejected grant (``invalid_grant``) is final,
a 429 carries ``retry_after``, and timeouts, connection failures and 5xx are retryable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from zixly.core.errors import RateLimitedError, UnavailableError, ZixlyError
from zixly.core.settings import Settings
from zixly.providers.registry import Provider
from zixly.security.crypto import Secret


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
        response = await self._post_form(
            provider, provider.token_url(self.settings, **url_params), form
        )
        return _parse(provider, response, "the refresh token")

    async def exchange_code(
        self,
        provider: Provider,
        code: str,
        *,
        redirect_uri: str,
        code_verifier: Secret,
        **url_params: str,
    ) -> TokenSet:
        """The authorization_code grant (RFC 6749 4.1.3) with the PKCE verifier (RFC 7636)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier.reveal(),
        }
        response = await self._post_form(
            provider, provider.token_url(self.settings, **url_params), form
        )
        return _parse(provider, response, "the authorization code")

    async def revoke(self, provider: Provider, refresh_token: Secret, **url_params: str) -> bool:
        """Revoke the grant behind ``refresh_token``; False when the provider has no
        revocation endpoint. A token the provider no longer knows counts as revoked."""
        url = provider.revocation_url(self.settings, refresh_token.reveal(), **url_params)
        if url is None:
            return False
        if provider.revocation_method == "DELETE":
            response = await self._send(provider, "DELETE", url)
        else:
            response = await self._post_form(provider, url, {"token": refresh_token.reveal()})
        _check_revocation(provider, response)
        return True

    async def _post_form(
        self, provider: Provider, url: str, form: dict[str, str]
    ) -> httpx.Response:
        """POST a form with the client authentication the provider requires."""
        auth: httpx.BasicAuth | None = None
        client = self.settings.oauth_clients.get(provider.name)
        if client is not None:
            secret = client.client_secret.get_secret_value()
            if provider.client_auth == "basic":
                auth = httpx.BasicAuth(client.client_id, secret)
            else:
                form.update(client_id=client.client_id, client_secret=secret)
        return await self._send(provider, "POST", url, data=form, auth=auth)

    async def _send(
        self,
        provider: Provider,
        method: str,
        url: str,
        *,
        data: dict[str, str] | None = None,
        auth: httpx.BasicAuth | None = None,
    ) -> httpx.Response:
        try:
            return await self.http.request(
                method,
                url,
                data=data,
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


def _check_transient(provider: Provider, response: httpx.Response) -> None:
    """429 and 5xx: nothing was decided at the provider, the caller may retry."""
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


def _check_revocation(provider: Provider, response: httpx.Response) -> None:
    _check_transient(provider, response)
    if response.status_code < 300 or response.status_code == 404:
        return  # revoked, or unknown to the provider already (HubSpot answers 404)
    error = str((_json(response) or {}).get("error", ""))
    if error in ("invalid_grant", "invalid_token"):
        return
    raise ProviderError(
        f"{provider.name} revocation endpoint answered {response.status_code}",
        provider=provider.name,
        status=response.status_code,
        error=error or None,
    )


def _parse(provider: Provider, response: httpx.Response, grant: str) -> TokenSet:
    name = provider.name
    _check_transient(provider, response)
    body = _json(response) or {}
    if response.status_code != 200:
        error = str(body.get("error", ""))
        if error == "invalid_grant":
            raise InvalidGrantError(f"{name} rejected {grant}", provider=name)
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
