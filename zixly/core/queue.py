"""The job queue's wire format and its client: JSON jobs over arq, below everything that
enqueues.

Jobs and results travel as JSON, not pickle: a job carries ids and plain values only, and
nothing in Redis can make a worker run code. Whoever enqueues uses ``job_queue`` (the same
codec as the worker's ``WorkerSettings``) and names the job; nothing that enqueues imports
the worker or a job function (as in arq, whose enqueue side never imports its worker).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from arq import ArqRedis
from arq.jobs import Job, JobStatus
from redis.asyncio import Redis

from zixly.core.errors import ZixlyError


def serialize(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


def deserialize(data: bytes) -> Any:
    return json.loads(data)


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseException):  # a failed job's result: type and safe message only
        message = value.message if isinstance(value, ZixlyError) else ""
        return {"error": type(value).__name__, "message": message}
    if isinstance(value, datetime | uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def job_queue(redis: Redis) -> ArqRedis:
    """arq's client over an existing connection pool (JSON jobs, like the worker's)."""
    return ArqRedis(
        cast(Any, redis.connection_pool), job_serializer=serialize, job_deserializer=deserialize
    )


# How long a job may wait in the queue before ``wait_for_job`` says no worker seems to run.
NO_WORKER_AFTER_SECONDS = 5.0


async def wait_for_job(
    queue: ArqRedis,
    job_id: str,
    *,
    no_worker: Callable[[], None] | None = None,
    poll: float = 0.5,
) -> None:
    """Until the job ``job_id`` is neither queued nor running. The workers keep no results
    (``keep_result=0``), so a finished job is simply gone; a job that will retry waits in the
    queue meanwhile. ``no_worker`` is called once when the job has waited in the queue for
    ``NO_WORKER_AFTER_SECONDS`` without a worker taking it."""
    job = Job(job_id, queue)
    queued_since = time.monotonic()
    while True:
        state = await job.status()
        if state in (JobStatus.not_found, JobStatus.complete):
            return
        if state is JobStatus.in_progress:
            queued_since = time.monotonic()
        elif no_worker is not None and time.monotonic() - queued_since > NO_WORKER_AFTER_SECONDS:
            no_worker()
            no_worker = None
        await asyncio.sleep(poll)
