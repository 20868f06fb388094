"""From an Authorization header to a Principal, with tenant and role read from the database."""

from __future__ import annotations

from sqlalchemy import text

from zixly.auth.principal import Principal, Role
from zixly.auth.verifier import TokenVerifier, claim
from zixly.db.session import Database, Scope
from zixly.errors import AuthenticationError, ForbiddenError
from zixly.settings import Settings

_LOOKUP = text(
    "SELECT user_id, email, display_name, is_staff, tenant_id, tenant_slug, role "
    "FROM zixly_auth_principal(:email, :tenant)"
)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError("missing bearer token: send 'Authorization: Bearer <jwt>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("malformed Authorization header: expected 'Bearer <jwt>'")
    return token.strip()


class Authenticator:
    def __init__(self, settings: Settings, verifier: TokenVerifier, db: Database) -> None:
        self.settings = settings
        self.verifier = verifier
        self.db = db

    async def authenticate(
        self, authorization: str | None, tenant_header: str | None = None
    ) -> Principal:
        claims = await self.verifier.verify(bearer_token(authorization))
        email = claim(claims, self.settings.email_claim)
        if not isinstance(email, str) or "@" not in email:
            raise AuthenticationError(f"token has no usable {self.settings.email_claim!r} claim")
        tenant = claim(claims, self.settings.tenant_claim) or tenant_header
        if tenant is not None and not isinstance(tenant, str):
            raise AuthenticationError("token's tenant claim must be a string")
        async with self.db.transaction(Scope.system()) as session:
            row = (await session.execute(_LOOKUP, {"email": email, "tenant": tenant})).first()
        if row is None:
            raise AuthenticationError("unknown user: no Zixly account has this email")
        if tenant is not None and row.tenant_id is None and not row.is_staff:
            raise ForbiddenError("you are not a member of that tenant")
        return Principal(
            user_id=row.user_id,
            email=row.email,
            display_name=row.display_name,
            is_staff=row.is_staff,
            tenant_id=row.tenant_id,
            tenant_slug=row.tenant_slug,
            role=Role(row.role) if row.role else None,
        )
