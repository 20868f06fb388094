"""Live progress of an instance operation on a terminal: the tenant's instance events as they
are published (``zixly tenant ...`` and the demo wait on an operation through this), and whether
an operation handed to the worker (``--enqueue``, waited for with
``zixly.core.queue.wait_for_job``) settled."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

from redis.asyncio import Redis
from rich.console import Console

from zixly.provisioning.instance_events import InstanceEventMessage, channel, parse_message
from zixly.provisioning.instances import ActualState, DesiredState, InstanceRow

_SETTLED = {
    DesiredState.RUNNING: ActualState.RUNNING,
    DesiredState.STOPPED: ActualState.STOPPED,
    DesiredState.SUSPENDED: ActualState.SUSPENDED,
    DesiredState.ABSENT: ActualState.DEPROVISIONED,
}


async def follow(
    redis: Redis, tenant_id: uuid.UUID, console: Console, operation: Awaitable[InstanceRow]
) -> InstanceRow:
    """Run ``operation`` while printing the tenant's instance events as they are published."""
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel(tenant_id))  # before the operation publishes anything
    task = asyncio.ensure_future(operation)
    try:
        with console.status("working…") as status:
            while True:
                raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if raw is not None:
                    event = parse_message(raw["data"], tenant_id)
                    if event is not None:
                        console.print(progress_line(event), highlight=False)
                        status.update(event.message)
                elif task.done():  # and nothing left to print
                    break
        return await task
    finally:
        if not task.done():
            task.cancel()
        await pubsub.aclose()  # type: ignore[no-untyped-call]


def settled(row: InstanceRow) -> bool:
    """Did the instance reach what was asked of it, without an error?"""
    return row.last_error is None and _SETTLED.get(row.desired_state) is row.actual_state


def progress_line(event: InstanceEventMessage) -> str:
    mark = {"ERROR": "✗", "STEP": "✓"}.get(event.kind.value, "•")
    step = f" [{event.step.value}]" if event.step else ""
    return f"{mark} {event.at:%H:%M:%S}{step} {event.message}"
