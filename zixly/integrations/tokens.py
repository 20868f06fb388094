"""Encrypted tokens of an integration row.

Runs as the staff role (``Scope(staff=True)``): refresh is a system job across tenants,
keyed by the integration's id, like key rotation. Statements still name the row's
tenant, and every value is sealed to (tenant, "integrations", row id, field), so a token
copied to another row or tenant does not decrypt.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.crypto import Keyring, Secret
from zixly.db.models import Integration
from zixly.db.session import Scope
from zixly.errors import NotFoundError
from zixly.keys import integration_binding

STAFF = Scope(tenant_id=None, staff=True)
_TABLE = cast(Table, Integration.__table__)


@dataclass(frozen=True)
class StoredIntegration:
    id: uuid.UUID
    tenant_id: uuid.UUID
    provider: str
    status: str
    expires_at: datetime | None
    access_token: Secret | None
    refresh_token: Secret | None
    metadata: dict[str, Any]


class TokenStore:
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def load(
        self, session: AsyncSession, integration_id: uuid.UUID, *, for_update: bool = False
    ) -> StoredIntegration:
        c = _TABLE.c
        query = select(
            c.id,
            c.tenant_id,
            c.provider,
            c.status,
            c.expires_at,
            c.access_token_ciphertext,
            c.refresh_token_ciphertext,
            c.metadata,
        ).where(c.id == integration_id)
        if for_update:
            query = query.with_for_update()
        row = (await session.execute(query)).first()
        if row is None:
            raise NotFoundError("no such integration", integration_id=str(integration_id))
        return StoredIntegration(
            id=row.id,
            tenant_id=row.tenant_id,
            provider=row.provider,
            status=row.status,
            expires_at=row.expires_at,
            access_token=self._open(row, "access_token", row.access_token_ciphertext),
            refresh_token=self._open(row, "refresh_token", row.refresh_token_ciphertext),
            metadata=dict(row.metadata or {}),
        )

    async def save(
        self,
        session: AsyncSession,
        stored: StoredIntegration,
        *,
        access_token: Secret,
        refresh_token: Secret | None,
        expires_at: datetime,
    ) -> None:
        """Write both tokens in the caller's transaction; ``refresh_token=None`` keeps the
        stored one (providers that do not rotate may omit it)."""
        values: dict[str, Any] = {
            "access_token_ciphertext": self._seal(stored, "access_token", access_token),
            "expires_at": expires_at,
            "status": "ACTIVE",
            "updated_at": datetime.now(expires_at.tzinfo),
        }
        if refresh_token is not None:
            values["refresh_token_ciphertext"] = self._seal(stored, "refresh_token", refresh_token)
        await self._update(session, stored, values)

    async def set_status(
        self, session: AsyncSession, stored: StoredIntegration, status: str
    ) -> None:
        await self._update(session, stored, {"status": status})

    async def _update(
        self, session: AsyncSession, stored: StoredIntegration, values: dict[str, Any]
    ) -> None:
        c = _TABLE.c
        await session.execute(
            update(_TABLE)
            .where(c.id == stored.id, c.tenant_id == stored.tenant_id)
            .values(**values)
        )

    def _seal(self, stored: StoredIntegration, field: str, value: Secret) -> str:
        return self.keyring.encrypt(value, integration_binding(stored.tenant_id, stored.id, field))

    def _open(self, row: Any, field: str, value: str | None) -> Secret | None:
        if value is None:
            return None
        return self.keyring.decrypt(value, integration_binding(row.tenant_id, row.id, field))
