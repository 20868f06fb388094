"""The monitor's rows: the instances it reads, integrations' health, its cursor per instance.

Platform work across tenants, so a staff-scoped session (``Scope(staff=True)``); every
statement still names its tenant. The monitor's columns on ``n8n_instances`` are an
observation, not a state change: they are written without touching ``lock_version``, so a
pass never makes a lifecycle operation fail its compare-and-set.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.db.models import Alert, Integration, N8nInstance
from zixly.monitor.rules import IntegrationHealth
from zixly.provisioning.instances import ActualState

INSTANCES = cast(Table, N8nInstance.__table__)
INTEGRATIONS = cast(Table, Integration.__table__)
ALERTS = cast(Table, Alert.__table__)


@dataclass(frozen=True)
class Target:
    """A running instance to read, and where the last pass left it."""

    tenant_id: uuid.UUID
    cursor: int | None
    error: str | None  # the last pass's failure, if it failed


async def running_instances(
    session: AsyncSession, only: Collection[uuid.UUID] | None = None
) -> list[Target]:
    c = INSTANCES.c
    query = (
        select(c.tenant_id, c.monitor_cursor, c.monitor_error)
        .where(c.actual_state == ActualState.RUNNING.value)
        .order_by(c.tenant_id)
    )
    if only is not None:
        query = query.where(c.tenant_id.in_(list(only)))
    rows = (await session.execute(query)).all()
    return [Target(r.tenant_id, r.monitor_cursor, r.monitor_error) for r in rows]


async def integrations_for_update(
    session: AsyncSession, tenant_id: uuid.UUID, providers: Iterable[str]
) -> list[IntegrationHealth]:
    c = INTEGRATIONS.c
    query = (
        select(
            c.id,
            c.provider,
            c.status,
            c.last_sync_at,
            c.consecutive_failures,
            c.last_failure_at,
            c.last_error,
            c.last_execution_id,
            c.created_at,
        )
        .where(c.tenant_id == tenant_id, c.provider.in_(list(providers)))
        .order_by(c.provider)
        .with_for_update()
    )
    return [IntegrationHealth(**row._mapping) for row in (await session.execute(query)).all()]


async def open_alert_keys(
    session: AsyncSession, tenant_id: uuid.UUID, keys: Iterable[str]
) -> set[str]:
    c = ALERTS.c
    query = select(c.key).where(c.tenant_id == tenant_id, c.status == "OPEN", c.key.in_(list(keys)))
    return set((await session.execute(query)).scalars().all())


async def save_health(
    session: AsyncSession, tenant_id: uuid.UUID, health: IntegrationHealth, checked_at: datetime
) -> None:
    c = INTEGRATIONS.c
    await session.execute(
        update(INTEGRATIONS)
        .where(c.id == health.id, c.tenant_id == tenant_id)
        .values(
            status=health.status,
            last_sync_at=health.last_sync_at,
            consecutive_failures=health.consecutive_failures,
            last_failure_at=health.last_failure_at,
            last_error=health.last_error,
            last_execution_id=health.last_execution_id,
            last_checked_at=checked_at,
        )
    )


async def save_pass(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    checked_at: datetime,
    cursor: int | None = None,
    error: str | None = None,
) -> None:
    """Record a pass over the instance: the new cursor (never moved back: another pass may
    have moved it on meanwhile) and its failure, or None when it read the instance."""
    c = INSTANCES.c
    values: dict[str, object] = {"monitor_checked_at": checked_at, "monitor_error": error}
    if cursor is not None:
        values["monitor_cursor"] = func.greatest(func.coalesce(c.monitor_cursor, 0), cursor)
    await session.execute(update(INSTANCES).where(c.tenant_id == tenant_id).values(**values))
