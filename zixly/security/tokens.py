"""Zixly's own HS256 tokens (dev and service tokens)."""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import OctKey

from zixly.core.errors import ValidationError
from zixly.core.settings import Settings

MIN_SECRET_BYTES = 32


def load_signing_secret(settings: Settings) -> bytes:
    """The configured secret, or in dev one generated once and kept in the data dir."""
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value().encode()
    else:
        path = Path(settings.data_dir) / "jwt-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(48))
            tmp.chmod(0o600)
            tmp.replace(path)
        secret = path.read_text().strip().encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"ZIXLY_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def checked_ttl(settings: Settings, ttl_seconds: int | None) -> int:
    """The lifetime a new token gets; never more than the verifier accepts."""
    ttl = ttl_seconds if ttl_seconds is not None else settings.jwt_ttl_seconds
    if not 0 < ttl <= settings.jwt_max_lifetime_seconds:
        raise ValidationError(
            f"a token lifetime must be between 1 and {settings.jwt_max_lifetime_seconds}s "
            f"(ZIXLY_JWT_MAX_LIFETIME_SECONDS), not {ttl}s",
            field="ttl",
        )
    return ttl


def mint_token(
    settings: Settings,
    secret: bytes,
    *,
    email: str,
    subject: uuid.UUID | str,
    tenant: str | None = None,
    ttl_seconds: int | None = None,
    now: int | None = None,
) -> str:
    issued = int(time.time()) if now is None else now
    ttl = checked_ttl(settings, ttl_seconds)
    claims: dict[str, object] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(subject),
        settings.email_claim: email,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "jti": secrets.token_hex(8),
    }
    if tenant is not None:
        # A dotted claim name (e.g. app_metadata.tenant_id) is a nested object.
        *parents, leaf = settings.tenant_claim.split(".")
        target = claims
        for part in parents:
            nested: dict[str, object] = {}
            target[part] = nested
            target = nested
        target[leaf] = tenant
    return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, OctKey.import_key(secret))
