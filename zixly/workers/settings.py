"""The arq worker: instance lifecycle jobs and the reconciler, every minute.

Run it with ``zixly worker`` (which starts the embedded PostgreSQL and Redis when no URL is
configured, and hands their URLs over in the worker's ``ctx``). Jobs and results travel as
JSON, not pickle: a job carries ids and plain values only, and nothing in Redis can make
the worker run code.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from arq import cron, func
from arq.connections import RedisSettings

from zixly.alerts.jobs import DELIVER_JOB, deliver_alerts
from zixly.container import Services
from zixly.core.errors import ZixlyError
from zixly.core.logging import configure_logging, get_logger
from zixly.core.outages import watched
from zixly.core.queue import deserialize, serialize
from zixly.core.settings import Settings, get_settings
from zixly.integrations.refresh import refresh_expiring_tokens
from zixly.integrations.sync import SYNC_JOB, sync_integration
from zixly.keys.rotation import ROTATION_JOB, ROTATION_TIMEOUT_SECONDS, rotate_encryption_keys
from zixly.monitor.jobs import MONITOR_JOB, MONITOR_TIMEOUT_SECONDS, monitor_sync_health
from zixly.provisioning import jobs
from zixly.provisioning.enqueue import JOB_NAMES
from zixly.provisioning.final_exports import PURGE_JOB, purge_final_exports

log = get_logger("zixly.workers.settings")
RECONCILE_TIMEOUT_SECONDS = 600


def _redis_url(ctx: dict[str, Any], settings: Settings) -> str:
    """The Redis the worker was started on (arq's own pool in ``ctx["redis"]``)."""
    given = ctx.get("redis_url") or settings.redis_url
    if given:
        return str(given)
    kwargs = ctx["redis"].connection_pool.connection_kwargs
    password = kwargs.get("password")
    auth = f":{quote(str(password), safe='')}@" if password else ""
    return f"redis://{auth}{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


async def startup(ctx: dict[str, Any]) -> None:
    """Build what the jobs use (``zixly.container``); ``ctx`` may carry ``settings``,
    ``database_url``, ``redis_url`` and a ready ``runtime``."""
    settings: Settings = ctx.setdefault("settings", get_settings())
    database_url = ctx.get("database_url") or settings.database_url
    if not database_url:
        raise ZixlyError("the worker needs a database URL (run it with `zixly worker`)")
    # A job waits up to one lease for the tenant's lock: a dead worker's lapses by then.
    services = Services.build(
        settings,
        database_url=database_url,
        redis_url=_redis_url(ctx, settings),
        runtime=ctx.get("runtime"),
        lock_wait=settings.job_lease_seconds,
        http_timeout=30.0,
    )
    ctx.update(
        services=services,
        db=services.db,
        http=services.http,
        keyring=services.keyring,
        alerts=services.alerts,
        tenant_n8n=services.tenant_n8n,
        lifecycle=services.lifecycle,
        reconciler=services.reconciler,
    )
    log.info("worker.started", runtime=services.lifecycle.runtime.name)


async def shutdown(ctx: dict[str, Any]) -> None:
    services: Services | None = ctx.get("services")
    if services is not None:
        await services.close()


def _job(coroutine: Any, name: str) -> Any:
    return func(
        coroutine,
        name=name,
        timeout=jobs.JOB_TIMEOUT_SECONDS,
        keep_result=0,
        max_tries=jobs.MAX_TRIES,
    )


class WorkerSettings:
    functions = [
        *(_job(job, JOB_NAMES[op]) for op, job in jobs.JOBS.items()),
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

    from zixly.embedded.running import running_stack

    configure_logging(settings.log_level, settings.log_json)

    async def main() -> None:
        async with running_stack(settings) as endpoints:
            worker = create_worker(
                WorkerSettings,  # type: ignore[arg-type]
                redis_settings=RedisSettings.from_dsn(endpoints.redis_url),
                ctx={
                    "settings": settings,
                    "database_url": endpoints.database_url,
                    "redis_url": endpoints.redis_url,
                },
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

    from zixly.embedded.running import running_stack
    from zixly.provisioning.control import resolve_tenant

    configure_logging(settings.log_level, settings.log_json)

    async def main() -> dict[str, Any]:
        async with running_stack(settings) as endpoints:
            services = Services.build(
                settings,
                database_url=endpoints.database_url,
                redis_url=endpoints.redis_url,
                http_timeout=30.0,
            )
            try:
                tenants = (
                    None if only is None else [await resolve_tenant(services.db, t) for t in only]
                )
                report = await services.reconciler.run(only=tenants)
                return report.as_dict()
            finally:
                await services.close()

    return asyncio.run(main())
