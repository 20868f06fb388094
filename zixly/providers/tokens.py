"""Encrypted tokens of an integration row.

Runs as the staff role (``Scope(staff=True)``): refresh is a system job across tenants,
keyed by the integration's id, like key rotation. Statements still name the row's
tenant, and every value is sealed to (tenant, "integrations", row id, field), so a token
copied to another row or tenant does not decrypt.

Connecting and disconnecting (zixly.integrations.connect) use the same store in a
tenant-scoped transaction: the row is the tenant's own, and row-level security applies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import NotFoundError
from zixly.db.models import Integration
from zixly.db.session import Scope
from zixly.security.crypto import Binding, Keyring, Secret

STAFF = Scope(tenant_id=None, staff=True)
_TABLE = cast(Table, Integration.__table__)


def integration_binding(tenant_id: uuid.UUID, row_id: uuid.UUID, token: str) -> Binding:
    """An integration token (``access_token`` / ``refresh_token``) is bound to its row."""
    return Binding(str(tenant_id), Integration.__tablename__, str(row_id), token)


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

    async def find(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        provider: str,
        *,
        for_update: bool = False,
    ) -> StoredIntegration | None:
        """The tenant's integration with ``provider``, if there is one."""
        c = _TABLE.c
        query = select(c.id).where(c.tenant_id == tenant_id, c.provider == provider)
        found = (await session.execute(query)).scalar_one_or_none()
        if found is None:
            return None
        return await self.load(session, found, for_update=for_update)

    async def connect(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        provider: str,
        *,
        access_token: Secret,
        refresh_token: Secret | None,
        expires_at: datetime,
        metadata: dict[str, Any],
    ) -> StoredIntegration:
        """Create or take over the tenant's row for ``provider`` with a new grant: ACTIVE,
        both tokens replaced (a missing refresh token clears the old one), the sync-health
        counters reset. The upsert locks the row until the caller's transaction ends."""
        c = _TABLE.c
        upsert = insert(_TABLE).values(
            id=uuid.uuid4(), tenant_id=tenant_id, provider=provider, status="PENDING"
        )
        row_id = (
            await session.execute(
                upsert.on_conflict_do_update(
                    constraint="integrations_tenant_provider_key",
                    set_={"updated_at": func.now()},
                ).returning(c.id)
            )
        ).scalar_one()
        stored = StoredIntegration(
            id=row_id,
            tenant_id=tenant_id,
            provider=provider,
            status="ACTIVE",
            expires_at=expires_at,
            access_token=access_token,
            refresh_token=refresh_token,
            metadata=metadata,
        )
        await self._update(
            session,
            stored,
            {
                "access_token_ciphertext": self._seal(stored, "access_token", access_token),
                "refresh_token_ciphertext": (
                    self._seal(stored, "refresh_token", refresh_token) if refresh_token else None
                ),
                "expires_at": expires_at,
                "status": "ACTIVE",
                "metadata": metadata,
                "consecutive_failures": 0,
                "last_error": None,
                "last_failure_at": None,
                "updated_at": func.now(),
            },
        )
        return stored

    async def clear(
        self, session: AsyncSession, stored: StoredIntegration, *, status: str = "DISABLED"
    ) -> None:
        """Forget both tokens (disconnect)."""
        await self._update(
            session,
            stored,
            {
                "access_token_ciphertext": None,
                "refresh_token_ciphertext": None,
                "expires_at": None,
                "status": status,
                "updated_at": func.now(),
            },
        )

    async def access_tokens(self, session: AsyncSession, tenant_id: uuid.UUID) -> dict[str, Secret]:
        """provider -> the current access token, of each of the tenant's integrations that
        has one (what the tenant's n8n credentials carry)."""
        c = _TABLE.c
        rows = await session.execute(
            select(c.id, c.tenant_id, c.provider, c.access_token_ciphertext).where(
                c.tenant_id == tenant_id, c.access_token_ciphertext.is_not(None)
            )
        )
        tokens: dict[str, Secret] = {}
        for row in rows:
            token = self._open(row, "access_token", row.access_token_ciphertext)
            if token is not None:
                tokens[str(row.provider)] = token
        return tokens

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
        stored one (providers that do not rotate may omit it). The status is left alone: a
        refresh proves the grant, not the sync (STALE stays STALE until the monitor sees a
        successful run)."""
        values: dict[str, Any] = {
            "access_token_ciphertext": self._seal(stored, "access_token", access_token),
            "expires_at": expires_at,
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
