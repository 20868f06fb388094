"""The tenant's provider integrations: status only, never token material."""

from __future__ import annotations

import datetime as dt
import enum

import strawberry

from zixly.domain.integrations import IntegrationRepository
from zixly.graphql.context import Info


@strawberry.enum
class IntegrationStatus(enum.Enum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    STALE = "STALE"
    ERROR = "ERROR"
    DISABLED = "DISABLED"


@strawberry.type(description="A connection to a provider (Xero, HubSpot, Asana...).")
class Integration:
    provider: str
    status: IntegrationStatus
    last_sync_at: dt.datetime | None
    expires_at: dt.datetime | None = strawberry.field(
        description="When the current access token expires, if known."
    )
    consecutive_failures: int = strawberry.field(
        description="Failed sync runs since the last successful one."
    )
    last_checked_at: dt.datetime | None = strawberry.field(
        description="When the sync-health monitor last read the runs feeding it."
    )
    last_failure_at: dt.datetime | None = strawberry.field(
        description="When the last failed run stopped (kept after a later success)."
    )
    last_error: str | None = strawberry.field(
        description="What the last failed run reported: the node and its message, shortened, "
        "with anything credential-like removed."
    )


@strawberry.type
class IntegrationQuery:
    @strawberry.field(description="The tenant's integrations, by provider.")
    async def integrations(self, info: Info) -> list[Integration]:
        ctx = info.context
        tenant_id = ctx.tenant()
        async with ctx.session() as session:
            rows = await IntegrationRepository(session, tenant_id).statuses()
        return [
            Integration(
                provider=row.provider,
                status=IntegrationStatus(row.status),
                last_sync_at=row.last_sync_at,
                expires_at=row.expires_at,
                consecutive_failures=row.consecutive_failures,
                last_checked_at=row.last_checked_at,
                last_failure_at=row.last_failure_at,
                last_error=row.last_error,
            )
            for row in rows
        ]
