"""Instance operations as the API and the CLI use them.

Staff operations record the intent (desired state, version, templates) in the caller's
transaction and enqueue the operation's job only once that transaction has committed: a job
never starts on a request that was rolled back, and a job that runs before a commit would
find nothing to do. The job id is deterministic, so asking twice queues one job.

A tenant's own n8n is reached through the API key stored for it. The key's column is readable
only through the staff policy, so ``TenantN8n`` reads it as platform work, for the tenant id
it is given: callers pass the authenticated caller's own tenant (``ctx.tenant(Role.ADMIN)``),
never an argument. The key never leaves this module; n8n failures leave as UNAVAILABLE
without n8n's internal address.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from arq import ArqRedis
from arq.jobs import Job
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import NotFoundError, UnavailableError
from zixly.db.session import Database
from zixly.domain.tenants import SLUG_PATTERN
from zixly.provisioning.enqueue import enqueue
from zixly.provisioning.instance_events import publish
from zixly.provisioning.instances import TENANTS, ActualState, InstanceRepository, InstanceRow, T
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.n8n.bundle_export import export_bundle
from zixly.provisioning.n8n.bundle_format import ImportReport
from zixly.provisioning.n8n.bundle_import import import_bundle
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.n8n.errors import N8nError
from zixly.provisioning.operations import STAFF, Operation, Template
from zixly.provisioning.secrets import InstanceSecretBox, SecretField
from zixly.provisioning.templates import plan_templates
from zixly.security.crypto import Keyring

# The arguments each operation's job takes besides the tenant id.
JOB_ARGUMENTS: Mapping[Operation, tuple[str, ...]] = {
    Operation.PROVISION: ("version", "templates"),
    Operation.UPGRADE: ("version",),
    Operation.DEPLOY_TEMPLATES: ("templates",),
}
# How long a tenant's request waits for its n8n to accept a connection.
TENANT_RETRY_SECONDS = 1.0
_REACHABLE = frozenset({ActualState.RUNNING, ActualState.UPGRADING})


async def request_and_enqueue(
    lifecycle: InstanceLifecycle,
    transaction: AbstractAsyncContextManager[AsyncSession],
    queue: ArqRedis,
    tenant_id: uuid.UUID,
    operation: Operation,
    *,
    version: str | None = None,
    templates: Sequence[Template] | None = None,
    plan_defaults: bool = False,
) -> tuple[InstanceRow, Job | None]:
    """Record ``operation`` in ``transaction``; after its commit, publish the event and
    enqueue the job (None: the same job is already queued or running). ``plan_defaults``:
    a provision without templates deploys the plan's (``provision_templates``)."""
    async with transaction as session:
        if operation is Operation.PROVISION and plan_defaults:
            templates = await provision_templates(session, tenant_id, templates)
        row, record = await lifecycle.request_in(
            session, tenant_id, operation, version=version, templates=templates
        )
    if record is not None:
        await publish(lifecycle.redis, record)
    given = {"version": version, "templates": templates}
    arguments = {
        name: given[name] for name in JOB_ARGUMENTS.get(operation, ()) if given[name] is not None
    }
    return row, await enqueue(queue, operation, tenant_id, **arguments)


async def provision_templates(
    session: AsyncSession, tenant_id: uuid.UUID, templates: Sequence[Template] | None
) -> Sequence[Template] | None:
    """What a provision request deploys: the templates named; when none are named, for a
    tenant without a live instance its plan's default templates (an instance already there
    keeps its own). Naming an empty list asks for none."""
    if templates is not None:
        return templates
    row = await InstanceRepository(session).get(tenant_id)
    if row is not None and row.actual_state is not ActualState.DEPROVISIONED:
        return None
    return await plan_templates(session, tenant_id)


@dataclass(frozen=True)
class TenantInstance:
    """What a tenant's own members may see of its instance."""

    actual_state: ActualState
    version: str
    editor_url: str | None
    last_health: dict[str, Any] | None
    last_health_at: datetime | None


