"""The arq worker: instance lifecycle jobs and the reconciler, every minute.

Run it with ``zixly worker`` (which starts the embedded PostgreSQL and Redis when no URL is
configured, and hands their URLs over in the worker's ``ctx``). Jobs and results travel as
JSON, not pickle: a job carries ids and plain values only, and nothing in Redis can make
the worker run code.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from arq import cron, func
from arq.connections import RedisSettings

from zixly.alerts.jobs import DELIVER_JOB, deliver_alerts
from zixly.core.errors import ZixlyError
from zixly.core.logging import configure_logging, get_logger
from zixly.core.outages import watched
from zixly.core.settings import Settings, get_settings
from zixly.db.session import Database, create_engine
from zixly.integrations.refresh import refresh_expiring_tokens
from zixly.integrations.sync import SYNC_JOB, sync_integration
from zixly.keys.rotation import ROTATION_JOB, ROTATION_TIMEOUT_SECONDS, rotate_encryption_keys
from zixly.monitor.jobs import MONITOR_JOB, MONITOR_TIMEOUT_SECONDS, monitor_sync_health
from zixly.provisioning import jobs
from zixly.provisioning.final_exports import PURGE_JOB, purge_final_exports
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.reconciler import Reconciler
from zixly.provisioning.runtimes.base import InstanceRuntime
from zixly.provisioning.runtimes.process import ProcessRuntime
from zixly.security.crypto import Keyring

log = get_logger("zixly.workers.settings")
RECONCILE_TIMEOUT_SECONDS = 600


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


def build_runtime(settings: Settings) -> InstanceRuntime:
    if settings.n8n_runtime == "docker":
        from zixly.provisioning.runtimes.docker import DockerRuntime
        from zixly.provisioning.runtimes.podman import docker_client

        # The engine from DOCKER_HOST (Docker, or Podman's API socket), else the local
        # Podman API service (`zixly podman start`).
        return DockerRuntime(docker_client())
    return ProcessRuntime(settings.data_dir)


def build_lifecycle(
    settings: Settings,
    db: Database,
    redis: Any,
    http: httpx.AsyncClient,
    *,
    runtime: InstanceRuntime | None = None,
    lock_wait: float = 0.0,
) -> InstanceLifecycle:
    return InstanceLifecycle(
        db,
        redis,
        runtime or build_runtime(settings),
        Keyring.from_settings(settings),
        http,
        version=settings.n8n_version,
        ready_timeout=settings.n8n_ready_timeout_seconds,
        lock_ttl=settings.job_lease_seconds,
        lock_wait=lock_wait,
        ingest_url=settings.ingest_base_url,
        provider_base_urls=settings.provider_base_urls,
    )


def build_reconciler(settings: Settings, lifecycle: InstanceLifecycle) -> Reconciler:
    # An in-flight row left alone for two leases has no live job (a running one renews its
    # lease and holds the tenant's lock; a queued one the reconciler may run first, under
    # that lock, never at the same time), e.g. an in-process CLI operation that was killed.
    return Reconciler(
        lifecycle,
        retry_failed_after=timedelta(seconds=settings.reconcile_retry_failed_seconds),
        grace=timedelta(seconds=max(30.0, 2 * settings.job_lease_seconds)),
    )


async def startup(ctx: dict[str, Any]) -> None:
    """Build what the jobs use; ``ctx`` may carry ``settings``, ``database_url`` and a
    ready ``runtime``."""
    settings: Settings = ctx.setdefault("settings", get_settings())
    database_url = ctx.get("database_url") or settings.database_url
    if not database_url:
        raise ZixlyError("the worker needs a database URL (run it with `zixly worker`)")
    db = Database(create_engine(database_url, settings), settings)
    http = httpx.AsyncClient(timeout=httpx.Timeout(30.0))
    # A job waits up to one lease for the tenant's lock: a dead worker's lapses by then.
    lifecycle = build_lifecycle(
        settings,
        db,
        ctx["redis"],
        http,
        runtime=ctx.get("runtime"),
        lock_wait=settings.job_lease_seconds,
    )
    ctx.update(
        db=db,
        http=http,
        lifecycle=lifecycle,
        reconciler=build_reconciler(settings, lifecycle),
    )
    log.info("worker.started", runtime=lifecycle.runtime.name)


async def shutdown(ctx: dict[str, Any]) -> None:
    http: httpx.AsyncClient | None = ctx.get("http")
    if http is not None:
        await http.aclose()
    db: Database | None = ctx.get("db")
    if db is not None:
        await db.dispose()


def _job(coroutine: Any) -> Any:
    return func(
        coroutine,
        timeout=jobs.JOB_TIMEOUT_SECONDS,
        keep_result=0,
        max_tries=jobs.MAX_TRIES,
    )


class WorkerSettings:
    functions = [
        *(_job(job) for job in jobs.JOBS.values()),
        # Resumable: a retry continues with whatever is still under an old key.
        func(
            rotate_encryption_keys,
            name=ROTATION_JOB,
            timeout=ROTATION_TIMEOUT_SECONDS,
            keep_result=0,
            max_tries=jobs.MAX_TRIES,
        ),
        # Sends due alert deliveries, then schedules itself for the next one due.
        func(deliver_alerts, name=DELIVER_JOB, keep_result=0, max_tries=jobs.MAX_TRIES),
        # After a connect: the token into n8n, the provider's workflows run once.
        func(sync_integration, name=SYNC_JOB, keep_result=0, max_tries=jobs.MAX_TRIES),
    ]
    # Every cron reports an outage of PostgreSQL or Redis as one outage.started line and
    # one outage.ended line (zixly.core.outages.watched), not a traceback per tick.
    cron_jobs = [
        # Final exports past ZIXLY_FINAL_EXPORT_RETENTION_DAYS, daily.
        cron(
            purge_final_exports,
            name=PURGE_JOB,
            hour=3,
            minute=17,
            second=0,
            unique=True,
            keep_result=0,
            max_tries=1,
        ),
        cron(
            watched(jobs.reconcile_instances),
            name="reconcile_instances",
            second=0,  # every minute
            unique=True,
            timeout=RECONCILE_TIMEOUT_SECONDS,
            keep_result=0,
            max_tries=1,
        ),
        cron(
            watched(refresh_expiring_tokens),
            name="refresh_expiring_tokens",
            minute=set(range(0, 60, 2)),  # every 2 minutes: the window is 10
            second=15,
            unique=True,
            keep_result=0,
            max_tries=1,
        ),
        # Retries of failed alert deliveries (a successful first attempt is immediate).
        cron(
            watched(deliver_alerts, "deliver_alerts_sweep"),
            name="deliver_alerts_sweep",
            second=45,
            unique=True,
            keep_result=0,
            max_tries=1,
        ),
        # Sync health: every running instance's new n8n runs folded into its integrations.
        cron(
            watched(monitor_sync_health),
            name=MONITOR_JOB,
            second=30,  # every minute
            unique=True,
            timeout=MONITOR_TIMEOUT_SECONDS,
            keep_result=0,
            max_tries=1,
        ),
    ]
    job_serializer = staticmethod(serialize)
    job_deserializer = staticmethod(deserialize)
    on_startup = staticmethod(startup)
    on_shutdown = staticmethod(shutdown)
    max_jobs = 8
    job_timeout = jobs.JOB_TIMEOUT_SECONDS
    keep_result = 0


def run_worker(settings: Settings) -> int:
    """``zixly worker``: the embedded services if not configured, then arq until a signal."""
    import asyncio

    from arq.worker import create_worker

    from zixly.dev.server import running_stack

    configure_logging(settings.log_level, settings.log_json)

    async def main() -> None:
        async with running_stack(settings) as endpoints:
            worker = create_worker(
                WorkerSettings,  # type: ignore[arg-type]
                redis_settings=RedisSettings.from_dsn(endpoints.redis_url),
                ctx={"settings": settings, "database_url": endpoints.database_url},
            )
            try:
                await worker.async_run()
            except asyncio.CancelledError:
                pass  # SIGINT/SIGTERM: arq cancels its main task to stop
            finally:
                await worker.close()

    asyncio.run(main())
    return 0


def reconcile_once(settings: Settings, only: list[str] | None = None) -> dict[str, Any]:
    """``zixly reconcile``: one reconciler pass without a worker; returns its report.
    ``only``: tenants by id or slug (an unknown one is NOT_FOUND before anything runs)."""
    import asyncio

    from redis.asyncio import Redis

    from zixly.dev.server import running_stack
    from zixly.provisioning.control import resolve_tenant

    configure_logging(settings.log_level, settings.log_json)

    async def main() -> dict[str, Any]:
        async with running_stack(settings) as endpoints:
            db = Database(create_engine(endpoints.database_url, settings), settings)
            redis = Redis.from_url(endpoints.redis_url)
            http = httpx.AsyncClient(timeout=httpx.Timeout(30.0))
            try:
                tenants = None if only is None else [await resolve_tenant(db, t) for t in only]
                lifecycle = build_lifecycle(settings, db, redis, http)
                report = await build_reconciler(settings, lifecycle).run(only=tenants)
                return report.as_dict()
            finally:
                await http.aclose()
                await redis.aclose()
                await db.dispose()

    return asyncio.run(main())
