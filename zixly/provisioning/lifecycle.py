"""The persisted state machine of a tenant's n8n instance.

Two columns drive it. ``desired_state`` is what was asked for (RUNNING, STOPPED, SUSPENDED,
ABSENT); operations only change it (and ``target_version`` / ``templates``) and then
*converge*: bring the actual state to the desired one, one idempotent step at a time.
``actual_state`` is what the lifecycle last reached::

    PENDING ─▶ PROVISIONING ─▶ RUNNING ◀──▶ STOPPED | SUSPENDED
                    │             │  ▲
                    │             ▼  │ (success, or rolled back)
                    │          UPGRADING
                    ▼
    any ─────▶ DEPROVISIONING ─▶ DEPROVISIONED      any step failing ─▶ FAILED (last_error)

Provisioning steps, each recorded in ``step`` when done, so a retried job resumes::

    SECRETS       encryption key + owner password generated, stored as bound ciphertext
    CREATED       runtime.create (the runtime's handle stored)
    STARTED       runtime.start
    READY         health check: the process lives and n8n answers its readiness probes
    BOOTSTRAPPED  owner account set up, API key created and stored encrypted
    TEMPLATES     workflow templates created (matched by name: never twice) and activated;
                  on later deploys upgraded in place unless the customer edited them
    DONE          actual state RUNNING

On resume, SECRETS is never redone (a new encryption key would make the instance's data
unreadable); CREATED/STARTED/READY are re-checked every time (cheap and idempotent: the
process may have died while no job ran); BOOTSTRAPPED and TEMPLATES are skipped when done.
Deprovisioning records EXPORTED (the workflows are in ``workflow_exports``) and REMOVED.

FAILED is not terminal: the next attempt (a job retry, or the reconciler after a back-off)
converges from the recorded step. A job killed mid-step (worker crash, cancellation) leaves
the state as it was (PROVISIONING, UPGRADING...); its arq lease lapses within
``ZIXLY_JOB_LEASE_SECONDS`` and another worker runs it again from the recorded step
(zixly.provisioning.lease); the reconciler remains the backstop.

One operation per tenant at a time: a Redis lock with a short TTL that a heartbeat keeps
alive while the operation runs, so a dead worker's lock lapses within ``lock_ttl`` seconds.
Deprovisioning also revokes every live ingest token of the tenant. An upgrade checks that the
new version can run (zixly.provisioning.preconditions) before it stops anything.
Each step commits on its own (jobs are their own transaction boundary), appends an
``instance_events`` row and publishes it on ``zixly:instances:<tenant_id>`` after the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import ConflictError, NotFoundError, ValidationError
from zixly.core.logging import get_logger
from zixly.db.session import Database
from zixly.provisioning.instances import (
    ActualState,
    ConcurrentChangeError,
    DesiredState,
    EventKind,
    EventRecord,
    InstanceRepository,
    InstanceRow,
)
from zixly.provisioning.operations import (
    REQUESTS,
    STAFF,
    Operation,
    StepHook,
    Template,
    load_templates,
    template_sources,
)
from zixly.provisioning.preconditions import ensure_version_runs
from zixly.provisioning.records import ATTEMPTING
from zixly.provisioning.runtimes.base import (
    InstanceRuntime,
    ResourceLimits,
)
from zixly.provisioning.runtimes.distributions import check_version
from zixly.provisioning.runtimes.errors import InstallError
from zixly.provisioning.secrets import InstanceSecretBox
from zixly.provisioning.steps import LifecycleSteps
from zixly.provisioning.tenant_lock import TenantLock
from zixly.security.crypto import Keyring

log = get_logger("zixly.provisioning.lifecycle")


class InstanceLifecycle(LifecycleSteps):
    def __init__(
        self,
        db: Database,
        redis: Redis,
        runtime: InstanceRuntime,
        keyring: Keyring,
        http: httpx.AsyncClient,
        *,
        version: str,
        ready_timeout: float = 120.0,
        limits: ResourceLimits | None = None,
        lock_ttl: float = 60.0,
        lock_wait: float = 0.0,
        on_step: StepHook | None = None,
        ingest_url: str | None = None,
        provider_base_urls: Mapping[str, str] | None = None,
    ) -> None:
        self.db = db
        self.redis = redis
        self.runtime = runtime
        self.secrets = InstanceSecretBox(keyring)
        self.http = http
        self.version = check_version(version)
        self.ready_timeout = ready_timeout
        self.limits = limits or ResourceLimits()
        self.lock_ttl = lock_ttl
        self.lock_wait = lock_wait
        self.on_step = on_step
        self.ingest_url = ingest_url  # what manifest templates post to (zixly.ingest_url)
        # provider:<name> (the settings' provider_base_urls: the sandbox in dev and tests)
        self.provider_base_urls = dict(provider_base_urls or {})

    # --- operations -------------------------------------------------------------------------
    async def provision(
        self,
        tenant_id: uuid.UUID,
        *,
        version: str | None = None,
        templates: Sequence[Template] | None = None,
    ) -> InstanceRow:
        await self.request(tenant_id, Operation.PROVISION, version=version, templates=templates)
        # Templates added to an instance that is already up are deployed now.
        return await self.converge(tenant_id, deploy=templates is not None)

    async def start(self, tenant_id: uuid.UUID) -> InstanceRow:
        await self.request(tenant_id, Operation.START)
        return await self.converge(tenant_id)

    async def stop(self, tenant_id: uuid.UUID) -> InstanceRow:
        await self.request(tenant_id, Operation.STOP)
        return await self.converge(tenant_id)

    async def restart(self, tenant_id: uuid.UUID) -> InstanceRow:
        await self.request(tenant_id, Operation.RESTART)
        return await self.converge(tenant_id, restart=True)

    async def suspend(self, tenant_id: uuid.UUID) -> InstanceRow:
        await self.request(tenant_id, Operation.SUSPEND)
        return await self.converge(tenant_id)

    async def resume(self, tenant_id: uuid.UUID) -> InstanceRow:
        await self.request(tenant_id, Operation.RESUME)
        return await self.converge(tenant_id)

    async def upgrade(self, tenant_id: uuid.UUID, version: str) -> InstanceRow:
        """Move to ``version``; if it does not come up healthy, roll back (data kept)."""
        await self.request(tenant_id, Operation.UPGRADE, version=version)
        return await self.converge(tenant_id)

    async def deploy_templates(
        self, tenant_id: uuid.UUID, templates: Sequence[Template]
    ) -> InstanceRow:
        await self.request(tenant_id, Operation.DEPLOY_TEMPLATES, templates=templates)
        return await self.converge(tenant_id, deploy=True)

    async def deprovision(self, tenant_id: uuid.UUID) -> InstanceRow:
        """Export every workflow into ``workflow_exports``, then remove the instance."""
        await self.request(tenant_id, Operation.DEPROVISION)
        return await self.converge(tenant_id)

    # --- requests: change what is desired --------------------------------------------------
    async def request(
        self,
        tenant_id: uuid.UUID,
        operation: Operation,
        *,
        version: str | None = None,
        templates: Sequence[Template] | None = None,
    ) -> InstanceRow:
        """Record what ``operation`` asks for (in its own transaction); no runtime work."""
        async with self.db.transaction(STAFF) as session:
            row, record = await self.request_in(
                session, tenant_id, operation, version=version, templates=templates
            )
        if record is not None:
            await self._publish(record)
        return row

    async def request_in(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        operation: Operation,
        *,
        version: str | None = None,
        templates: Sequence[Template] | None = None,
    ) -> tuple[InstanceRow, EventRecord | None]:
        """``request`` inside a caller's (staff) transaction, e.g. an API mutation that
        enqueues the job after its commit. Returns the row and the event to publish."""
        if version is not None:
            try:
                check_version(version)
            except InstallError as exc:
                raise ValidationError(exc.message, field="version") from exc
        sources = template_sources(templates) if templates is not None else None
        repo = InstanceRepository(session)
        row = await repo.get(tenant_id, for_update=True)
        allowed, desired = REQUESTS[operation]
        if row is None or (
            operation is Operation.PROVISION and row.actual_state is ActualState.DEPROVISIONED
        ):
            if operation is not Operation.PROVISION:
                raise NotFoundError("this tenant has no n8n instance", tenant_id=str(tenant_id))
            return await self._new_instance(repo, row, tenant_id, version, sources or [])
        if row.runtime != self.runtime.name:
            raise ConflictError(
                f"the instance runs on the {row.runtime} runtime, this worker on "
                f"{self.runtime.name}"
            )
        if row.desired_state not in allowed:
            raise ConflictError(
                f"cannot {operation.value} an instance whose desired state is "
                f"{row.desired_state.value}",
                desired_state=row.desired_state.value,
            )
        if operation in (Operation.UPGRADE, Operation.DEPLOY_TEMPLATES) and not row.provisioned:
            raise ConflictError(f"cannot {operation.value} an instance still being provisioned")
        if operation is Operation.UPGRADE and version is not None and version != row.version:
            await ensure_version_runs(self.runtime, version)  # before anything is stopped
        values: dict[str, Any] = {}
        if desired is not row.desired_state:
            values["desired_state"] = desired
        if operation is Operation.UPGRADE and version is not None:
            values["target_version"] = None if version == row.version else version
        if operation is Operation.PROVISION and version is not None and not row.provisioned:
            values["version"] = version
        if sources is not None:
            merged = list(row.templates) + [s for s in sources if s not in row.templates]
            if merged != row.templates:
                load_templates(merged)  # names stay unique across all of them
                values["templates"] = merged
        values = {k: v for k, v in values.items() if getattr(row, k) != v}
        if not values:
            return row, None
        row = await repo.update(row, **values)
        record = await repo.add_event(
            tenant_id,
            EventKind.REQUESTED,
            f"{operation.value} requested",
            details={
                "operation": operation.value,
                "desired_state": row.desired_state.value,
                "target_version": row.target_version,
            },
        )
        return row, record

    async def _new_instance(
        self,
        repo: InstanceRepository,
        old: InstanceRow | None,
        tenant_id: uuid.UUID,
        version: str | None,
        templates: list[Any],
    ) -> tuple[InstanceRow, EventRecord]:
        if await repo.tenant_slug(tenant_id) is None:
            raise NotFoundError("no such tenant", tenant_id=str(tenant_id))
        chosen = version or self.version
        if old is None:
            row = await repo.insert(
                tenant_id, runtime=self.runtime.name, version=chosen, templates=templates
            )
            if row is None:  # created concurrently, after our read
                raise ConflictError("the instance was created concurrently; retry")
        else:  # provisioning again after a deprovision: a fresh start, fresh secrets
            row = await repo.update(
                old,
                desired_state=DesiredState.RUNNING,
                actual_state=ActualState.PENDING,
                step=None,
                runtime=self.runtime.name,
                runtime_handle=None,
                version=chosen,
                target_version=None,
                templates=templates,
                url=None,
                editor_url=None,
                last_error=None,
            )
        record = await repo.add_event(
            tenant_id,
            EventKind.REQUESTED,
            "provision requested",
            details={"operation": "provision", "version": chosen, "runtime": self.runtime.name},
        )
        return row, record

    # --- converge: make the actual state the desired one -------------------------------------
    async def converge(
        self,
        tenant_id: uuid.UUID,
        *,
        restart: bool = False,
        deploy: bool = False,
        reason: str | None = None,
    ) -> InstanceRow:
        """Bring the actual state to the desired one; ``reason`` (the reconciler's) is
        recorded as a REPAIR event once the tenant's lock is held."""
        async with self.lock(tenant_id):
            row = await self.get(tenant_id)
            if row.runtime != self.runtime.name:
                raise ConflictError(f"the instance runs on the {row.runtime} runtime")
            if reason is not None:
                await self._event(row, EventKind.REPAIR, reason)
            ATTEMPTING.set(None)
            try:
                return await self._converge(row, restart=restart, deploy=deploy)
            except ConcurrentChangeError:
                raise  # the row changed under us: not a failure of the instance
            except Exception as exc:
                await self._record_failure(tenant_id, exc, ATTEMPTING.get())
                raise

    def lock(self, tenant_id: uuid.UUID, *, wait: float | None = None) -> TenantLock:
        return TenantLock(
            self.redis,
            tenant_id,
            ttl=self.lock_ttl,
            wait=self.lock_wait if wait is None else wait,
        )

    async def _converge(self, row: InstanceRow, *, restart: bool, deploy: bool) -> InstanceRow:
        desired = row.desired_state
        if desired is DesiredState.ABSENT:
            return await self._deprovision(row)
        if desired in (DesiredState.STOPPED, DesiredState.SUSPENDED):
            return await self._halt(row, ActualState(desired.value))
        if not row.provisioned:
            return await self._provision(row)
        if row.target_version and row.target_version != row.version:
            return await self._upgrade(row)
        row = await self._ensure_running(row, restart=restart)
        if deploy:
            row = await self._deploy(row)
        return row
