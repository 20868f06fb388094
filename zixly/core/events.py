"""Sync events over Redis pub/sub: one channel per tenant.

Workers publish what happened to a tenant's integration sync; the ``syncEvents``
subscription relays the tenant's channel to its connected clients. The channel is chosen
by the caller's tenant id only, so there is no way to name another tenant's stream.
Anything on a channel that is not a valid event is logged and skipped, never relayed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

import pydantic
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

from zixly.core.errors import UnavailableError, ValidationError
from zixly.core.logging import get_logger

log = get_logger("zixly.core.events")
MAX_MESSAGE_BYTES = 64 * 1024


def channel(tenant_id: uuid.UUID) -> str:
    return f"zixly:tenant:{tenant_id}:sync-events"


class SyncEventMessage(BaseModel):
    """The wire format of one event (JSON, snake_case keys)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    provider: str = Field(min_length=1, max_length=64)
    status: str = Field(min_length=1, max_length=32)
    occurred_at: AwareDatetime
    message: str | None = Field(default=None, max_length=2000)
    records_synced: int | None = Field(default=None, ge=0)


def parse_message(data: bytes | str, tenant_id: uuid.UUID) -> SyncEventMessage | None:
    """The event in a pub/sub payload, or None (logged) when it is not a valid event."""
    if len(data) > MAX_MESSAGE_BYTES:
        log.warning("sync_events.skipped", tenant_id=str(tenant_id), reason="too large")
        return None
    try:
        return SyncEventMessage.model_validate(json.loads(data))
    except ValueError as exc:  # bad JSON, bad UTF-8 and pydantic errors alike
        # The reason only: the payload itself could hold anything.
        log.warning("sync_events.skipped", tenant_id=str(tenant_id), reason=type(exc).__name__)
        return None


class SyncEventBus:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def publish(self, tenant_id: uuid.UUID, event: Mapping[str, Any]) -> int:
        """Validate and publish ``event``; returns how many subscribers received it."""
        try:
            message = SyncEventMessage.model_validate(event)
        except pydantic.ValidationError as exc:
            raise ValidationError(f"invalid sync event: {exc.error_count()} error(s)") from exc
        try:
            return int(await self.redis.publish(channel(tenant_id), message.model_dump_json()))
        except RedisError as exc:
            raise UnavailableError("could not publish the sync event") from exc

    async def subscribe(self, tenant_id: uuid.UUID) -> AsyncGenerator[SyncEventMessage, None]:
        """The tenant's events from now on. Close the iterator (``aclosing``) to unsubscribe:
        that releases the pub/sub connection."""
        async with aclosing(messages(self.redis, channel(tenant_id), "sync event")) as raw:
            async for data in raw:
                event = parse_message(data, tenant_id)
                if event is not None:
                    yield event


async def messages(
    redis: Redis, name: str, what: str, *, subscribed: asyncio.Event | None = None
) -> AsyncGenerator[Any, None]:
    """The payloads published on channel ``name`` from now on (shared by every event stream).
    Closing the iterator unsubscribes and releases the pub/sub connection. ``subscribed``
    is set once the subscription is sent: what is published after that is received."""
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(name)
        if subscribed is not None:
            subscribed.set()
        async for raw in pubsub.listen():
            if raw.get("type") == "message":
                yield raw["data"]
    except RedisError as exc:
        raise UnavailableError(f"the {what} stream was interrupted") from exc
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
