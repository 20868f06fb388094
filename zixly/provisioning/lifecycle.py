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

import asyncio
import contextlib
import contextvars
import enum
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import ConflictError, NotFoundError, ValidationError, ZixlyError
from zixly.core.logging import get_logger, redact_text
from zixly.db.session import Database, Scope
from zixly.ingest.instance_tokens import instance_token_issuer, revoke_all
from zixly.provisioning.instance_events import publish
from zixly.provisioning.instances import (
    ActualState,
    ConcurrentChangeError,
    DesiredState,
    EventKind,
    EventRecord,
    InstanceRepository,
    InstanceRow,
    Step,
    provision_progress,
)
from zixly.provisioning.n8n.bootstrap import BootstrapResult, bootstrap_instance
from zixly.provisioning.n8n.bundles import envelope, export_bundle
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.n8n.errors import N8nUnavailableError
from zixly.provisioning.n8n.fingerprints import records_from_json
from zixly.provisioning.preconditions import VersionUnavailableError, ensure_version_runs
from zixly.provisioning.runtimes.base import (
    InstanceHandle,
    InstanceRuntime,
    InstanceSpec,
    ResourceLimits,
    RuntimeState,
    RuntimeStatus,
)
from zixly.provisioning.runtimes.distributions import check_version
from zixly.provisioning.runtimes.errors import InstallError
from zixly.provisioning.secrets import InstanceSecretBox, SecretField
from zixly.provisioning.templates import (
    bundled_manifest,
    deploy_templates,
    template_id,
    tenant_values,
    with_integration_tokens,
    with_provider_urls,
)
from zixly.security.crypto import Keyring

log = get_logger("zixly.provisioning.lifecycle")
STAFF = Scope(tenant_id=None, staff=True)
ENCRYPTION_KEY_ENV = "N8N_ENCRYPTION_KEY"
_ERROR_LIMIT = 500

Template = str | Path | Mapping[str, Any]
StepHook = Callable[[uuid.UUID, Step], Awaitable[None]]
# The step an operation is working on, for the failure message (one value per job's task).
_attempting: contextvars.ContextVar[Step | None] = contextvars.ContextVar(
    "zixly_instance_step", default=None
)


class Operation(enum.StrEnum):
    PROVISION = "provision"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    SUSPEND = "suspend"
    RESUME = "resume"
    UPGRADE = "upgrade"
    DEPLOY_TEMPLATES = "deploy_templates"
    DEPROVISION = "deprovision"


_R, _S, _P, _A = (
    DesiredState.RUNNING,
    DesiredState.STOPPED,
    DesiredState.SUSPENDED,
    DesiredState.ABSENT,
)
# operation -> (desired states it may be requested from, the desired state it asks for).
# A suspended instance (billing hold) is left only by ``resume``; an instance being removed
# only by a new ``provision`` once it is DEPROVISIONED.
REQUESTS: Mapping[Operation, tuple[frozenset[DesiredState], DesiredState]] = {
    Operation.PROVISION: (frozenset({_R, _S}), _R),
    Operation.START: (frozenset({_R, _S}), _R),
    Operation.RESTART: (frozenset({_R, _S}), _R),
    Operation.STOP: (frozenset({_R, _S}), _S),
    Operation.SUSPEND: (frozenset({_R, _S, _P}), _P),
    Operation.RESUME: (frozenset({_R, _P}), _R),
    Operation.UPGRADE: (frozenset({_R}), _R),
    Operation.DEPLOY_TEMPLATES: (frozenset({_R}), _R),
    Operation.DEPROVISION: (frozenset({_R, _S, _P, _A}), _A),
}


class InstanceBusyError(ConflictError):
    """Another operation holds this tenant's instance lock."""

    code = "INSTANCE_BUSY"


class HealthCheckError(ZixlyError):
    """A started instance did not become healthy (it exited, or never answered)."""

    code = "INSTANCE_UNHEALTHY"
    http_status = 503


def describe(exc: BaseException) -> str:
    """A message safe to store and show: our errors' own messages (which never carry
    secrets), only the type of anything else."""
    if isinstance(exc, ZixlyError):
        text = f"{exc.code}: {exc.message}"
    else:
        text = type(exc).__name__
    return redact_text(text)[:_ERROR_LIMIT]


