"""The job queue's wire format and its client: JSON jobs over arq, below everything that
enqueues.

Jobs and results travel as JSON, not pickle: a job carries ids and plain values only, and
nothing in Redis can make a worker run code. Whoever enqueues uses ``job_queue`` (the same
codec as the worker's ``WorkerSettings``) and names the job; nothing that enqueues imports
the worker or a job function (as in arq, whose enqueue side never imports its worker).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, cast

from arq import ArqRedis
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
