"""From an Authorization header to a Principal, with tenant and role read from the database."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError

from zixly.auth.principal import Principal, Role
from zixly.auth.verifier import TokenVerifier, claim
from zixly.db.session import Database, Scope, UnitOfWork
from zixly.domain.bounds import storable
from zixly.errors import AuthenticationError, BadRequestError, ForbiddenError, UnavailableError
from zixly.settings import Settings

_LOOKUP = text(
    "SELECT user_id, email, display_name, is_staff, tenant_id, tenant_slug, role "
    "FROM zixly_auth_principal(:email, :tenant)"
)
# The same look-up, applying the request's scope from its own result (see UnitOfWork.open_with).
_LOOKUP_AND_SCOPE = text(
    "SELECT user_id, email, display_name, is_staff, tenant_id, tenant_slug, role, "
    "set_config('app.tenant_id', coalesce(tenant_id::text, ''), true), "
    "set_config('app.user_id', user_id::text, true), "
    "set_config('statement_timeout', :timeout, true) "
    "FROM zixly_auth_principal(:email, :tenant)"
)


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
            raise AuthenticationError(f"token has no usable {self.settings.email_claim!r} claim")
        tenant = claim(claims, self.settings.tenant_claim) or tenant_header
        if tenant is not None and (not isinstance(tenant, str) or not storable(tenant)):
            raise AuthenticationError("token's tenant claim must be a string")
        params = {"email": email, "tenant": tenant}
        try:
            if uow is not None:
                params["timeout"] = str(self.settings.statement_timeout_ms)
                row = await uow.open_with(_LOOKUP_AND_SCOPE, params)
            else:
                async with self.db.transaction(Scope.system()) as session:
                    row = (await session.execute(_LOOKUP, params)).first()
        except (OperationalError, InterfaceError, OSError) as exc:
            raise UnavailableError("the database is unavailable; try again shortly") from exc
        if row is None:
            raise AuthenticationError("unknown user: no Zixly account has this email")
        if tenant is not None and row.tenant_id is None and not row.is_staff:
            raise ForbiddenError("you are not a member of that tenant")
        principal = Principal(
            user_id=row.user_id,
            email=row.email,
            display_name=row.display_name,
            is_staff=row.is_staff,
            tenant_id=row.tenant_id,
            tenant_slug=row.tenant_slug,
            role=Role(row.role) if row.role else None,
        )
        if uow is not None:
            uow.scope = principal.scope
        return principal
