"""GraphQL types of tenant n8n instances: the staff view, the tenant's own view, workflows."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from zixly.provisioning.control import TenantInstance
from zixly.provisioning.final_exports import FinalExport as KeptExport
from zixly.provisioning.instance_events import InstanceEventMessage
from zixly.provisioning.instances import ActualState, DesiredState, EventKind, InstanceRow, Step
from zixly.provisioning.n8n.bundle_format import ImportedWorkflow, ImportReport, WorkflowProblem

InstanceStatus = strawberry.enum(
    ActualState, name="InstanceStatus", description="What the lifecycle last reached."
)
InstanceDesiredState = strawberry.enum(
    DesiredState, name="InstanceDesiredState", description="What was last asked for."
)
InstanceStep = strawberry.enum(
    Step, name="InstanceStep", description="The last completed (de)provisioning step."
)
InstanceEventKind = strawberry.enum(EventKind, name="InstanceEventKind")


@strawberry.type(description="A tenant's n8n instance as Zixly staff see it.")
class Instance:
    tenant_id: strawberry.ID
    status: InstanceStatus = strawberry.field(description="The actual state.")  # type: ignore[valid-type]
    desired_state: InstanceDesiredState  # type: ignore[valid-type]
    step: InstanceStep | None  # type: ignore[valid-type]
    version: str
    target_version: str | None
    url: str | None
    editor_url: str | None
    last_error: str | None
    updated_at: dt.datetime

    @classmethod
    def from_row(cls, row: InstanceRow) -> Instance:
        return cls(
            tenant_id=strawberry.ID(str(row.tenant_id)),
            status=row.actual_state,
            desired_state=row.desired_state,
            step=row.step,
            version=row.version,
            target_version=row.target_version,
            url=row.url,
            editor_url=row.editor_url,
            last_error=row.last_error,
            updated_at=row.updated_at,
        )


@strawberry.type(description="Progress of an operation on a tenant's instance.")
class InstanceEvent:
    kind: InstanceEventKind  # type: ignore[valid-type]
    step: InstanceStep | None  # type: ignore[valid-type]
    message: str
    at: dt.datetime

    @classmethod
    def from_message(cls, event: InstanceEventMessage) -> InstanceEvent:
        return cls(kind=event.kind, step=event.step, message=event.message, at=event.at)


@strawberry.type(description="Your tenant's own n8n instance.")
class N8nInstance:
    status: InstanceStatus  # type: ignore[valid-type]
    version: str
    editor_url: str | None = strawberry.field(
        description="Your n8n editor behind Zixly: sign in once at <editorUrl>login?token=<your "
        "Zixly token> (EDITOR or ADMIN); the editor's own password is never shared."
    )
    health: JSON | None = strawberry.field(description="The last health check's result.")
    last_health_at: dt.datetime | None

    @classmethod
    def from_view(cls, view: TenantInstance, *, editor_url: str | None) -> N8nInstance:
        return cls(
            status=view.actual_state,
            version=view.version,
            editor_url=editor_url,
            health=cast(JSON, view.last_health),
            last_health_at=view.last_health_at,
        )


@strawberry.type(description="A workflow in your tenant's n8n.")
class Workflow:
    id: strawberry.ID
    name: str
    active: bool
    updated_at: dt.datetime | None

    @classmethod
    def from_n8n(cls, workflow: dict[str, Any]) -> Workflow:
        updated = workflow.get("updatedAt")
        return cls(
            id=strawberry.ID(str(workflow["id"])),
            name=str(workflow["name"]),
            active=bool(workflow.get("active")),
            updated_at=dt.datetime.fromisoformat(updated) if isinstance(updated, str) else None,
        )


@strawberry.type(description="A workflow the import created (inactive unless activated).")
class ImportedWorkflowResult:
    index: int
    name: str
    id: strawberry.ID = strawberry.field(description="Its new id in your n8n.")
    source_id: str | None
    active: bool
    dropped: list[str] = strawberry.field(description="Bundle fields n8n's API cannot store.")
    activation_error: str | None

    @classmethod
    def from_imported(cls, w: ImportedWorkflow) -> ImportedWorkflowResult:
        return cls(
            index=w.index,
            name=w.name,
            id=strawberry.ID(w.id),
            source_id=w.source_id,
            active=w.active,
            dropped=list(w.dropped),
            activation_error=w.activation_error,
        )


@strawberry.type(description="Why a workflow (index null: the bundle) was not imported.")
class WorkflowImportProblem:
    index: int | None
    name: str | None
    path: str
    message: str

    @classmethod
    def from_problem(cls, p: WorkflowProblem) -> WorkflowImportProblem:
        return cls(index=p.index, name=p.name, path=p.path, message=p.message)


@strawberry.type
class WorkflowImportReport:
    ok: bool
    imported: list[ImportedWorkflowResult]
    problems: list[WorkflowImportProblem]

    @classmethod
    def from_report(cls, report: ImportReport) -> WorkflowImportReport:
        return cls(
            ok=report.ok,
            imported=[ImportedWorkflowResult.from_imported(w) for w in report.imported],
            problems=[WorkflowImportProblem.from_problem(p) for p in report.problems],
        )


@strawberry.type(
    description="The workflows exported when a tenant's instance was deprovisioned, kept for "
    "a limited time (ZIXLY_FINAL_EXPORT_RETENTION_DAYS)."
)
class FinalExport:
    id: strawberry.ID
    created_at: dt.datetime
    expires_at: dt.datetime = strawberry.field(description="When it is deleted.")
    bundle: JSON = strawberry.field(
        description="The bundle; its `workflows` array is what n8n imports."
    )

    @classmethod
    def from_export(cls, export: KeptExport) -> FinalExport:
        return cls(
            id=strawberry.ID(str(export.id)),
            created_at=export.created_at,
            expires_at=export.expires_at,
            bundle=cast(JSON, export.bundle),
        )
