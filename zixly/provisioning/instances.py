"""Tenant n8n instances in the database: states, the instance row, events, workflow exports.

The provisioning jobs are platform work: they run in a staff-scoped transaction (the staff
policy is the path across tenants), and every query here still names its tenant.
Writes to an instance row are compare-and-set on ``lock_version``: a writer whose copy is
stale (someone changed the desired state meanwhile, or another worker took over) gets
``ConcurrentChangeError`` instead of overwriting newer state.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import ConflictError
from zixly.db.models import InstanceEvent, N8nInstance, Tenant, WorkflowExport

T = cast(Table, N8nInstance.__table__)
E = cast(Table, InstanceEvent.__table__)
X = cast(Table, WorkflowExport.__table__)
TENANTS = cast(Table, Tenant.__table__)


class DesiredState(enum.StrEnum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUSPENDED = "SUSPENDED"
    ABSENT = "ABSENT"


class ActualState(enum.StrEnum):
    PENDING = "PENDING"  # requested; nothing done yet
    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUSPENDED = "SUSPENDED"
    UPGRADING = "UPGRADING"
    DEPROVISIONING = "DEPROVISIONING"
    DEPROVISIONED = "DEPROVISIONED"
    FAILED = "FAILED"  # last_error says why; the next attempt resumes from ``step``


class Step(enum.StrEnum):
    """The last completed step of provisioning (then of deprovisioning)."""

    SECRETS = "SECRETS"
    CREATED = "CREATED"
    STARTED = "STARTED"
    READY = "READY"
    BOOTSTRAPPED = "BOOTSTRAPPED"
    TEMPLATES = "TEMPLATES"
    DONE = "DONE"
    EXPORTED = "EXPORTED"
    REMOVED = "REMOVED"


PROVISION_STEPS = (
    Step.SECRETS,
    Step.CREATED,
    Step.STARTED,
    Step.READY,
    Step.BOOTSTRAPPED,
    Step.TEMPLATES,
    Step.DONE,
)


def provision_progress(step: Step | None) -> int:
    """How many provisioning steps are complete (deprovisioning steps count as all)."""
    if step is None:
        return 0
    if step in PROVISION_STEPS:
        return PROVISION_STEPS.index(step) + 1
    return len(PROVISION_STEPS)


class EventKind(enum.StrEnum):
    REQUESTED = "REQUESTED"  # the desired state (or version, or templates) changed
    TRANSITION = "TRANSITION"  # the actual state changed
    STEP = "STEP"  # a provisioning/deprovisioning step completed
    HEALTH = "HEALTH"
    ERROR = "ERROR"
    EXPORT = "EXPORT"
    REPAIR = "REPAIR"  # the reconciler acted on drift


class ConcurrentChangeError(ConflictError):
    """The instance row changed since it was read; re-read and try again."""

    code = "CONCURRENT_CHANGE"


@dataclass(frozen=True)
class InstanceRow:
    tenant_id: uuid.UUID
    desired_state: DesiredState
    actual_state: ActualState
    step: Step | None
    runtime: str
    runtime_handle: dict[str, Any] | None
    version: str
    target_version: str | None
    url: str | None
    editor_url: str | None
    templates: list[Any]
    last_health: dict[str, Any] | None
    last_health_at: datetime | None
    last_error: str | None
    encryption_key_ciphertext: str | None
    owner_password_ciphertext: str | None
    api_key_ciphertext: str | None
    owner_email: str | None
    lock_version: int
    created_at: datetime
    updated_at: datetime
    # what Zixly last wrote per template workflow (zixly.provisioning.n8n.fingerprints)
    template_fingerprints: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> InstanceRow:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["desired_state"] = DesiredState(values["desired_state"])
        values["actual_state"] = ActualState(values["actual_state"])
        values["step"] = Step(values["step"]) if values["step"] else None
        return cls(**values)

    @property
    def provisioned(self) -> bool:
        """Provisioning finished once (later steps are deprovisioning ones)."""
        return provision_progress(self.step) == len(PROVISION_STEPS)

    def __repr__(self) -> str:  # the ciphertexts are not secret, but noise in logs
        return (
            f"InstanceRow(tenant_id={self.tenant_id}, desired={self.desired_state}, "
            f"actual={self.actual_state}, step={self.step}, version={self.version!r})"
        )


@dataclass(frozen=True)
class EventRecord:
    id: int
    tenant_id: uuid.UUID
    at: datetime
    kind: EventKind
    step: Step | None
    message: str
    details: dict[str, Any] | None

    def as_message(self) -> dict[str, Any]:
        """The JSON published on the tenant's Redis channel."""
        return {
            "id": self.id,
            "tenant_id": str(self.tenant_id),
            "at": self.at.isoformat(),
            "kind": self.kind.value,
            "step": self.step.value if self.step else None,
            "message": self.message,
            "details": self.details or {},
        }


class InstanceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: uuid.UUID, *, for_update: bool = False) -> InstanceRow | None:
        query = select(T).where(T.c.tenant_id == tenant_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).mappings().first()
        return InstanceRow.from_mapping(row) if row is not None else None

    async def all(self) -> list[InstanceRow]:
        rows = (await self.session.execute(select(T).order_by(T.c.tenant_id))).mappings().all()
        return [InstanceRow.from_mapping(row) for row in rows]

    async def tenant_ids(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of ``ids`` have an instance row."""
        if not ids:
            return set()
        query = select(T.c.tenant_id).where(T.c.tenant_id.in_(list(ids)))
        return set((await self.session.execute(query)).scalars().all())

    async def tenant_slug(self, tenant_id: uuid.UUID) -> str | None:
        query = select(TENANTS.c.slug).where(TENANTS.c.id == tenant_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def insert(
        self,
        tenant_id: uuid.UUID,
        *,
        runtime: str,
        version: str,
        templates: list[Any],
        desired: DesiredState = DesiredState.RUNNING,
    ) -> InstanceRow | None:
        """The new row, or None when the tenant has one already."""
        statement = (
            insert(T)
            .values(
                tenant_id=tenant_id,
                desired_state=desired.value,
                runtime=runtime,
                version=version,
                templates=templates,
            )
            .on_conflict_do_nothing(index_elements=[T.c.tenant_id])
            .returning(*T.c)
        )
        row = (await self.session.execute(statement)).mappings().first()
        return InstanceRow.from_mapping(row) if row is not None else None

    async def update(self, current: InstanceRow, **values: Any) -> InstanceRow:
        """Write ``values`` if the row is still at ``current.lock_version``."""
        values = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in values.items()}
        statement = (
            update(T)
            .where(T.c.tenant_id == current.tenant_id, T.c.lock_version == current.lock_version)
            .values(**values, lock_version=T.c.lock_version + 1, updated_at=func.now())
            .returning(*T.c)
        )
        row = (await self.session.execute(statement)).mappings().first()
        if row is None:
            raise ConcurrentChangeError(
                "the instance changed meanwhile", tenant_id=str(current.tenant_id)
            )
        return InstanceRow.from_mapping(row)

    async def record_health(self, tenant_id: uuid.UUID, health: Mapping[str, Any]) -> None:
        """An observation, not a state change: ``lock_version`` stays as it is."""
        statement = (
            update(T)
            .where(T.c.tenant_id == tenant_id)
            .values(last_health=dict(health), last_health_at=func.now())
        )
        await self.session.execute(statement)

    async def add_event(
        self,
        tenant_id: uuid.UUID,
        kind: EventKind,
        message: str,
        *,
        step: Step | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> EventRecord:
        statement = (
            insert(E)
            .values(
                tenant_id=tenant_id,
                kind=kind.value,
                step=step.value if step else None,
                message=message,
                details=dict(details) if details else None,
            )
            .returning(*E.c)
        )
        row = (await self.session.execute(statement)).mappings().one()
        return _event(row)

    async def events(self, tenant_id: uuid.UUID) -> list[EventRecord]:
        query = select(E).where(E.c.tenant_id == tenant_id).order_by(E.c.id)
        return [_event(row) for row in (await self.session.execute(query)).mappings().all()]

    async def add_export(
        self, tenant_id: uuid.UUID, reason: str, bundle: Mapping[str, Any]
    ) -> uuid.UUID:
        statement = (
            insert(X)
            .values(tenant_id=tenant_id, reason=reason, bundle=dict(bundle))
            .returning(X.c.id)
        )
        export_id: uuid.UUID = (await self.session.execute(statement)).scalar_one()
        return export_id

    async def exports(self, tenant_id: uuid.UUID) -> list[dict[str, Any]]:
        query = (
            select(X.c.id, X.c.created_at, X.c.reason, X.c.bundle)
            .where(X.c.tenant_id == tenant_id)
            .order_by(X.c.created_at, X.c.id)
        )
        return [dict(row) for row in (await self.session.execute(query)).mappings().all()]


def _event(row: Mapping[Any, Any]) -> EventRecord:
    return EventRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        at=row["at"],
        kind=EventKind(row["kind"]),
        step=Step(row["step"]) if row["step"] else None,
        message=row["message"],
        details=row["details"],
    )
