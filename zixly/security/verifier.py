"""Bearer-token verification: Zixly's own HS256 key and an external issuer's JWKS.

The algorithm decides the key source: HS256 only ever verifies with Zixly's own secret,
asymmetric algorithms only with the external issuer's published keys, so a public key
can never be used as an HMAC secret (algorithm confusion).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet, OctKey

from zixly.core.errors import AuthenticationError, UnavailableError
from zixly.core.logging import get_logger
from zixly.core.settings import Settings

log = get_logger("zixly.auth")
MAX_TOKEN_BYTES = 8192
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class RefusedClaims(AuthenticationError):
    """A token whose signature verified, refused for its claims (expired, too long-lived,
    wrong issuer or audience, no such user): genuinely the named account's token, which is
    what the per-account failure limit counts (zixly.security.guard)."""


class JwksCache:
    """The issuer's key set, fetched lazily and kept for ``ttl`` seconds.

    An unknown ``kid`` means the issuer rotated its keys: that forces one refresh, but at
    most every ``MIN_REFRESH_INTERVAL`` seconds, so tokens with made-up kids cannot make us
    hammer the issuer. After a failed fetch the keys we have keep serving and nobody asks
    again for ``RETRY_AFTER_FAILURE`` seconds (requests must not queue behind timeouts).
    """

    MIN_REFRESH_INTERVAL = 30.0
    RETRY_AFTER_FAILURE = 5.0
    MIN_TTL = 1.0
    FETCH_TIMEOUT = 5.0

    def __init__(self, url: str, ttl: float, client: httpx.AsyncClient) -> None:
        self.url = url
        self.ttl = max(ttl, self.MIN_TTL)
        self.client = client
        self._keys: KeySet | None = None
        self._fetched_at = -math.inf
        self._forced_at = -math.inf
        self._failed_at = -math.inf
        self._lock = asyncio.Lock()

    async def get(self, kid: str | None) -> KeySet:
        if self._due(kid):
            async with self._lock:
                reason = self._due(kid)  # another request may have refreshed meanwhile
                if reason:
                    await self._refresh(forced=reason == "unknown kid")
        if self._keys is None:
            raise UnavailableError("the identity provider's JWKS could not be fetched")
        return self._keys

    def _due(self, kid: str | None) -> str | None:
        now = time.monotonic()
        if now - self._failed_at < self.RETRY_AFTER_FAILURE:
            return None
        if self._keys is None or now - self._fetched_at > self.ttl:
            return "stale"
        if (
            kid is not None
            and not any(key.kid == kid for key in self._keys.keys)
            and now - self._forced_at >= self.MIN_REFRESH_INTERVAL
        ):
            return "unknown kid"
        return None

    async def _refresh(self, *, forced: bool) -> None:
        if forced:
            self._forced_at = time.monotonic()
        try:
            response = await self.client.get(self.url, timeout=self.FETCH_TIMEOUT)
            response.raise_for_status()
            keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, TypeError, KeyError, JoseError) as exc:
            self._failed_at = time.monotonic()
            log.warning("jwks.fetch_failed", url=self.url, error=repr(exc))
            return  # keep serving with the keys we have, if any
        self._keys = keys
        self._fetched_at = time.monotonic()


VERIFIED_TOKEN_MAX_AGE = 60.0
VERIFIED_TOKEN_CACHE_SIZE = 10_000


class VerifiedTokens:
    """Claims of recently verified tokens, so a client's burst of requests verifies once.

    An entry lives at most ``max_age`` seconds and never past the token's own ``exp``:
    a token from a key the issuer has just withdrawn stays accepted for at most a minute.
    Bounded (least recently used out), and keyed by the whole token string, so a token
    differing in any byte is verified afresh.
    """

    def __init__(self, *, max_age: float, leeway: int, size: int = VERIFIED_TOKEN_CACHE_SIZE):
        self.max_age = max_age
        self.leeway = leeway
        self.size = size
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, token: str) -> dict[str, Any] | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        until, claims = entry
        if time.time() >= until:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return claims

    def put(self, token: str, claims: dict[str, Any]) -> None:
        expires = claims.get("exp")
        until = time.time() + self.max_age
        if isinstance(expires, int | float):
            until = min(until, float(expires) + self.leeway)
        self._entries[token] = (until, claims)
        self._entries.move_to_end(token)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class TokenVerifier:
    def __init__(
        self, settings: Settings, secret: bytes, http: httpx.AsyncClient | None = None
    ) -> None:
        self.settings = settings
        self._own_key = OctKey.import_key(secret)
        self._verified = VerifiedTokens(
            max_age=VERIFIED_TOKEN_MAX_AGE, leeway=settings.jwt_leeway_seconds
        )
        self._jwks: JwksCache | None = None
        if settings.external_jwks_url:
            _check_external_settings(settings)
            self._jwks = JwksCache(
                settings.external_jwks_url, settings.jwks_cache_seconds, http or httpx.AsyncClient()
            )

    async def verify(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthenticationError("malformed token: too large")
        cached = self._verified.get(token)
        if cached is not None:
            return dict(cached)
        claims = await self._verify(token)
        self._verified.put(token, claims)
        return dict(claims)

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError, UnicodeError) as exc:
            raise AuthenticationError("malformed token: not a compact JWS") from exc
        alg = header.get("alg")
        issuer: str | None
        audience: str | None
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
        except InvalidKeyIdError as exc:
            raise AuthenticationError("token is signed with an unknown key (kid)") from exc
        except JoseError as exc:
            raise AuthenticationError(f"invalid token: {exc.description or exc.error}") from exc
        self._validate_claims(decoded.claims, issuer, audience)
        return dict(decoded.claims)

    def _validate_claims(
        self, claims: dict[str, Any], issuer: str | None, audience: str | None
    ) -> None:
        # exp and iat are both required: the lifetime (exp - iat) is bounded below.
        options: dict[str, Any] = {"exp": {"essential": True}, "iat": {"essential": True}}
        if issuer:
            options["iss"] = {"essential": True, "value": issuer}
        if audience:
            options["aud"] = {"essential": True, "value": audience}
        registry = jwt.JWTClaimsRegistry(leeway=self.settings.jwt_leeway_seconds, **options)
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise RefusedClaims("token expired") from exc
        except MissingClaimError as exc:
            raise RefusedClaims(f"token is missing a required claim: {exc.claim!r}") from exc
        except InvalidClaimError as exc:
            claim = getattr(exc, "claim", "")
            if claim == "aud":
                raise RefusedClaims("token has the wrong audience") from exc
            if claim == "iss":
                raise RefusedClaims("token has the wrong issuer") from exc
            raise RefusedClaims(f"token claim is invalid: {exc}") from exc
        except JoseError as exc:
            raise RefusedClaims(f"invalid token: {exc.description or exc.error}") from exc
        lifetime = claims["exp"] - claims["iat"]
        maximum = self.settings.jwt_max_lifetime_seconds
        if lifetime > maximum:
            raise RefusedClaims(
                f"token lifetime (exp - iat) of {lifetime:.0f}s exceeds the maximum of {maximum}s"
            )


def _check_external_settings(settings: Settings) -> None:
    """Refuse to start with an external issuer that would accept too much.

    Without a required audience, any token the issuer signs for another application would
    be accepted (Auth0 and Keycloak share keys across a tenant's APIs); a symmetric
    algorithm would let whoever knows a published oct key sign tokens.
    """
    if not settings.external_issuer or not settings.external_audience:
        raise ValueError(
            "ZIXLY_EXTERNAL_ISSUER and ZIXLY_EXTERNAL_AUDIENCE are required with "
            "ZIXLY_EXTERNAL_JWKS_URL"
        )
    unsafe = set(settings.external_algorithms) - ASYMMETRIC_ALGORITHMS
    if unsafe:
        raise ValueError(
            f"ZIXLY_EXTERNAL_ALGORITHMS may only name asymmetric algorithms, not {sorted(unsafe)}"
        )


def claim(claims: dict[str, Any], path: str) -> Any:
    """Read a claim by dotted path (``app_metadata.tenant_id``)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
