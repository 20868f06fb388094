"""``syncEvents``: the caller's tenant's integration sync events, live."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from contextlib import aclosing

import strawberry

from zixly.core.events import SyncEventBus, SyncEventMessage
from zixly.graphql.context import Info


@strawberry.type(
    description="Something that happened while syncing one of the tenant's integrations."
)
class SyncEvent:
    provider: str
    status: str
    occurred_at: dt.datetime
    message: str | None
    records_synced: int | None

    @classmethod
    def from_message(cls, event: SyncEventMessage) -> SyncEvent:
        return cls(
            provider=event.provider,
            status=event.status,
            occurred_at=event.occurred_at,
            message=event.message,
            records_synced=event.records_synced,
        )


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Sync events of your tenant (the authenticated one; there is no argument)."
    )
    async def sync_events(self, info: Info) -> AsyncGenerator[SyncEvent, None]:
        ctx = info.context
        tenant_id = ctx.tenant()
        # aclosing: when the client completes or disconnects, the pub/sub is closed too.
        async with aclosing(SyncEventBus(ctx.services.redis).subscribe(tenant_id)) as events:
            async for event in events:
                yield SyncEvent.from_message(event)
