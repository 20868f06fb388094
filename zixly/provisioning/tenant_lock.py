"""One operation per tenant at a time: a Redis lock with a short TTL that a heartbeat keeps
alive while the operation runs, so a dead worker's lock lapses within its TTL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from zixly.core.logging import get_logger
from zixly.provisioning.operations import (
    InstanceBusyError,
    describe,
)

log = get_logger("zixly.provisioning.lifecycle")


class TenantLock:
    """One operation per tenant: a Redis lock kept alive by a heartbeat while held."""

    def __init__(self, redis: Redis, tenant_id: uuid.UUID, *, ttl: float, wait: float) -> None:
        self._lock = redis.lock(
            f"zixly:instances:lock:{tenant_id}",
            timeout=ttl,
            blocking=wait > 0,
            blocking_timeout=wait if wait > 0 else None,
            thread_local=False,
        )
        self._ttl = ttl
        self._tenant_id = tenant_id
        self._heartbeat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TenantLock:
        if not await self._lock.acquire():
            raise InstanceBusyError(
                "another operation on this instance is in progress", tenant_id=str(self._tenant_id)
            )
        self._heartbeat = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        with contextlib.suppress(LockError, RedisError):
            await self._lock.release()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self._lock.reacquire()
            except (LockError, RedisError) as exc:
                log.warning(
                    "instance.lock_lost", tenant_id=str(self._tenant_id), error=describe(exc)
                )
                return
