"""A running instance job's lease: how soon another worker takes up the job of a dead one.

arq marks a job it runs with an in-progress key that expires ``job timeout + 10 s`` after it
started (about 15 minutes for instance jobs), and no other worker touches the job before that
key is gone; a worker that dies mid-job leaves the key to run out. ``JobLease`` turns that
key into a lease: it is shortened to ``seconds`` when the job starts and renewed every third
of that while the job runs. When the worker dies, the key lapses within ``seconds``, the job
(still in arq's queue, since it never finished) is picked up by the next polling worker as
its next try, and the lifecycle resumes from the step the row records.

Never twice at once: a live worker keeps renewing its lease, and every instance job converges
under the tenant's lock (zixly.provisioning.tenant_lock.TenantLock, with the same lease), which
the retried job waits for for up to one lease.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from arq.constants import in_progress_key_prefix
from redis.exceptions import RedisError

from zixly.core.logging import get_logger

log = get_logger("zixly.provisioning.lease")


@contextlib.asynccontextmanager
async def job_lease(ctx: dict[str, Any], seconds: float) -> AsyncIterator[None]:
    """Hold the running arq job's lease (``ctx`` is arq's job context) while the block runs.
    Outside a worker (no ``job_id`` or ``redis`` in ``ctx``) it does nothing."""
    redis, job_id = ctx.get("redis"), ctx.get("job_id")
    if redis is None or job_id is None:
        yield
        return
    key = in_progress_key_prefix + str(job_id)
    ttl_ms = int(seconds * 1000)

    async def renew() -> None:
        while True:
            try:
                await redis.pexpire(key, ttl_ms)
            except RedisError as exc:  # the next renewal may succeed; the lock still guards
                log.warning(
                    "job.lease_renewal_failed", job_id=str(job_id), error=type(exc).__name__
                )
            await asyncio.sleep(seconds / 3)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
