"""The final export: every workflow of an instance, taken when it is deprovisioned.

Deprovisioning stores the bundle in ``workflow_exports`` (reason ``DEPROVISION``) before the
instance and its data are removed. It stays retrievable for ``final_export_retention_days``
(``zixly tenant export --final <tenant>``, the staff ``finalExport`` query); the worker's
``purge_final_exports`` cron deletes older ones. The bundle is what n8n's import takes
(zixly.provisioning.n8n.bundle_export): workflows only, never credentials.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.logging import get_logger
from zixly.core.settings import Settings
from zixly.db.session import Database
from zixly.provisioning.instances import X
from zixly.provisioning.operations import STAFF

log = get_logger("zixly.provisioning.final_exports")
REASON = "DEPROVISION"
PURGE_JOB = "purge_final_exports"


@dataclass(frozen=True)
class FinalExport:
    id: uuid.UUID
    tenant_id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    bundle: dict[str, Any]


def _cutoff(retention_days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=retention_days)


async def final_export(
    session: AsyncSession, tenant_id: uuid.UUID, retention_days: int
) -> FinalExport | None:
    """The tenant's newest final export still kept (a staff session), or None."""
    query = (
        select(X.c.id, X.c.created_at, X.c.bundle)
        .where(
            X.c.tenant_id == tenant_id,
            X.c.reason == REASON,
            X.c.created_at > _cutoff(retention_days),
        )
        .order_by(X.c.created_at.desc(), X.c.id)
        .limit(1)
    )
    row = (await session.execute(query)).first()
    if row is None:
        return None
    expires = row.created_at + timedelta(days=retention_days)
    return FinalExport(row.id, tenant_id, row.created_at, expires, dict(row.bundle))


async def purge_expired(db: Database, retention_days: int) -> int:
    """Delete the final exports older than the retention; returns how many."""
    statement = (
        delete(X)
        .where(X.c.reason == REASON, X.c.created_at <= _cutoff(retention_days))
        .returning(X.c.id)
    )
    async with db.transaction(STAFF) as session:
        deleted = len((await session.execute(statement)).all())
    if deleted:
        log.info("final_exports.purged", deleted=deleted, retention_days=retention_days)
    return deleted


async def purge_final_exports(ctx: dict[str, Any]) -> dict[str, int]:
    """The worker's daily cron."""
    settings: Settings = ctx["settings"]
    db: Database = ctx["db"]
    return {"deleted": await purge_expired(db, settings.final_export_retention_days)}