def load_templates(sources: Sequence[Template]) -> list[dict[str, Any]]:
    """Workflow exports from JSON files or given as dicts; names must be unique (across the
    manifest templates, ``manifest:<id>``, too, which are rendered at deploy instead)."""
    loaded: list[dict[str, Any]] = []
    names: list[str] = []
    for source in sources:
        manifest_id = template_id(source)
        if manifest_id is not None:  # an unknown id raises TemplateError (a ValidationError)
            names.append(bundled_manifest().get(manifest_id).name)
            continue
        if isinstance(source, Mapping):
            workflow: Any = json.loads(json.dumps(source))
        else:
            try:
                workflow = json.loads(Path(source).read_text())
            except (OSError, ValueError) as exc:
                raise ValidationError(
                    f"workflow template {Path(source).name!r} is not a readable JSON file",
                    field="templates",
                ) from exc
        if not isinstance(workflow, dict) or not workflow.get("name"):
            raise ValidationError("a workflow template needs a name", field="templates")
        loaded.append(workflow)
    names += [str(w["name"]) for w in loaded]
    if len(set(names)) != len(names):
        raise ValidationError("workflow template names must be unique", field="templates")
    return loaded


def template_sources(sources: Sequence[Template]) -> list[Any]:
    """What the row keeps to redeploy later: absolute paths, the workflow JSON itself, or
    ``manifest:<id>`` (rendered for the tenant at each deploy)."""
    load_templates(sources)  # validate now rather than in the job
    return [_kept(s) for s in sources]


def _kept(source: Template) -> Any:
    if isinstance(source, Mapping):
        return json.loads(json.dumps(source))
    return source if template_id(source) is not None else str(Path(source).resolve())


def handle_of(row: InstanceRow) -> InstanceHandle | None:
    if not row.runtime_handle:
        return None
    stored = row.runtime_handle
    return InstanceHandle(
        runtime=str(stored["runtime"]),
        instance_id=str(stored["instance_id"]),
        tenant_id=str(stored["tenant_id"]),
        labels={str(k): str(v) for k, v in dict(stored.get("labels", {})).items()},
    )


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


