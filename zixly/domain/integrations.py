"""A tenant's provider connections, as seen by API callers.

Only status columns are ever selected here: the token ciphertext columns stay in the
database and in the code that refreshes tokens.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.db.models import Integration
from zixly.db.rows import AnyRow

T = Integration.__table__
PUBLIC_COLUMNS = (
    T.c.provider,
    T.c.status,
    T.c.last_sync_at,
    T.c.expires_at,
    # Sync health (zixly.monitor): last_error is stored already scrubbed of credentials.
    T.c.consecutive_failures,
    T.c.last_checked_at,
    T.c.last_failure_at,
    T.c.last_error,
)


class IntegrationRepository:
    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    async def statuses(self) -> list[AnyRow]:
        """The public columns (status and sync health) of each integration, by provider."""
        query = (
            select(*PUBLIC_COLUMNS).where(T.c.tenant_id == self.tenant_id).order_by(T.c.provider)
        )
        return list((await self.session.execute(query)).all())
