"""Instance progress events on Redis pub/sub: ``zixly:instances:<tenant_id>``, one per tenant.

The lifecycle appends each event to ``instance_events`` and publishes the row (its
``EventRecord.as_message()``) after the commit; this module reads that stream for the
``instanceEvents`` subscription and the CLI's live progress. Like ``zixly.core.events``, the
channel is chosen by tenant id only, and a payload that is not a valid event is logged and
skipped, never relayed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

from zixly.core.events import MAX_MESSAGE_BYTES, messages
from zixly.core.logging import get_logger
from zixly.provisioning.instances import EventKind, EventRecord, Step

log = get_logger("zixly.provisioning.instance_events")


class InstanceEventMessage(BaseModel):
    """What subscribers get of one event (``details`` stays in the database)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: EventKind
    step: Step | None = None
    message: str = Field(max_length=2000)
    at: AwareDatetime
    details: dict[str, object] = Field(default_factory=dict)

    @property
    def actual_state(self) -> str | None:
        """The actual state after the event, when the event says (transitions do)."""
        value = self.details.get("to") or self.details.get("actual_state")
        return value if isinstance(value, str) else None


def parse_message(data: bytes | str, tenant_id: uuid.UUID) -> InstanceEventMessage | None:
    if len(data) > MAX_MESSAGE_BYTES:
        log.warning("instance_events.skipped", tenant_id=str(tenant_id), reason="too large")
        return None
    try:
        return InstanceEventMessage.model_validate(json.loads(data))
    except ValueError as exc:
        log.warning("instance_events.skipped", tenant_id=str(tenant_id), reason=type(exc).__name__)
        return None


def from_record(record: EventRecord) -> InstanceEventMessage:
    return InstanceEventMessage(
        kind=record.kind,
        step=record.step,
        message=record.message,
        at=record.at,
        details=dict(record.details or {}),
    )


def channel(tenant_id: uuid.UUID) -> str:
    return f"zixly:instances:{tenant_id}"


async def publish(redis: Redis, record: EventRecord) -> None:
    """Publish an event recorded in a caller's transaction, after that transaction's commit.
    A failure is logged only: the event is in the database."""
    try:
        await redis.publish(channel(record.tenant_id), json.dumps(record.as_message()))
    except RedisError as exc:
        log.warning(
            "instance_events.publish_failed",
            tenant_id=str(record.tenant_id),
            error=type(exc).__name__,
        )


async def subscribe(
    redis: Redis, tenant_id: uuid.UUID
) -> AsyncGenerator[InstanceEventMessage, None]:
    """The tenant's instance events from now on; close the iterator (``aclosing``) to
    release the pub/sub connection."""
    async with aclosing(messages(redis, channel(tenant_id), "instance event")) as raw:
        async for data in raw:
            event = parse_message(data, tenant_id)
            if event is not None:
                yield event
