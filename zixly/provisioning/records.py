"""How an instance operation records its progress: each step's row update, an
``instance_events`` row published after its commit, the failure (FAILED with a safe
message) and the step hook. The base of ``InstanceLifecycle``."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from redis.asyncio import Redis

from zixly.core.errors import NotFoundError
from zixly.core.logging import get_logger
from zixly.db.session import Database
from zixly.provisioning.instance_events import publish
from zixly.provisioning.instances import (
    ActualState,
    EventKind,
    EventRecord,
    InstanceRepository,
    InstanceRow,
    Step,
    provision_progress,
)
from zixly.provisioning.operations import (
    ERROR_LIMIT,
    STAFF,
    StepHook,
    describe,
)
from zixly.provisioning.runtimes.base import (
    InstanceRuntime,
    ResourceLimits,
)
from zixly.provisioning.secrets import InstanceSecretBox

log = get_logger("zixly.provisioning.lifecycle")
# The step an operation is working on, for the failure message (one value per job's task).
ATTEMPTING: contextvars.ContextVar[Step | None] = contextvars.ContextVar(
    "zixly_instance_step", default=None
)


class LifecycleBase:
    """What every part of the lifecycle holds (set by ``InstanceLifecycle.__init__``), and
    the writes each step makes: the row, its event, the failure, the hook."""

    db: Database
    redis: Redis
    runtime: InstanceRuntime
    secrets: InstanceSecretBox
    http: httpx.AsyncClient
    version: str
    ready_timeout: float
    limits: ResourceLimits
    lock_ttl: float
    lock_wait: float
    on_step: StepHook | None
    ingest_url: str | None
    provider_base_urls: dict[str, str]

    async def get(self, tenant_id: uuid.UUID) -> InstanceRow:
        async with self.db.transaction(STAFF) as session:
            row = await InstanceRepository(session).get(tenant_id)
        if row is None:
            raise NotFoundError("this tenant has no n8n instance", tenant_id=str(tenant_id))
        return row

    async def _step(
        self,
        row: InstanceRow,
        step: Step,
        *,
        details: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> InstanceRow:
        """Record ``step`` as done (if it moves forward), with ``values``; then the hook."""
        advanced = provision_progress(step) > provision_progress(row.step) or (
            step in (Step.EXPORTED, Step.REMOVED) and row.step is not step
        )
        if advanced:
            event = (EventKind.STEP, f"step {step.value} done", step)
            row = await self._write(row, event=event, details=details, step=step, **values)
        elif values:
            row = await self._write(row, **values)
        await self._hook(row, step)
        return row

    async def _transition(
        self,
        row: InstanceRow,
        state: ActualState,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        event_step: Step | None = None,
        **values: Any,
    ) -> InstanceRow:
        changes = {"from": row.actual_state.value, "to": state.value} | dict(details or {})
        return await self._write(
            row,
            event=(EventKind.TRANSITION, message, event_step),
            details=changes,
            actual_state=state,
            **values,
        )

    async def _record_failure(
        self, tenant_id: uuid.UUID, exc: Exception, attempted: Step | None
    ) -> None:
        reason = describe(exc)
        log.warning("instance.failed", tenant_id=str(tenant_id), error=reason)
        try:
            row = await self.get(tenant_id)
            what = f"step {attempted.value}" if attempted else "operation"
            message = f"{what} failed: {reason}"
            await self._write(
                row,
                event=(EventKind.ERROR, message, attempted),
                details={"from": row.actual_state.value, "to": ActualState.FAILED.value},
                actual_state=ActualState.FAILED,
                last_error=message[:ERROR_LIMIT],
            )
        except Exception as inner:  # the original error matters more
            log.error(
                "instance.failure_not_recorded", tenant_id=str(tenant_id), error=describe(inner)
            )

    async def _write(
        self,
        row: InstanceRow,
        *,
        event: tuple[EventKind, str, Step | None] | None = None,
        details: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> InstanceRow:
        record = None
        async with self.db.transaction(STAFF) as session:
            repo = InstanceRepository(session)
            if values:
                row = await repo.update(row, **values)
            if event is not None:
                kind, message, step = event
                state = {
                    "actual_state": row.actual_state.value,
                    "desired_state": row.desired_state.value,
                }
                record = await repo.add_event(
                    row.tenant_id, kind, message, step=step, details=state | dict(details or {})
                )
        if record is not None:
            await self._publish(record)
        return row

    async def _event(
        self,
        row: InstanceRow,
        kind: EventKind,
        message: str,
        *,
        step: Step | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        await self._write(row, event=(kind, message, step), details=details)

    async def _publish(self, record: EventRecord) -> None:
        await publish(self.redis, record)

    async def _hook(self, row: InstanceRow, step: Step) -> None:
        if self.on_step is not None:
            await self.on_step(row.tenant_id, step)

    async def _slug(self, tenant_id: uuid.UUID) -> str:
        async with self.db.transaction(STAFF) as session:
            slug = await InstanceRepository(session).tenant_slug(tenant_id)
        if slug is None:
            raise NotFoundError("no such tenant", tenant_id=str(tenant_id))
        return slug


def utc_now() -> datetime:
    return datetime.now(UTC)
