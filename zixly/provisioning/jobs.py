"""arq jobs for the instance lifecycle: ids in, a small summary out, one job per operation.

Job ids are deterministic (``provision:<tenant>``, ``upgrade:<tenant>:<version>``...): arq
refuses a job whose id is queued or running, so enqueueing the same operation twice runs
it once. Results are not kept (``keep_result=0``), so the same operation can be enqueued
again once it finished. Each job converges under the tenant's lock; an error that may pass
(lock busy, n8n or the database unreachable, the row changed meanwhile) retries with
exponential back-off, anything else fails the job (the row says FAILED and why). A running
job holds a short lease (zixly.provisioning.lease): if its worker dies, another takes it up
within the lease, and the retry is recorded with the step it resumes from.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from arq import Retry
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, OperationalError

from zixly.core.errors import UnavailableError
from zixly.core.settings import Settings
from zixly.provisioning.instance_events import publish
from zixly.provisioning.instances import (
    ConcurrentChangeError,
    EventKind,
    InstanceRepository,
    InstanceRow,
)
from zixly.provisioning.lease import job_lease
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.n8n.errors import N8nUnavailableError
from zixly.provisioning.operations import STAFF, HealthCheckError, InstanceBusyError, Operation
from zixly.provisioning.reconciler import Reconciler
from zixly.provisioning.runtimes.errors import InstanceNotFoundError, RuntimeFailure

MAX_TRIES = 6
MAX_BACKOFF_SECONDS = 300
JOB_TIMEOUT_SECONDS = 900  # provisioning waits up to the ready timeout, twice for an upgrade
DEFAULT_LEASE_SECONDS = 15.0  # without settings in the job's context (Settings.job_lease_seconds)

JobResult = dict[str, Any]


def backoff(job_try: int) -> int:
    """Seconds before try ``job_try + 1``: 5, 10, 20, 40... capped at five minutes."""
    return int(min(MAX_BACKOFF_SECONDS, 5 * 2 ** max(0, job_try - 1)))


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, InstanceNotFoundError):
        return False
    return isinstance(
        exc,
        (
            InstanceBusyError,
            ConcurrentChangeError,
            N8nUnavailableError,
            HealthCheckError,
            UnavailableError,
            RuntimeFailure,
            RedisError,
            OperationalError,
            ConnectionError,
            TimeoutError,
        ),
    ) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def summary(row: InstanceRow) -> JobResult:
    return {
        "tenant_id": str(row.tenant_id),
        "desired_state": row.desired_state.value,
        "actual_state": row.actual_state.value,
        "step": row.step.value if row.step else None,
        "version": row.version,
        "last_error": row.last_error,
    }


async def _run(
    ctx: dict[str, Any], tenant_id: str, call: Callable[[], Awaitable[InstanceRow]]
) -> JobResult:
    """Run ``call`` under the job's lease (zixly.provisioning.lease); a retry, e.g. of a job
    whose worker died, is recorded with the step it resumes from."""
    job_try = int(ctx.get("job_try") or 1)
    settings: Settings | None = ctx.get("settings")
    lease = settings.job_lease_seconds if settings is not None else DEFAULT_LEASE_SECONDS
    try:
        async with job_lease(ctx, lease):
            if job_try > 1:
                await _note_retry(_lifecycle(ctx), uuid.UUID(tenant_id), job_try)
            return summary(await call())
    except Exception as exc:
        if is_transient(exc) and job_try < MAX_TRIES:
            raise Retry(defer=backoff(job_try)) from exc
        raise


async def _note_retry(lifecycle: InstanceLifecycle, tenant_id: uuid.UUID, job_try: int) -> None:
    async with lifecycle.db.transaction(STAFF) as session:
        repo = InstanceRepository(session)
        row = await repo.get(tenant_id)
        if row is None:
            return
        step = row.step.value if row.step else "none"
        record = await repo.add_event(
            tenant_id,
            EventKind.REPAIR,
            f"job retried (try {job_try}); resuming after step {step}",
            step=row.step,
            details={"job_try": job_try, "actual_state": row.actual_state.value},
        )
    await publish(lifecycle.redis, record)


def _lifecycle(ctx: dict[str, Any]) -> InstanceLifecycle:
    lifecycle: InstanceLifecycle = ctx["lifecycle"]
    return lifecycle


# --- the jobs (arq names them by function name) ---------------------------------------------


async def provision_instance(
    ctx: dict[str, Any],
    tenant_id: str,
    version: str | None = None,
    templates: list[Any] | None = None,
) -> JobResult:
    lifecycle, tenant = _lifecycle(ctx), uuid.UUID(tenant_id)
    return await _run(
        ctx, tenant_id, lambda: lifecycle.provision(tenant, version=version, templates=templates)
    )


async def start_instance(ctx: dict[str, Any], tenant_id: str) -> JobResult:
    return await _run(ctx, tenant_id, lambda: _lifecycle(ctx).start(uuid.UUID(tenant_id)))


async def stop_instance(ctx: dict[str, Any], tenant_id: str) -> JobResult:
    return await _run(ctx, tenant_id, lambda: _lifecycle(ctx).stop(uuid.UUID(tenant_id)))


async def restart_instance(ctx: dict[str, Any], tenant_id: str) -> JobResult:
    return await _run(ctx, tenant_id, lambda: _lifecycle(ctx).restart(uuid.UUID(tenant_id)))


async def suspend_instance(ctx: dict[str, Any], tenant_id: str) -> JobResult:
    return await _run(ctx, tenant_id, lambda: _lifecycle(ctx).suspend(uuid.UUID(tenant_id)))


async def resume_instance(ctx: dict[str, Any], tenant_id: str) -> JobResult:
    return await _run(ctx, tenant_id, lambda: _lifecycle(ctx).resume(uuid.UUID(tenant_id)))


async def upgrade_instance(ctx: dict[str, Any], tenant_id: str, version: str) -> JobResult:
    return await _run(
        ctx, tenant_id, lambda: _lifecycle(ctx).upgrade(uuid.UUID(tenant_id), version)
    )


async def deploy_instance_templates(
    ctx: dict[str, Any], tenant_id: str, templates: list[Any]
) -> JobResult:
    return await _run(
        ctx, tenant_id, lambda: _lifecycle(ctx).deploy_templates(uuid.UUID(tenant_id), templates)
    )


async def deprovision_instance(ctx: dict[str, Any], tenant_id: str) -> JobResult:
    return await _run(ctx, tenant_id, lambda: _lifecycle(ctx).deprovision(uuid.UUID(tenant_id)))


async def reconcile_instances(ctx: dict[str, Any]) -> dict[str, Any]:
    reconciler: Reconciler = ctx["reconciler"]
    return (await reconciler.run()).as_dict()


# Registered by the worker under JOB_NAMES (zixly.provisioning.enqueue), which is what
# whoever enqueues names.
JOBS: dict[Operation, Callable[..., Awaitable[JobResult]]] = {
    Operation.PROVISION: provision_instance,
    Operation.START: start_instance,
    Operation.STOP: stop_instance,
    Operation.RESTART: restart_instance,
    Operation.SUSPEND: suspend_instance,
    Operation.RESUME: resume_instance,
    Operation.UPGRADE: upgrade_instance,
    Operation.DEPLOY_TEMPLATES: deploy_instance_templates,
    Operation.DEPROVISION: deprovision_instance,
}
