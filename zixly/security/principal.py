"""Who a request acts as, and role checks."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from zixly.core.errors import ForbiddenError, TenantRequiredError
from zixly.db.session import Scope


class Role(enum.Enum):
    VIEWER = "VIEWER"
    EDITOR = "EDITOR"
    ADMIN = "ADMIN"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.VIEWER: 1, Role.EDITOR: 2, Role.ADMIN: 3}


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    email: str
    is_staff: bool
    tenant_id: uuid.UUID | None
    tenant_slug: str | None
    role: Role | None
    # Set when the user belongs to several tenants and the request chose none: their own
    # memberships' slugs, for the TENANT_REQUIRED error.
    tenant_choices: tuple[str, ...] = ()
    # When the verifier stops accepting the credential (its ``exp`` plus the leeway, epoch
    # seconds); None when unknown. A WebSocket is closed 4401 then (zixly.graphql.ws).
    valid_until: float | None = None

    @property
    def scope(self) -> Scope:
        """Tenant data scope. Staff act through the staff policy only where they ask to."""
        return Scope(tenant_id=self.tenant_id, user_id=self.user_id)

    @property
    def staff_scope(self) -> Scope:
        self.require_staff()
        return Scope(tenant_id=self.tenant_id, user_id=self.user_id, staff=True)

    @property
    def rate_limit_key(self) -> str:
        return f"tenant:{self.tenant_id}" if self.tenant_id else f"user:{self.user_id}"

    def require_tenant(self) -> uuid.UUID:
        if self.tenant_choices and self.tenant_id is None:
            raise TenantRequiredError(
                "you belong to several tenants: choose one with the token's tenant claim or "
                "the X-Zixly-Tenant header",
                tenants=list(self.tenant_choices),
            )
        if self.tenant_id is None or self.role is None:
            raise ForbiddenError(
                "this operation needs a tenant: name one with the token's tenant claim or "
                "the X-Zixly-Tenant header"
            )
        return self.tenant_id

    def require_role(self, minimum: Role) -> uuid.UUID:
        tenant_id = self.require_tenant()
        assert self.role is not None
        if self.role.rank < minimum.rank:
            raise ForbiddenError(
                f"requires role {minimum.value} or higher; you are {self.role.value}",
                required_role=minimum.value,
            )
        return tenant_id

    def require_staff(self) -> None:
        if not self.is_staff:
            raise ForbiddenError("requires Zixly staff")