async def tenant_instance(session: AsyncSession, tenant_id: uuid.UUID) -> TenantInstance | None:
    """Through the caller's own tenant session (RLS and the column grants apply)."""
    query = select(
        T.c.actual_state, T.c.version, T.c.editor_url, T.c.last_health, T.c.last_health_at
    ).where(T.c.tenant_id == tenant_id)
    row = (await session.execute(query)).mappings().first()
    if row is None:
        return None
    return TenantInstance(
        actual_state=ActualState(row["actual_state"]),
        version=row["version"],
        editor_url=row["editor_url"],
        last_health=row["last_health"],
        last_health_at=row["last_health_at"],
    )


@contextlib.asynccontextmanager
async def reachable() -> AsyncIterator[None]:
    """n8n failures as UNAVAILABLE, without n8n's address or request details."""
    try:
        yield
    except N8nError as exc:
        raise UnavailableError(
            "your n8n instance could not complete the request; try again shortly",
            reason=exc.code,
        ) from exc


class TenantN8n:
    def __init__(self, db: Database, keyring: Keyring, http: httpx.AsyncClient) -> None:
        self.db = db
        self.secrets = InstanceSecretBox(keyring)
        self.http = http

    async def client(self, tenant_id: uuid.UUID) -> tuple[N8nClient, InstanceRow]:
        async with self.db.transaction(STAFF) as session:
            row = await InstanceRepository(session).get(tenant_id)
        if row is None or row.actual_state is ActualState.DEPROVISIONED:
            raise NotFoundError("your tenant has no n8n instance")
        key = self.secrets.open(row, SecretField.API_KEY)
        if row.actual_state not in _REACHABLE or row.url is None or key is None:
            raise UnavailableError(
                f"your n8n instance is not running (it is {row.actual_state.value.lower()})",
                state=row.actual_state.value,
            )
        return N8nClient(
            row.url,
            self.http,
            api_key=key.reveal(),
            retry_for=TENANT_RETRY_SECONDS,
            version=row.version,
        ), row

    async def workflows(self, tenant_id: uuid.UUID) -> list[dict[str, Any]]:
        api, _ = await self.client(tenant_id)
        async with reachable():
            listed = await api.all_workflows()
        return sorted(listed, key=lambda w: (str(w.get("name")), str(w.get("id"))))

    async def export(self, tenant_id: uuid.UUID, ids: Sequence[str] | None) -> dict[str, Any]:
        api, row = await self.client(tenant_id)
        async with reachable():
            return await export_bundle(api, ids, n8n_version=row.version)

    async def import_(
        self, tenant_id: uuid.UUID, bundle: object, *, activate: bool = False
    ) -> ImportReport:
        api, _ = await self.client(tenant_id)
        # import_bundle reports n8n's failures per workflow itself; an unreachable n8n stops
        # it, reported on the workflow it stopped at.
        return await import_bundle(api, bundle, activate=activate)


async def find_tenant(session: AsyncSession, ref: str) -> uuid.UUID | None:
    """A tenant's id by id or slug (a staff session)."""
    try:
        condition = TENANTS.c.id == uuid.UUID(ref)
    except ValueError:
        if not SLUG_PATTERN.fullmatch(ref):  # no slug looks like it (NUL, spaces...)
            return None
        condition = TENANTS.c.slug == ref
    found: uuid.UUID | None = (
        await session.execute(select(TENANTS.c.id).where(condition))
    ).scalar_one_or_none()
    return found


async def resolve_tenant(db: Database, ref: str) -> uuid.UUID:
    """What every command does with its tenant argument: an id or a slug, else NOT_FOUND
    (the CLI prints it and exits 2)."""
    async with db.transaction(STAFF) as session:
        found = await find_tenant(session, ref)
    if found is None:
        raise NotFoundError(f"no tenant {ref!r}", field="tenant")
    return found


async def all_tenants(session: AsyncSession) -> Sequence[Any]:
    """Every tenant by slug (a staff session; an operator's listing, not paged)."""
    query = select(TENANTS.c.id, TENANTS.c.slug).order_by(TENANTS.c.slug)
    return (await session.execute(query)).all()
