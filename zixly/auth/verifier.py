"""Bearer-token verification: Zixly's own HS256 key and an external issuer's JWKS.

The algorithm decides the key source: HS256 only ever verifies with Zixly's own secret,
asymmetric algorithms only with the external issuer's published keys, so a public key
can never be used as an HMAC secret (algorithm confusion).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet, OctKey

from zixly.errors import AuthenticationError, UnavailableError
from zixly.settings import Settings

MAX_TOKEN_BYTES = 8192


class JwksCache:
    """The issuer's key set, refreshed on expiry or on an unknown ``kid`` (at most every 30 s)."""

    MIN_REFRESH_INTERVAL = 30.0

    def __init__(self, url: str, ttl: float, client: httpx.AsyncClient) -> None:
        self.url = url
        self.ttl = ttl
        self.client = client
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, kid: str | None) -> KeySet:
        now = time.monotonic()
        stale = self._keys is None or now - self._fetched_at > self.ttl
        unknown = kid is not None and self._keys is not None and not self._has(kid)
        if stale or (unknown and now - self._fetched_at > self.MIN_REFRESH_INTERVAL):
            async with self._lock:
                if self._keys is None or time.monotonic() - self._fetched_at > 1.0:
                    await self._refresh()
        assert self._keys is not None
        return self._keys

    def _has(self, kid: str) -> bool:
        assert self._keys is not None
        return any(key.kid == kid for key in self._keys.keys)

    async def _refresh(self) -> None:
        try:
            response = await self.client.get(self.url, timeout=5.0)
            response.raise_for_status()
            self._keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            if self._keys is None:
                raise UnavailableError("the identity provider's JWKS could not be fetched") from exc
            return  # keep serving with the keys we have
        self._fetched_at = time.monotonic()


class TokenVerifier:
    def __init__(
        self, settings: Settings, secret: bytes, http: httpx.AsyncClient | None = None
    ) -> None:
        self.settings = settings
        self._own_key = OctKey.import_key(secret)
        self._jwks = (
            JwksCache(
                settings.external_jwks_url,
                settings.jwks_cache_seconds,
                http or httpx.AsyncClient(),
            )
            if settings.external_jwks_url
            else None
        )

    async def verify(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthenticationError("malformed token: too large")
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError, UnicodeError) as exc:
            raise AuthenticationError("malformed token: not a compact JWS") from exc
        alg = header.get("alg")
        if alg == "HS256":
            key: Any = self._own_key
            issuer, audience = self.settings.jwt_issuer, self.settings.jwt_audience
        elif self._jwks is not None and alg in self.settings.external_algorithms:
            key = await self._jwks.get(header.get("kid"))
            issuer, audience = self.settings.external_issuer, self.settings.external_audience
        else:
            raise AuthenticationError(f"unsupported token algorithm: {alg!r}")
        try:
            decoded = jwt.decode(token, key, algorithms=[alg])
        except BadSignatureError as exc:
            raise AuthenticationError("invalid token signature") from exc
        except JoseError as exc:
            raise AuthenticationError(f"invalid token: {exc.description or exc.error}") from exc
        self._validate_claims(decoded.claims, issuer, audience)
        return dict(decoded.claims)

    def _validate_claims(
        self, claims: dict[str, Any], issuer: str | None, audience: str | None
    ) -> None:
        options: dict[str, Any] = {"exp": {"essential": True}}
        if issuer:
            options["iss"] = {"essential": True, "value": issuer}
        if audience:
            options["aud"] = {"essential": True, "value": audience}
        registry = jwt.JWTClaimsRegistry(leeway=self.settings.jwt_leeway_seconds, **options)
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise AuthenticationError("token expired") from exc
        except MissingClaimError as exc:
            raise AuthenticationError(f"token is missing a required claim: {exc}") from exc
        except InvalidClaimError as exc:
            claim = getattr(exc, "claim", "")
            if claim == "aud":
                raise AuthenticationError("token has the wrong audience") from exc
            if claim == "iss":
                raise AuthenticationError("token has the wrong issuer") from exc
            raise AuthenticationError(f"token claim is invalid: {exc}") from exc
        except JoseError as exc:
            raise AuthenticationError(f"invalid token: {exc.description or exc.error}") from exc


def claim(claims: dict[str, Any], path: str) -> Any:
    """Read a claim by dotted path (``app_metadata.tenant_id``)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