class InstanceLifecycle:
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
            _attempting.set(None)
            try:
                return await self._converge(row, restart=restart, deploy=deploy)
            except ConcurrentChangeError:
                raise  # the row changed under us: not a failure of the instance
            except Exception as exc:
                await self._record_failure(tenant_id, exc, _attempting.get())
                raise

    def lock(self, tenant_id: uuid.UUID, *, wait: float | None = None) -> TenantLock:
        return TenantLock(
            self.redis,
            tenant_id,
            ttl=self.lock_ttl,
            wait=self.lock_wait if wait is None else wait,
        )

    async def get(self, tenant_id: uuid.UUID) -> InstanceRow:
        async with self.db.transaction(STAFF) as session:
            row = await InstanceRepository(session).get(tenant_id)
        if row is None:
            raise NotFoundError("this tenant has no n8n instance", tenant_id=str(tenant_id))
        return row

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

    # --- provisioning ------------------------------------------------------------------------
    async def _provision(self, row: InstanceRow) -> InstanceRow:
        if row.actual_state is not ActualState.PROVISIONING:
            row = await self._transition(row, ActualState.PROVISIONING, "provisioning")
        # Never twice: a new encryption key would make the instance's data unreadable.
        if row.encryption_key_ciphertext is None:
            _attempting.set(Step.SECRETS)
            sealed = self.secrets.generate(row.tenant_id, await self._slug(row.tenant_id))
            row = await self._step(row, Step.SECRETS, **sealed.columns())
        _attempting.set(Step.CREATED)
        row, handle = await self._create(row)
        row = await self._step(row, Step.CREATED)
        _attempting.set(Step.STARTED)
        row, status = await self._start(row, handle)
        row = await self._step(row, Step.STARTED)
        _attempting.set(Step.READY)
        row = await self._healthy(row, handle, status)
        row = await self._step(row, Step.READY)
        if not _done(row, Step.BOOTSTRAPPED):
            _attempting.set(Step.BOOTSTRAPPED)
            row, _ = await self._bootstrap(row, templates=False)
            row = await self._step(row, Step.BOOTSTRAPPED)
        if not _done(row, Step.TEMPLATES):
            _attempting.set(Step.TEMPLATES)
            row, result = await self._bootstrap(row, templates=True)
            row = await self._step(row, Step.TEMPLATES, details=_deployed(result))
        _attempting.set(Step.DONE)
        row = await self._transition(
            row,
            ActualState.RUNNING,
            "provisioned",
            event_step=Step.DONE,
            step=Step.DONE,
            last_error=None,
        )
        await self._hook(row, Step.DONE)
        return row

    async def _create(
        self, row: InstanceRow, *, version: str | None = None
    ) -> tuple[InstanceRow, InstanceHandle]:
        slug = await self._slug(row.tenant_id)
        spec = InstanceSpec(
            tenant_id=str(row.tenant_id),
            tenant_slug=slug,
            version=version or row.version,
            # N8N_PATH: the editor is served behind Zixly's proxy at /editor/<slug>/
            # (zixly/http/editor_proxy.py); n8n rewrites its assets' base path to it.
            env={
                ENCRYPTION_KEY_ENV: self.secrets.encryption_key(row).reveal(),
                "N8N_PATH": f"/editor/{slug}/",
            },
            limits=self.limits,
        )
        handle = await self.runtime.create(spec)
        stored = asdict(handle) | {"labels": dict(handle.labels)}
        if stored != row.runtime_handle:
            row = await self._write(row, runtime_handle=stored)
        return row, handle

    async def _start(
        self, row: InstanceRow, handle: InstanceHandle
    ) -> tuple[InstanceRow, RuntimeStatus]:
        status = await self.runtime.start(handle)
        if status.url and status.url != row.url:
            row = await self._write(row, url=status.url, editor_url=f"{status.url}/")
        return row, status

    async def _healthy(
        self, row: InstanceRow, handle: InstanceHandle, status: RuntimeStatus
    ) -> InstanceRow:
        """Wait until the process lives and n8n answers; fail fast if the process exits."""
        deadline = time.monotonic() + self.ready_timeout
        url = status.url
        while True:
            current = await self.runtime.inspect(handle)
            if current.state is not RuntimeState.RUNNING:
                code = f" (exit code {current.exit_code})" if current.exit_code is not None else ""
                raise HealthCheckError(
                    f"n8n is {current.state.value.lower()} instead of starting up{code}"
                )
            url = current.url or url
            if url is None:
                raise HealthCheckError("the runtime reports no URL for the instance")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HealthCheckError(f"n8n did not become ready within {self.ready_timeout:.0f}s")
            try:
                await N8nClient(url, self.http).wait_ready(min(3.0, remaining))
            except N8nUnavailableError:
                continue
            health = {"ok": True, "state": current.state.value, "url": url}
            return await self._write(row, last_health=health, last_health_at=_now())

    async def _bootstrap(
        self, row: InstanceRow, *, templates: bool
    ) -> tuple[InstanceRow, BootstrapResult]:
        """Owner and API key (stored encrypted when new); with ``templates``, the row's
        workflow templates too (created once, matched by name, activated)."""
        if row.url is None:
            raise HealthCheckError("the instance has no URL yet")
        workflows = load_templates(row.templates) if templates else []
        chosen = [template_id(s) for s in row.templates] if templates else []
        specs = [bundled_manifest().get(i) for i in chosen if i is not None]
        prepare = None
        if specs:
            async with self.db.transaction(STAFF) as session:
                tenant = await tenant_values(
                    session,
                    row.tenant_id,
                    ingest_url=self.ingest_url,
                    ingest_token=instance_token_issuer(self.db, row.tenant_id),
                )
                # integration:<provider>: the access tokens of the moment (kept current later
                # by zixly.provisioning.credentials).
                tenant = await with_integration_tokens(session, tenant, self.secrets.keyring)
                tenant = await with_provider_urls(session, tenant, self.provider_base_urls)

            async def prepare(api: N8nClient, cookie: str) -> list[dict[str, Any]]:
                return await deploy_templates(api, cookie, specs, tenant)

        result = await bootstrap_instance(
            N8nClient(row.url, self.http),
            self.secrets.for_bootstrap(row),
            workflows,
            ready_timeout=self.ready_timeout,
            prepare=prepare,
            recorded=records_from_json(row.template_fingerprints) if templates else None,
        )
        stored = self.secrets.open(row, SecretField.API_KEY)
        if stored is None or stored.reveal() != result.api_key:
            sealed = self.secrets.seal(row.tenant_id, SecretField.API_KEY, result.api_key)
            row = await self._write(row, api_key_ciphertext=sealed)
        if templates:
            row = await self._record_templates(row, result)
        return row, result

    async def _record_templates(self, row: InstanceRow, result: BootstrapResult) -> InstanceRow:
        """Keep what was written (for the next deploy's upgrade check) and tell about the
        template workflows left alone because they differ from what Zixly wrote."""
        kept = dict(row.template_fingerprints or {})
        kept.update({name: r.as_json() for name, r in result.fingerprints.items()})
        if kept != row.template_fingerprints:
            row = await self._write(row, template_fingerprints=kept)
        for name, reason in result.skipped.items():
            why = (
                "has local changes"
                if reason == "edited"
                else "differs from its template and Zixly has no record of writing it"
            )
            await self._event(
                row,
                EventKind.STEP,
                f"template workflow {name!r} {why}; not updated",
                step=Step.TEMPLATES,
                details={
                    "template": name,
                    "workflow_id": result.workflow_ids.get(name),
                    "outcome": "skipped",
                    "reason": reason,
                },
            )
        return row

    # --- running, stopping -------------------------------------------------------------------
    async def _ensure_running(self, row: InstanceRow, *, restart: bool) -> InstanceRow:
        handle = handle_of(row)
        observed = await self.runtime.inspect(handle) if handle else None
        missing = observed is None or observed.state is RuntimeState.MISSING
        if restart and not missing and handle is not None:
            await self.runtime.stop(handle)
        row, handle = await self._create(row)  # a no-op unless the instance went missing
        row, status = await self._start(row, handle)
        row = await self._healthy(row, handle, status)
        if missing:  # its data may be gone with it: set the owner, key and templates up again
            await self._event(row, EventKind.REPAIR, "the runtime instance was missing; re-created")
            row, _ = await self._bootstrap(row, templates=True)
        if row.actual_state is not ActualState.RUNNING or row.last_error is not None:
            row = await self._transition(row, ActualState.RUNNING, "running", last_error=None)
        return row

    async def _halt(self, row: InstanceRow, target: ActualState) -> InstanceRow:
        handle = handle_of(row)
        if handle is not None:
            await self.runtime.stop(handle)
        if row.actual_state is not target or row.last_error is not None:
            row = await self._transition(row, target, target.value.lower(), last_error=None)
        return row

    async def _deploy(self, row: InstanceRow) -> InstanceRow:
        _attempting.set(Step.TEMPLATES)
        row, result = await self._bootstrap(row, templates=True)
        await self._event(
            row,
            EventKind.STEP,
            "templates deployed",
            step=Step.TEMPLATES,
            details=_deployed(result),
        )
        return row

    # --- upgrade -----------------------------------------------------------------------------
    async def _upgrade(self, row: InstanceRow) -> InstanceRow:
        old, new = row.version, str(row.target_version)
        handle = handle_of(row)
        if handle is None:
            raise ZixlyError("the instance has no runtime handle to upgrade")
        if row.actual_state is not ActualState.UPGRADING:
            try:  # checked again: the request may be older than what the runtime has now
                await ensure_version_runs(self.runtime, new)
            except VersionUnavailableError as exc:
                message = f"upgrade to {new} refused, still running {old}: {describe(exc)}"
                return await self._write(
                    row,
                    event=(EventKind.ERROR, message, None),
                    target_version=None,
                    last_error=message[:_ERROR_LIMIT],
                )
        if row.actual_state is not ActualState.UPGRADING:
            row = await self._transition(
                row, ActualState.UPGRADING, f"upgrading {old} -> {new}", details={"to": new}
            )
        try:
            row = await self._switch_version(row, handle, new)
        except Exception as exc:
            reason = describe(exc)
            log.warning("instance.upgrade_failed", tenant_id=str(row.tenant_id), error=reason)
            row = await self.get(row.tenant_id)  # the failed attempt may have written to it
            await self._event(
                row, EventKind.ERROR, f"upgrade to {new} failed; rolling back to {old}: {reason}"
            )
            row = await self._switch_version(row, handle, old)
            return await self._transition(
                row,
                ActualState.RUNNING,
                f"rolled back to {old}",
                version=old,
                target_version=None,
                last_error=f"upgrade to {new} failed (rolled back to {old}): {reason}",
            )
        return await self._transition(
            row,
            ActualState.RUNNING,
            f"upgraded to {new}",
            version=new,
            target_version=None,
            last_error=None,
        )

    async def _switch_version(
        self, row: InstanceRow, handle: InstanceHandle, version: str
    ) -> InstanceRow:
        await self.runtime.stop(handle)
        row, handle = await self._create(row, version=version)
        row, status = await self._start(row, handle)
        return await self._healthy(row, handle, status)

    # --- deprovisioning ----------------------------------------------------------------------
    async def _deprovision(self, row: InstanceRow) -> InstanceRow:
        if row.actual_state is ActualState.DEPROVISIONED:
            return row
        if row.actual_state is not ActualState.DEPROVISIONING:
            row = await self._transition(row, ActualState.DEPROVISIONING, "deprovisioning")
        handle = handle_of(row)
        if row.step not in (Step.EXPORTED, Step.REMOVED):
            _attempting.set(Step.EXPORTED)
            row, bundle = await self._export(row, handle)
            async with self.db.transaction(STAFF) as session:
                repo = InstanceRepository(session)
                export_id = await repo.add_export(row.tenant_id, "DEPROVISION", bundle)
                row = await repo.update(row, step=Step.EXPORTED)
                record = await repo.add_event(
                    row.tenant_id,
                    EventKind.EXPORT,
                    f"exported {len(bundle['workflows'])} workflow(s)",
                    step=Step.EXPORTED,
                    details={"export_id": str(export_id), "workflows": len(bundle["workflows"])},
                )
            await self._publish(record)
            await self._hook(row, Step.EXPORTED)
        # Nothing may post for the tenant any more (every attempt: it is idempotent). The
        # instance's API key, owner login and the provider tokens pushed into its credentials
        # go with its data (runtime.remove) and the row's secrets below.
        revoked = await revoke_all(self.db, row.tenant_id, reason="deprovisioned")
        if row.step is not Step.REMOVED:
            _attempting.set(Step.REMOVED)
            if handle is not None:
                await self.runtime.remove(handle)
            row = await self._step(row, Step.REMOVED)
        return await self._transition(
            row,
            ActualState.DEPROVISIONED,
            "deprovisioned",
            details={"ingest_tokens_revoked": revoked},
            runtime_handle=None,
            url=None,
            editor_url=None,
            encryption_key_ciphertext=None,
            owner_password_ciphertext=None,
            api_key_ciphertext=None,
            last_error=None,
        )

    async def _export(
        self, row: InstanceRow, handle: InstanceHandle | None
    ) -> tuple[InstanceRow, dict[str, Any]]:
        """Every workflow, as the bundle n8n's own import takes (zixly.provisioning.n8n.bundles)."""
        api_key = self.secrets.open(row, SecretField.API_KEY)
        if handle is None or api_key is None:
            return row, envelope([], n8n_version=row.version)
        row, status = await self._start(row, handle)
        row = await self._healthy(row, handle, status)
        assert row.url is not None
        api = N8nClient(row.url, self.http, api_key=api_key.reveal())
        return row, await export_bundle(api, n8n_version=row.version)

    # --- recording ---------------------------------------------------------------------------
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
                last_error=message[:_ERROR_LIMIT],
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


def _done(row: InstanceRow, step: Step) -> bool:
    return provision_progress(row.step) >= provision_progress(step)


def _deployed(result: BootstrapResult) -> dict[str, Any]:
    return {
        "workflows": result.workflow_ids,
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "skipped": result.skipped,
    }


def _now() -> datetime:
    return datetime.now(UTC)
