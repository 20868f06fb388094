"""Outages of PostgreSQL and Redis: what a failed call means, and one log line per outage.

``unavailable(exc)`` turns what the drivers raise when a dependency cannot serve a request
(refused or lost connections, connect timeouts, no pooled connection free in time, a
statement cancelled by its statement timeout) into the typed error the client gets: 503
with ``Retry-After``, ``QUERY_TIMEOUT`` for a cancelled statement, ``UNAVAILABLE`` for the
rest. Anything else gives ``None`` and stays what it is (a bug is not an outage).

``OutageWatch`` is for background jobs: a cron that fails every tick while the database is
down logs ``outage.started`` once and ``outage.ended`` when a run succeeds again, instead of
a traceback per tick; ``watched(job)`` wraps an arq job with it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from zixly.core.errors import (
    QueryTimeoutError,
    ServiceUnavailableError,
    UnavailableError,
    ZixlyError,
)
from zixly.core.logging import get_logger

log = get_logger("zixly.core.outages")

POSTGRES = "postgres"
REDIS = "redis"
# query_canceled: statement_timeout (and an operator's pg_cancel_backend).
QUERY_CANCELED = "57014"
# Connection exceptions (class 08), too many connections, the server shutting down or
# starting: the database cannot serve, whatever the statement.
_DOWN_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")
# Seconds a client is told to wait: a free connection is a moment away; an outage is not.
POOL_RETRY_AFTER = 1


def _sqlstate(exc: BaseException) -> str | None:
    for candidate in (getattr(exc, "orig", None), exc):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it (SQLAlchemy's ``orig`` included), innermost last."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return seen


def component_of(exc: BaseException) -> str | None:
    """``postgres`` or ``redis`` when ``exc`` means that dependency cannot serve right now
    (an ``OSError`` counts when it was raised inside that dependency's driver)."""
    chain = _chain(exc)
    for error in chain:
        if isinstance(error, RedisConnectionError | RedisTimeoutError):
            return REDIS
        if isinstance(error, PoolTimeoutError):
            return POSTGRES
        if isinstance(error, DBAPIError):
            state = _sqlstate(error)
            if state is not None and (state == QUERY_CANCELED or state.startswith(_DOWN_SQLSTATES)):
                return POSTGRES
            if state is None and isinstance(error, OperationalError | InterfaceError):
                return POSTGRES  # the connection broke: no server answer to classify
            return None
    for error in chain:
        if isinstance(error, OSError):  # refused, reset, unreachable, connect timeout
            modules = _raised_in(error)
            if any(m.startswith(("asyncpg", "sqlalchemy")) for m in modules):
                return POSTGRES
            if any(m.startswith("redis") for m in modules):
                return REDIS
    return None


def _raised_in(exc: BaseException) -> set[str]:
    """The modules of the frames ``exc`` passed through."""
    modules: set[str] = set()
    tb = exc.__traceback__
    while tb is not None:
        modules.add(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    return modules


def unavailable(exc: BaseException) -> UnavailableError | None:
    """The typed error ``exc`` amounts to when PostgreSQL or Redis could not serve (an
    ``OSError`` only when raised inside their drivers), else ``None``."""
    if isinstance(exc, UnavailableError):
        return exc
    if isinstance(exc, ZixlyError):
        return None
    chain = _chain(exc)
    if any(isinstance(e, PoolTimeoutError) for e in chain):
        return ServiceUnavailableError(
            "the server is busy: no database connection was free in time; try again shortly",
            retry_after=POOL_RETRY_AFTER,
        )
    if any(_sqlstate(e) == QUERY_CANCELED for e in chain if isinstance(e, DBAPIError)):
        return QueryTimeoutError(
            "the query took too long and was cancelled; try again later or ask for less"
        )
    component = component_of(exc)
    if component == POSTGRES:
        return ServiceUnavailableError("the database is unavailable; try again shortly")
    if component == REDIS:
        return ServiceUnavailableError("a required service is unavailable; try again shortly")
    return None


@contextmanager
def typed_outages() -> Iterator[None]:
    """Errors in the block that mean "PostgreSQL or Redis cannot serve now" leave as their
    typed error (``unavailable``), caused by the original; the rest as they are."""
    try:
        yield
    except Exception as exc:
        typed = unavailable(exc)
        if typed is None or typed is exc:
            raise
        raise typed from exc


@dataclass
class _Outage:
    since: float
    jobs: set[str]
    failures: int = 0


class OutageWatch:
    """Logs each outage of a dependency once when it starts and once when it ends."""

    def __init__(self) -> None:
        self._open: dict[str, _Outage] = {}

    def failed(self, component: str, job: str, exc: BaseException) -> None:
        outage = self._open.get(component)
        if outage is None:
            outage = self._open[component] = _Outage(time.monotonic(), set())
            log.error(
                "outage.started",
                component=component,
                job=job,
                error=f"{type(exc).__name__}: {_first_line(exc)}",
            )
        outage.jobs.add(job)
        outage.failures += 1

    def succeeded(self, job: str) -> None:
        """A run that completed: every dependency it needed answered, so outages end."""
        for component, outage in list(self._open.items()):
            del self._open[component]
            log.warning(
                "outage.ended",
                component=component,
                job=job,
                failed_runs=outage.failures,
                jobs=sorted(outage.jobs),
                duration_s=round(time.monotonic() - outage.since, 1),
            )

    def down(self) -> list[str]:
        return sorted(self._open)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


Job = TypeVar("Job", bound=Callable[..., Awaitable[Any]])


def watched(job: Job, name: str | None = None) -> Job:
    """An arq job that, when PostgreSQL or Redis is down, reports it through the worker's
    ``OutageWatch`` (``ctx["outages"]``) and returns ``{"outage": component}`` instead of
    failing with a traceback; any other error is raised as before."""
    label = name or job.__name__

    @functools.wraps(job)
    async def run(ctx: dict[str, Any]) -> Any:
        watch: OutageWatch = ctx.setdefault("outages", OutageWatch())
        try:
            result = await job(ctx)
        except Exception as exc:
            component = component_of(exc)
            if component is None:
                raise
            watch.failed(component, label, exc)
            return {"outage": component}
        watch.succeeded(label)
        return result

    return cast(Job, run)
