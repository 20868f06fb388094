"""From an Authorization header to a Principal, with tenant and role read from the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from zixly.core.bounds import storable
from zixly.core.errors import AuthenticationError, BadRequestError, ForbiddenError
from zixly.core.outages import typed_outages
from zixly.core.settings import Settings
from zixly.db.session import Database, Scope, UnitOfWork
from zixly.security.principal import Principal, Role
from zixly.security.verifier import RefusedClaims, TokenVerifier, claim

_LOOKUP = text(
    "SELECT user_id, is_staff, tenant_id, tenant_slug, role, tenant_choices "
    "FROM zixly_auth_principal(:email, :tenant, :issued_at)"
)
# The same look-up, applying the request's scope from its own result (see UnitOfWork.open_with).
_LOOKUP_AND_SCOPE = text(
    "SELECT user_id, is_staff, tenant_id, tenant_slug, role, tenant_choices, "
    "set_config('app.tenant_id', coalesce(tenant_id::text, ''), true), "
    "set_config('app.user_id', user_id::text, true), "
    "set_config('statement_timeout', :timeout, true) "
    "FROM zixly_auth_principal(:email, :tenant, :issued_at)"
)


def issued_at(claims: dict[str, Any]) -> datetime | None:
    """The token's ``iat`` (None when absent or not a number): a token without a tenant
    choice keeps the memberships that existed when it was issued."""
    value = claims.get("iat")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def valid_until(claims: dict[str, Any], leeway: int) -> float | None:
    """Until when the verifier accepts a token with these (verified) claims."""
    value = claims.get("exp")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) + leeway


class MissingCredentials(AuthenticationError):
    """No credentials at all: RFC 6750 answers with a challenge but no error code."""

    bearer_error: str | None = None


class MalformedCredentials(AuthenticationError):
    bearer_error: str | None = "invalid_request"


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise MissingCredentials("missing bearer token: send 'Authorization: Bearer <jwt>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MalformedCredentials("malformed Authorization header: expected 'Bearer <jwt>'")
    return token.strip()


class Authenticator:
    def __init__(self, settings: Settings, verifier: TokenVerifier, db: Database) -> None:
        self.settings = settings
        self.verifier = verifier
        self.db = db

    async def authenticate(
        self,
        authorization: str | None,
        tenant_header: str | None = None,
        *,
        uow: UnitOfWork | None = None,
    ) -> Principal:
        """Verify the token and load the principal.

        With ``uow`` the look-up opens that unit of work already scoped to the principal's
        tenant; without, it runs in a transaction of its own (WebSocket connections).
        """
        if tenant_header is not None and not storable(tenant_header):
            raise BadRequestError(
                "X-Zixly-Tenant must be a tenant slug or id", field="X-Zixly-Tenant"
            )
        claims = await self.verifier.verify(bearer_token(authorization))
        email = claim(claims, self.settings.email_claim)
        if not isinstance(email, str) or "@" not in email or not storable(email):
            raise RefusedClaims(f"token has no usable {self.settings.email_claim!r} claim")
        tenant = claim(claims, self.settings.tenant_claim) or tenant_header
        if tenant is not None and (not isinstance(tenant, str) or not storable(tenant)):
            raise RefusedClaims("token's tenant claim must be a string")
        params: dict[str, Any] = {
            "email": email,
            "tenant": tenant,
            "issued_at": issued_at(claims),
        }
        with typed_outages():  # database down, no connection free: 503, Retry-After
            if uow is not None:
                params["timeout"] = str(self.settings.statement_timeout_ms)
                row = await uow.open_with(_LOOKUP_AND_SCOPE, params)
            else:
                async with self.db.transaction(Scope.system()) as session:
                    row = (await session.execute(_LOOKUP, params)).first()
        if row is None:
            raise RefusedClaims("unknown user: no Zixly account has this email")
        if tenant is not None and row.tenant_id is None and not row.is_staff:
            raise ForbiddenError("you are not a member of that tenant")
        principal = Principal(
            user_id=row.user_id,
            email=email.lower(),
            is_staff=row.is_staff,
            tenant_id=row.tenant_id,
            tenant_slug=row.tenant_slug,
            role=Role(row.role) if row.role else None,
            tenant_choices=tuple(row.tenant_choices or ()),
            valid_until=valid_until(claims, self.settings.jwt_leeway_seconds),
        )
        if uow is not None:
            uow.scope = principal.scope
            await uow.admit()  # the per-tenant and per-user caps, now that both are known
        return principal
